"""Checksums of views read straight from shard files: every chunk is checked the first time a process's view reader
reads it and again whenever its file changes (replaced, as a repair does, or written in place); a file that did
not change is not hashed again, which is also the limit: bytes changed in place with the file's size and
modification time set back are not found by a reader that checked them before, only by a fresh one. The dataset
reads large views through such a reader on every pass; small ones it keeps once read and checked
(pipeline/train/dataset.py HELD_SHARE), so what changes in their files later does not reach it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from clipcache.cache.reader import CacheReader, StoreDamageError, ViewReader
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.train.dataset import CacheDataset
from conftest import SYNTHETIC, synthetic_store

VIDEOS = 8
DAMAGED = r"tokens/1 of video 5 \(.*\) is damaged \(checksum mismatch\)"


def _reader(store: Path) -> ViewReader:
    return ViewReader(CacheReader(store).array("tokens/1"))


def _read(reader: ViewReader, videos: range | list[int] = range(VIDEOS)) -> np.ndarray:
    """Every view of `videos`, each read straight from its shard file as the dataset reads a large view."""
    out = np.empty((len(videos), reader.array.shape[1], *reader.chunk), reader.array.dtype)
    for i, video in enumerate(videos):
        for view in range(reader.array.shape[1]):
            reader.read(video, view, out[i, view])
    return out


def _flipped(store: Path) -> tuple[Path, bytes]:
    """The shard file holding view 1 of video 5 in tokens/1, and its bytes with one byte of that view flipped."""
    key, offset, _ = ViewReader(CacheReader(store).array("tokens/1")).place(5, 1)
    data = bytearray((store / key).read_bytes())
    data[offset + 3] ^= 0x40
    return store / key, bytes(data)


@pytest.mark.parametrize("how", ["replaced", "written in place"])
def test_a_file_changed_between_passes_is_checked_again_and_its_damage_named(tmp_path: Path, how: str) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=VIDEOS)
    reader = _reader(store)
    first = _read(reader)  # every chunk checked once
    file, damaged = _flipped(store)
    before = os.stat(file)
    if how == "replaced":  # a new file under the old name, as a repair writes it
        (file.parent / "new").write_bytes(damaged)
        os.replace(file.parent / "new", file)
    else:
        with file.open("r+b") as handle:
            handle.write(damaged)
    after = os.stat(file)
    assert (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)
    with pytest.raises(StoreDamageError, match=DAMAGED):
        _read(reader)
    others = [video for video in range(VIDEOS) if video != 5]
    np.testing.assert_array_equal(_read(reader, others), first[others])


def test_an_unchanged_file_is_not_hashed_again_which_misses_bytes_flipped_with_its_time_set_back(
        tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=VIDEOS)
    reader = _reader(store)
    first = _read(reader)
    file, damaged = _flipped(store)
    before = os.stat(file)
    with file.open("r+b") as handle:  # the same size, and the modification time set back below
        handle.write(damaged)
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = _read(reader)  # read without its checksum: the flipped byte arrives
    assert not np.array_equal(again[5, 1], first[5, 1])
    again[5, 1] = first[5, 1]
    np.testing.assert_array_equal(again, first)
    with pytest.raises(StoreDamageError, match=DAMAGED):  # a fresh reader checks every chunk once
        _read(_reader(store))


def test_the_dataset_keeps_small_views_once_read_and_checked(tmp_path: Path) -> None:
    """A store of small views (these synthetic ones are 320 bytes): the dataset's first pass reads and checks each,
    later passes use what it kept, whatever happens to the files meanwhile; a new dataset reads them again."""
    store = synthetic_store(tmp_path / "s.zarr", num_videos=VIDEOS)

    def dataset() -> CacheDataset:
        return CacheDataset(CacheReader(store), FeatureRequest(layers=(1, 2)), np.arange(VIDEOS),
                            SYNTHETIC["frames"], train=False, preload=False)
    data = dataset()
    everything = list(range(len(data)))
    first = data[everything]
    file, damaged = _flipped(store)
    with file.open("r+b") as handle:
        handle.write(damaged)
    torch.testing.assert_close(data[everything]["tokens"], first["tokens"], rtol=0, atol=0)
    with pytest.raises(StoreDamageError, match=DAMAGED):
        dataset()[everything]
