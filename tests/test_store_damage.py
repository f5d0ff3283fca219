"""Damage on disk is found, never read as zeros or trained on: deleted chunks, flipped and cut bytes, and
`clipcache verify` naming each damaged video and array."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from clipcache.cache.reader import CacheReader, StoreDamageError, ViewReader, read_chunk
from clipcache.cache.store import open_root
from conftest import feature_code, run_cli, synthetic_store


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 videos in groups of 4; the last group is still pending."""
    return synthetic_store(tmp_path_factory.mktemp("intact") / "s.zarr")


@pytest.fixture
def store(intact: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "s.zarr"
    shutil.copytree(intact, copy)
    return copy


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _verify(store: Path) -> tuple[int, dict]:
    result = run_cli("verify", store, "--json")
    return result.code, json.loads(result.stdout)


def test_an_intact_store_verifies(store: Path) -> None:
    result = run_cli("verify", store)
    assert result.code == 0 and "intact" in result.stdout and "every chunk checksummed" in result.stdout, result


def test_a_deleted_token_shard_is_an_error_not_zeros(store: Path) -> None:
    (store / "tokens/2/c/1/0/0/0/0").unlink()  # group 1: videos 4-7
    reader = CacheReader(store)
    assert reader.tokens(2, [0]).shape[0] == 1  # other groups still read
    with pytest.raises(StoreDamageError, match=r"tokens/2 of video 4 \(train/4.mp4\) and 3 more videos is damaged "
                                               r"\(chunk file missing\)"):
        reader.tokens(2, [5])
    code, report = _verify(store)
    assert code == 1 and [(d["array"], d["videos"], d["reason"]) for d in report["damage"]] == [
        ("tokens/2", [4, 5, 6, 7], "chunk file missing")]


def test_flipped_bytes_in_one_video_name_that_video_only(store: Path) -> None:
    shard = store / "tokens/1/c/0/0/0/0/0"
    array = open_root(store)["tokens/1"]
    entries = array.shards[0] * array.shards[1]  # one inner chunk per (video, view), indexed in C order at the end
    index = np.frombuffer(shard.read_bytes()[-(entries * 16 + 4):-4], dtype="<u8").reshape(entries, 2)
    # inside video 1's second view; zarr lays inner chunks out in Morton order, so the index says where
    _flip(shard, int(index[1 * array.shards[1] + 1, 0]) + 7)
    reader = CacheReader(store)
    np.testing.assert_array_equal(reader.tokens(1, [0, 2])[:, 0, 0, 0, 0], [feature_code(0, 0, 0),
                                                                            feature_code(2, 0, 0)])
    with pytest.raises(StoreDamageError, match=r"tokens/1 of video 1 \(train/1.mp4\) is damaged \(checksum mismatch\)"):
        reader.tokens(1, [1])
    with pytest.raises(StoreDamageError, match="video 1 "):  # the read stage two's dataset makes per video and view
        read_chunk(array, (1, 1, slice(0, 4)), np.empty((4, 5, 8), np.float16))
    out = np.empty((4, 5, 8), np.float16)
    views = ViewReader(array)  # the dataset's direct read of a view from its shard file
    for video, view in ((1, 0), (1, 2), (2, 0)):  # a view reads only its own bytes: the others stay readable
        read_chunk(array, (video, view, slice(0, 4)), out)
        assert out[0, 0, 0] == feature_code(video, view, 0)
        assert views.read(video, view, np.empty((4, 5, 8), np.float16))[0, 0, 0] == feature_code(video, view, 0)
    with pytest.raises(StoreDamageError, match=r"tokens/1 of video 1 \(train/1.mp4\) is damaged \(checksum"):
        views.read(1, 1, np.empty((4, 5, 8), np.float16))
    code, report = _verify(store)
    assert code == 1 and [(d["array"], d["videos"]) for d in report["damage"]] == [("tokens/1", [1])]
    assert report["damage"][0]["paths"] == ["train/1.mp4"]


def test_a_deleted_pooled_chunk_stops_the_probe(store: Path) -> None:
    (store / "pooled/c/0/0/0/0").unlink()
    result = run_cli("eval", store, "--probe", "linear", "--quiet")
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert "pooled of video 0 (train/0.mp4) and 3 more videos is damaged (chunk file missing)" in result.stderr


def test_a_deleted_label_chunk_does_not_relabel_videos(store: Path) -> None:
    (store / "videos/label/c/1").unlink()
    for command in (["info", store], ["eval", store, "--probe", "linear"]):
        result = run_cli(*command)
        assert result.code == 2 and result.stderr.count("\n") == 1, result
        assert "videos/label of video 4 (train/4.mp4) and 3 more videos is damaged" in result.stderr


def test_a_truncated_status_chunk_is_one_line_everywhere(store: Path) -> None:
    status = store / "videos/status/c/0"
    status.write_bytes(status.read_bytes()[:5])
    result = run_cli("info", store)
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert "videos/status of video 0 (train/0.mp4) and 3 more videos is damaged (checksum mismatch)" in result.stderr
    code, report = _verify(store)
    assert code == 1 and [(d["array"], d["videos"]) for d in report["damage"]] == [("videos/status", [0, 1, 2, 3])]


def test_pending_groups_have_no_chunks_and_that_is_no_damage(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "p.zarr", status={i: 0 for i in range(8, 12)})
    shutil.rmtree(store / "pooled/c/2")  # nothing of the pending group may be used, whatever is on disk
    assert _verify(store)[0] == 0
    assert CacheReader(store).pooled(slice(None)).shape[0] == 12



def _edit_attrs(store: Path, **changes: object) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"].update(changes)
    (store / "zarr.json").write_text(json.dumps(meta))


def test_damaged_or_foreign_attributes_are_one_line(store: Path, tmp_path: Path) -> None:
    _edit_attrs(store, classes=["a"])  # labels go up to 2
    result = run_cli("info", store)
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert "labels go up to 2 but the store names only 1 classes" in result.stderr
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").attrs.update({"format": "clipcache/1", "model": "x"})
    for command in ("info", "verify"):
        result = run_cli(command, foreign)
        assert result.code == 2 and result.stderr.count("\n") == 1, result
        assert "not a complete clipcache store (attributes missing: pretrained, model_config," in result.stderr


def test_training_on_a_deleted_token_chunk_stops_with_one_line(store: Path, tmp_path: Path) -> None:
    (store / "tokens/2/c/0/0/0/0/0").unlink()
    result = run_cli("train-head", store, "--head", "attnpool", "--out", tmp_path / "run", "--epochs", "1",
                     "--device", "cpu", "--no-preload", "--quiet")
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert "tokens/2 of video 0 (train/0.mp4) and 3 more videos is damaged (chunk file missing)" in result.stderr


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_direct_view_reads_equal_zarrs(tmp_path: Path, dtype: str) -> None:
    store = synthetic_store(tmp_path / "s.zarr", dtype=dtype)
    root = open_root(store)
    names = [name for name in ("tokens/1", "tokens/1_scale") if name in root]
    for name in names:
        array = root[name]
        views = ViewReader(array)
        assert views.grid is not None  # the direct path, not the fallback
        for video in range(array.shape[0]):
            for view in range(array.shape[1]):
                out = np.empty(array.chunks[2:], array.dtype)
                np.testing.assert_array_equal(views.read(video, view, out), array[video, view])


@pytest.mark.parametrize("num_videos", [8, 13, 20])
def test_a_root_whose_video_count_disagrees_with_its_arrays_is_one_line(store: Path, num_videos: int) -> None:
    _edit_attrs(store, num_videos=num_videos)  # the arrays hold 12
    result = run_cli("verify", store)
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert f"videos/path holds 12 videos, the store's attributes say {num_videos} (num_videos)" in result.stderr
