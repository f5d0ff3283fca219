"""The cache format on its own: settings identity, int8 round trip, whole-group writes, refusals."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from clipcache import InputError
from clipcache.cache import quant
from clipcache.cache.info import format_info, store_info
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import DONE, FAILED, FORMAT, PENDING, StoreSettings
from clipcache.cache.text import CAPTIONS, publish
from clipcache.cache.writer import GroupResult, StoreMismatchError, StoreWriter, check_settings, create_store
from conftest import synthetic_store


def _settings(**overrides) -> StoreSettings:
    base = dict(
        model="tiny", pretrained="", model_config={"embed_dim": 8}, image_size=32, mean=(0.5,) * 3,
        std=(0.25,) * 3, interpolation="bicubic", resize_mode="shortest", frames=2, sampling="uniform",
        stride=1, clips=1, crops=1, augment=0, seed=0, layers=(1, 2), num_blocks=3, width=4, heads=1,
        embed_dim=8, tokens=5, grid=(2, 2), dtype="float16", compression="none", shard_videos=2,
        num_videos=5, classes=("a", "b"), inputs_digest="x",
    )
    base.update(overrides)
    return StoreSettings(**base)


def _group(settings: StoreSettings, group: int, rng: np.random.Generator) -> GroupResult:
    start, stop = settings.group_range(group)
    n, v, t = stop - start, settings.views, settings.frames
    return GroupResult(
        group=group, status=np.array([DONE] * (n - 1) + [FAILED], np.uint8), error=[""] * (n - 1) + ["bad"],
        note=[""] * n, frame_index=np.ones((n, v, t), np.int32), fps=np.full(n, 25, np.float32),
        num_frames=np.full(n, 10, np.int32), width=np.full(n, 64, np.int32), height=np.full(n, 48, np.int32),
        duration=np.full(n, 0.4, np.float32),
        tokens={layer: rng.standard_normal((n, v, t, settings.tokens, settings.width)).astype(np.float32)
                for layer in settings.layers},
        pooled=rng.standard_normal((n, v, t, settings.embed_dim)).astype(np.float32),
    )


def _make(tmp_path: Path, settings: StoreSettings) -> Path:
    path = tmp_path / "s.zarr"
    n = settings.num_videos
    create_store(path, settings, [f"v{i}.mp4" for i in range(n)], [i % 2 for i in range(n)], [""] * n,
                 {"proj": np.eye(4, dtype=np.float32)})
    return path


def test_quantize_round_trip_keeps_direction() -> None:
    x = np.random.default_rng(0).standard_normal((3, 7, 64)).astype(np.float32)
    x[0, 0] *= 100  # an outlier token must not crush the others' precision
    q, scale = quant.quantize(x)
    y = quant.dequantize(q, scale)
    cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
    assert q.dtype == np.int8 and scale.shape == (3, 7)
    assert cos.min() > 0.999


def test_quantize_zero_token_stays_zero() -> None:
    q, scale = quant.quantize(np.zeros((2, 4), np.float32))
    assert not quant.dequantize(q, scale).any()


def test_new_store_reads_all_pending(tmp_path: Path) -> None:
    settings = _settings()
    reader = CacheReader(_make(tmp_path, settings))
    assert reader.attrs["format"] == FORMAT
    assert (reader.status == PENDING).all()
    assert list(reader.column("path")) == [f"v{i}.mp4" for i in range(5)]
    assert reader.settings == settings
    assert np.array_equal(reader.frozen()["proj"], np.eye(4))


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_group_write_round_trip(tmp_path: Path, dtype: str) -> None:
    settings = _settings(dtype=dtype)
    path = _make(tmp_path, settings)
    writer = StoreWriter(path, settings)
    assert writer.pending_groups() == [0, 1, 2]
    groups = {g: _group(settings, g, np.random.default_rng(g)) for g in (0, 2)}
    for result in groups.values():
        writer.write_group(result)
    assert writer.pending_groups() == [1]
    reader = CacheReader(path)
    assert list(reader.status) == [DONE, FAILED, PENDING, PENDING, FAILED]
    assert reader.column("error")[1] == "bad"
    expected = groups[0].tokens[2][0]
    got = reader.tokens(2, [0])[0].astype(np.float32)
    tol = 0.05 if dtype == "int8" else 2e-3
    assert np.abs(got - expected).max() < tol * np.abs(expected).max()
    assert reader.pooled([4]).shape == (1, 1, 2, 8)


def test_last_group_may_be_short(tmp_path: Path) -> None:
    settings = _settings()
    assert settings.group_range(2) == (4, 5)
    assert settings.num_groups == 3


def test_other_settings_are_refused(tmp_path: Path) -> None:
    settings = _settings()
    path = _make(tmp_path, settings)
    check_settings(path, settings)
    with pytest.raises(StoreMismatchError, match=r"frames: 2 -> 4.*--overwrite"):
        check_settings(path, replace(settings, frames=4))


def test_provenance_does_not_change_identity() -> None:
    assert _settings(extras={"created": "x"}).fingerprint() == _settings(extras={"created": "y"}).fingerprint()


def test_foreign_and_newer_stores_are_refused(tmp_path: Path) -> None:
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(ValueError, match="not a clipcache store"):
        CacheReader(tmp_path / "plain.zarr")
    group = zarr.open_group(str(tmp_path / "future.zarr"), mode="w")
    group.attrs["format"] = "clipcache/99"
    with pytest.raises(ValueError, match="newer than this clipcache reads"):
        CacheReader(tmp_path / "future.zarr")
    with pytest.raises(InputError, match="no such store"):
        CacheReader(tmp_path / "absent.zarr")


def test_concurrent_creation_keeps_first_store(tmp_path: Path) -> None:
    settings = _settings()
    path = _make(tmp_path, settings)
    StoreWriter(path, settings).write_group(_group(settings, 0, np.random.default_rng(0)))
    _make(tmp_path, settings)  # a second creator loses the rename and must not touch the store
    assert CacheReader(path).status[0] == DONE
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_info_lists_class_name_and_caption_entries_of_the_text_table_apart(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr")
    unit = np.eye(3, dtype=np.float32)
    publish(store, "ensemble-0123abcd", unit, {"templates": ["{}"]})
    publish(store, f"{CAPTIONS}-4567ef01", unit, {"sentences": ["a", "b", "c"]})
    info = store_info(store)
    assert info["text_templates"] == ["ensemble-0123abcd"] and info["text_captions"] == [f"{CAPTIONS}-4567ef01"]
    lines = format_info(info).splitlines()
    assert "text         ensemble-0123abcd" in lines and f"captions     {CAPTIONS}-4567ef01" in lines
