"""Views read past the page cache (O_DIRECT: the aligned span around them, then copied into place), as the dataset
reads a store much larger than memory: the same bytes as a cached read, one read for views back to back, damage
named per video."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipcache.cache.reader import CacheReader, StoreDamageError, ViewReader
from conftest import synthetic_store


def _every_view(reader: ViewReader) -> np.ndarray:
    array = reader.array
    out = np.empty((array.shape[0], array.shape[1], *reader.chunk), array.dtype)
    for video in range(array.shape[0]):
        for view in range(array.shape[1]):
            reader.read(video, view, out[video, view])
    return out


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_uncached_reads_give_the_cached_bytes(tmp_path: Path, dtype: str) -> None:
    store = CacheReader(synthetic_store(tmp_path / "s.zarr", num_videos=20, dtype=dtype))
    names = ["tokens/1", "tokens/2"] + (["tokens/1_scale"] if dtype == "int8" else [])
    for name in names:
        uncached = ViewReader(store.array(name), uncached=True)
        np.testing.assert_array_equal(_every_view(uncached), _every_view(ViewReader(store.array(name))))
        np.testing.assert_array_equal(_every_view(uncached), store.array(name)[:])  # and zarr's
        assert uncached.uncached  # this file system takes direct reads: they were not read through the cache


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
