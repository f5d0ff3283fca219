"""Batches of a cache dataset for training and evaluation, in the order a sampler gives.

In this process the next batch's reads are started before the current batch is handed out, so the read
threads go from one batch to the next without waiting for the caller and a training step overlaps the
reads of the batch after it, with no loader processes (on two cores those were slower: README,
benchmarks). DataLoader workers remain for those who ask for them.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

from clipcache.pipeline.train.dataset import Batch, CacheDataset, PendingBatch
from clipcache.pipeline.train.distributed import RankSlices


class Batches(Protocol):
    """What training and evaluation iterate: batches, and how many there are per pass."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


def batch_loader(dataset: CacheDataset, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None, drop_last: bool = False, workers: int = 0,
                 pin_memory: bool = False, rank: int = 0, world: int = 1) -> Batches:
    """Batches built by the dataset itself (one gather, or chunk reads straight into the batch), read one
    batch ahead in this process, or by `workers` DataLoader processes where features are streamed
    (preloaded GPU tensors cannot cross processes). With several ranks, this rank's slice of each global
    batch of `batch_size` (distributed.RankSlices)."""
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    batches: Sampler[list[int]] = BatchSampler(order, batch_size, drop_last)
    if world > 1:
        batches = RankSlices(batches, rank, world)
    pinnable = dataset.placement is None or dataset.placement.type == "cpu"
    if workers and dataset.placement is None:
        return DataLoader(dataset, batch_size=None, sampler=batches, num_workers=workers, pin_memory=pin_memory)
    return ReadAhead(dataset, batches, pin_memory and pinnable)


class ReadAhead:
    """The dataset's batches with the reads of the next one under way while the caller holds this one."""

    def __init__(self, dataset: CacheDataset, batches: Sampler[list[int]], pin_memory: bool) -> None:
        self.dataset, self.batches, self.pin_memory = dataset, batches, pin_memory

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]  # batch samplers have a length

    def __iter__(self) -> Iterator[Batch]:
        ahead: PendingBatch | None = None
        for items in self.batches:
            started = self.dataset.start(np.asarray(items, dtype=np.int64))
            if ahead is not None:
                yield self._ready(ahead)
            ahead = started
        if ahead is not None:
            yield self._ready(ahead)

    def _ready(self, pending: PendingBatch) -> Batch:
        batch = pending.result()
        return {key: value.pin_memory() for key, value in batch.items()} if self.pin_memory else batch
