"""Checksums of views read straight from shard files: every chunk is checked the first time a process's dataset
reads it and again whenever its file changes (replaced, as a repair does, or written in place); a file that did
not change is not hashed again, which is also the limit: bytes changed in place with the file's size and
modification time set back are not found by a dataset that checked them before, only by a fresh one."""
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

REQUEST = FeatureRequest(layers=(1, 2))
TEST_VIEWS = SYNTHETIC["clips"] * SYNTHETIC["crops"]
DAMAGED = r"tokens/1 of video 5 \(.*\) is damaged \(checksum mismatch\)"


def _dataset(store: Path) -> CacheDataset:
    return CacheDataset(CacheReader(store), REQUEST, np.arange(8), SYNTHETIC["frames"], train=False, preload=False)


def _flipped(store: Path) -> tuple[Path, bytes]:
    """The shard file holding view 1 of video 5 in tokens/1, and its bytes with one byte of that view flipped."""
    key, offset, _ = ViewReader(CacheReader(store).array("tokens/1")).place(5, 1)
    data = bytearray((store / key).read_bytes())
    data[offset + 3] ^= 0x40
    return store / key, bytes(data)


@pytest.mark.parametrize("how", ["replaced", "written in place"])
def test_a_file_changed_between_passes_is_checked_again_and_its_damage_named(tmp_path: Path, how: str) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    data = _dataset(store)
    everything = list(range(len(data)))
    first = data[everything]  # every chunk checked once
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
        data[everything]
    others = [item for item in everything if item // TEST_VIEWS != 5]
    torch.testing.assert_close(data[others]["tokens"], first["tokens"][others])


def test_an_unchanged_file_is_not_hashed_again_which_misses_bytes_flipped_with_its_time_set_back(
        tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    data = _dataset(store)
    everything = list(range(len(data)))
    first = data[everything]
    file, damaged = _flipped(store)
    before = os.stat(file)
    with file.open("r+b") as handle:  # the same size, and the modification time set back below
        handle.write(damaged)
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = data[everything]  # read without its checksum: the flipped byte arrives
    item = 5 * TEST_VIEWS + 1
    assert not torch.equal(again["tokens"][item, 0], first["tokens"][item, 0])
    torch.testing.assert_close(again["tokens"][:item], first["tokens"][:item])
    with pytest.raises(StoreDamageError, match=DAMAGED):  # a fresh dataset checks every chunk once
        _dataset(store)[everything]
