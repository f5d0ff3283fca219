"""Views read straight from shard files: in file order, back-to-back views as one read, the same batches as zarr
gives, damage named per video, and no shard file held open between reads (a store of Kinetics' size has tens of
thousands: a descriptor each would pass the process's limit)."""
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


class _CountedReads:
    """os.preadv as it is, counted: how many system calls a batch took."""

    def __init__(self) -> None:
        self.calls, self._preadv = 0, os.preadv

    def __call__(self, fd: int, buffers: list, offset: int) -> int:
        self.calls += 1
        return self._preadv(fd, buffers, offset)


@pytest.mark.parametrize("frames", [4, 2])
def test_back_to_back_views_are_one_read_and_the_batch_equals_zarrs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: int) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    reader = CacheReader(store)
    data = CacheDataset(reader, REQUEST, np.arange(8), frames, train=False, preload=False)
    items = np.random.default_rng(0).permutation(len(data))  # the batch's order is not the files' order
    reads = _CountedReads()
    monkeypatch.setattr(os, "preadv", reads)
    batch = data[items.tolist()]
    views_read = len(items) * len(REQUEST.layers)
    assert 0 < reads.calls < views_read  # every test view of a shard lies back to back: fewer reads than views
    chosen = [1, 3] if frames == 2 else list(range(4))
    for b, item in enumerate(items):
        video, view = divmod(int(item), TEST_VIEWS)
        for m, layer in enumerate(REQUEST.layers):
            expected = reader.tokens(layer, [video])[0, view][chosen]
            np.testing.assert_array_equal(batch["tokens"][b, m].numpy(), expected)
    assert batch["video"].tolist() == (items // TEST_VIEWS).tolist()


def test_a_damaged_view_inside_one_read_names_its_video_and_the_others_read(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    key, offset, _ = ViewReader(CacheReader(store).array("tokens/1")).place(5, 1)
    file = store / key
    data = bytearray(file.read_bytes())
    data[offset + 3] ^= 0x40
    file.write_bytes(bytes(data))
    views = {(video, view): i for i, (video, view) in enumerate(
        (video, view) for video in range(8) for view in range(TEST_VIEWS))}
    fresh = CacheDataset(CacheReader(store), REQUEST, np.arange(8), 4, train=False, preload=False)
    with pytest.raises(StoreDamageError, match=r"tokens/1 of video 5 \(.*\) is damaged \(checksum mismatch\)"):
        fresh[[views[video, view] for video in (4, 5, 6, 7) for view in range(TEST_VIEWS)]]
    intact = fresh[[views[video, view] for video in (4, 6, 7) for view in range(TEST_VIEWS)]]
    torch.testing.assert_close(intact["tokens"][:, 0, :, 0, 2], torch.ones(6, 4, dtype=torch.float16))


def _open_files_under(folder: Path) -> set[str]:
    """Files under `folder` this process has open (as /proc lists its descriptors)."""
    targets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used, closed since
            continue
    return {target for target in targets if target.startswith(f"{folder}/")}


def test_no_shard_file_stays_open_between_reads(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    data = CacheDataset(CacheReader(store), REQUEST, np.arange(8), 4, train=True, preload=False)
    batch = data[[0, 5]]  # videos of two shards, two arrays
    assert batch["tokens"].shape[0] == 2 and _open_files_under(store / "tokens") == set()
