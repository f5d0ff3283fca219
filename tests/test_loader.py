"""Batches read one ahead in this process: the same batches as reads in turn, failures where they belong."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clipcache.cache.reader import CacheReader, StoreDamageError
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loader import batch_loader
from conftest import feature_code, synthetic_store

REQUEST = FeatureRequest(pooled=True, layers=(1, 2))


def _dataset(store: Path, train: bool) -> CacheDataset:
    return CacheDataset(CacheReader(store), REQUEST, np.arange(8), 2, train=train, preload=False, seed=3)


@pytest.mark.parametrize("train", [False, True])
def test_the_next_batch_is_under_way_when_one_is_handed_out_and_batches_equal_reads_in_turn(
        tmp_path: Path, train: bool) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    data, in_turn = _dataset(store, train), _dataset(store, train)
    for dataset in (data, in_turn):
        dataset.set_epoch(4)
    generator = torch.Generator().manual_seed(0)
    batches = iter(batch_loader(data, 3, shuffle=train, generator=generator))
    first = next(batches)
    assert len(data._here().buffers._held["tokens"]) == 2  # the batch handed out, and the next one being read
    got = [first, *batches]
    order = list(torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(in_turn, generator=torch.Generator().manual_seed(0)) if train
        else range(len(in_turn)), 3, False))
    assert [len(batch["label"]) for batch in got] == [len(items) for items in order]
    for batch, items in zip(got, order):
        expected = in_turn[items]
        assert batch.keys() == expected.keys()
        for key in batch:
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    if not train:  # every test view of every video, in order, with the segment centres (frames 1 and 3)
        codes = torch.cat([batch["pooled"][:, :, 0] for batch in got]).numpy()
        views = len(in_turn) // 8
        np.testing.assert_array_equal(codes, [[feature_code(v, view, t) for t in (1, 3)]
                                              for v in range(8) for view in range(views)])


def test_a_damaged_batch_fails_when_it_is_taken_and_the_one_before_arrives_whole(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    intact = _dataset(store, train=True)[[0, 1, 2, 3]]
    (store / "tokens/2/c/1/0/0/0/0").unlink()  # videos 4-7 of block 2
    batches = iter(batch_loader(_dataset(store, train=True), 4))
    first = next(batches)  # the second batch, read meanwhile, fails: the first comes whole all the same
    for key in intact:
        torch.testing.assert_close(first[key], intact[key], rtol=0, atol=0)
    with pytest.raises(StoreDamageError, match=r"tokens/2 of video 4 \(.*\) and 3 more videos is damaged"):
        next(batches)
