"""Views read past the page cache (O_DIRECT: the aligned span around them, then copied into place), as the dataset
reads a store much larger than memory where a probe finds that faster: the same bytes as a cached read, one read
for views back to back, damage named per video."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clipcache.cache.reader import CacheReader, StoreDamageError, ViewReader
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.train import dataset as dataset_module
from clipcache.pipeline.train.dataset import CacheDataset
from conftest import synthetic_store


def _every_view(reader: ViewReader) -> np.ndarray:
    array = reader.array
    out = np.empty((array.shape[0], array.shape[1], *reader.chunk), array.dtype)
    for video in range(array.shape[0]):
        for view in range(array.shape[1]):
            reader.read(video, view, out[video, view])
    return out


def _all_checked(reader: ViewReader) -> bool:
    """Whether every chunk of every shard the reader read passed its checksum as it arrived (a chunk that failed it
    is read again through zarr, which would give the same values)."""
    return bool(reader._verified) and all(bits.all() for _, bits in reader._verified.values())


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_uncached_reads_give_the_cached_bytes(tmp_path: Path, dtype: str) -> None:
    store = CacheReader(synthetic_store(tmp_path / "s.zarr", num_videos=20, dtype=dtype))
    names = ["tokens/1", "tokens/2"] + (["tokens/1_scale"] if dtype == "int8" else [])
    for name in names:
        uncached = ViewReader(store.array(name), uncached=True)
        np.testing.assert_array_equal(_every_view(uncached), _every_view(ViewReader(store.array(name))))
        np.testing.assert_array_equal(_every_view(uncached), store.array(name)[:])  # and zarr's
        assert uncached.uncached  # this file system takes direct reads: they were not read through the cache
        assert _all_checked(uncached)  # and each arrived whole by them, not through zarr after a failed check


def test_views_back_to_back_are_one_uncached_read(tmp_path: Path) -> None:
    store = CacheReader(synthetic_store(tmp_path / "s.zarr", num_videos=8))
    reader = ViewReader(store.array("tokens/1"), uncached=True)
    places = {(video, view): reader.place(video, view) for video in range(8) for view in range(3)}
    first = places[0, 0][0]  # type: ignore[index]
    items = sorted((item for item, place in places.items() if place[0] == first),  # type: ignore[index]
                   key=lambda item: places[item][1])[1:]  # type: ignore[index]  # from an unaligned offset
    outs = [np.empty(reader.chunk, reader.array.dtype) for _ in items]
    assert reader._back_to_back([reader.place(*item) for item in items], outs)
    reader.read_run([(video, view, out) for (video, view), out in zip(items, outs)])
    for (video, view), out in zip(items, outs):
        np.testing.assert_array_equal(out, store.array("tokens/1")[video, view])
    checked = next(iter(reader._verified.values()))[1]
    assert checked.sum() == len(items)  # each passed its checksum as it arrived


def test_damage_read_past_the_cache_names_its_video(tmp_path: Path) -> None:
    path = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    key, offset, _ = ViewReader(CacheReader(path).array("tokens/1")).place(5, 1)
    data = bytearray((path / key).read_bytes())
    data[offset + 3] ^= 0x40
    (path / key).write_bytes(bytes(data))
    reader = ViewReader(CacheReader(path).array("tokens/1"), uncached=True)
    with pytest.raises(StoreDamageError, match=r"tokens/1 of video 5 \(.*\) is damaged \(checksum mismatch\)"):
        reader.read(5, 1, np.empty(reader.chunk, reader.array.dtype))
    reader.read(5, 0, np.empty(reader.chunk, reader.array.dtype))  # the other views of the shard still read


@pytest.mark.parametrize("dtype", ["float16", "int8"])
@pytest.mark.parametrize("train", [True, False])
def test_a_dataset_read_past_the_cache_gives_the_same_batches(tmp_path: Path, dtype: str, train: bool) -> None:
    reader = CacheReader(synthetic_store(tmp_path / "s.zarr", num_videos=12, dtype=dtype))
    request = FeatureRequest(layers=(1, 2), pooled=True)

    def dataset(uncached: bool) -> CacheDataset:
        return CacheDataset(reader, request, np.arange(12), 2, train=train, preload=False, seed=3, uncached=uncached)
    past, through = dataset(True), dataset(False)
    order = np.random.default_rng(0).permutation(len(past)).tolist()
    for epoch in range(2):
        past.set_epoch(epoch)
        through.set_epoch(epoch)
        a, b = past[order], through[order]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert past._view_reader("tokens/1").uncached and not through._view_reader("tokens/1").uncached
    checked = sum(int(bits.sum()) for _, bits in past._view_reader("tokens/1")._verified.values())
    assert checked == past._here()._held["tokens"].filled[:, :, 0].sum() > 0  # every view read arrived whole


def test_a_store_larger_than_memory_reads_the_way_its_probe_finds_faster(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any streamed store counts as larger than memory here (UNCACHED_SHARE 0): the dataset reads views of it both
    ways before its first batch and keeps the faster; its batches are those read through the cache."""
    reader = CacheReader(synthetic_store(tmp_path / "s.zarr", num_videos=12, dtype="int8"))
    request = FeatureRequest(layers=(1, 2))
    small = CacheDataset(reader, request, np.arange(12), 4, train=True, preload=False)
    assert small.probed is None and not small._view_reader("tokens/1").uncached  # fits: through the cache, unprobed
    monkeypatch.setattr(dataset_module, "UNCACHED_SHARE", 0)
    large = CacheDataset(reader, request, np.arange(12), 4, train=True, preload=False)
    assert large.probed is not None and large.probed.past > 0 and large.probed.through > 0
    assert large._view_reader("tokens/1").uncached == large.probed.read_past
    everything = list(range(len(large)))
    for key, value in large[everything].items():
        assert torch.equal(value, small[everything][key]), key


def test_a_direct_read_the_device_refuses_is_read_through_the_cache(tmp_path: Path) -> None:
    """An alignment the kernel refuses (here one byte, as a device needing more than a page would refuse a page):
    the read is done again through the page cache, and so are the reader's later reads."""
    store = CacheReader(synthetic_store(tmp_path / "s.zarr", num_videos=8))
    reader = ViewReader(store.array("tokens/1"), uncached=True)
    reader.ALIGN = 1
    out = np.empty(reader.chunk, reader.array.dtype)
    reader.read(5, 1, out)
    assert not reader.uncached
    np.testing.assert_array_equal(out, store.array("tokens/1")[5, 1])
