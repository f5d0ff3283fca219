"""Whether reading past the page cache is faster than reading through it, measured on this machine and store.

A dataset streams features more than UNCACHED_SHARE times the memory the page cache could use; its passes then
find few views cached, and what each miss costs decides the way to read. That depends on the disk, the file
system and the processor: on the 2-core Intel Xeon with a virtio disk, later passes past the cache read 0.97-1.48
of a sequential read of the files and through it 0.76-1.03 (README), but a disk that reads ahead better than it
serves direct reads would turn that round. So such a dataset measures both before its first batch, on views of
its own store, and keeps the faster.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from clipcache.cache.reader import ViewReader

PROBE_GROUPS = 16  # groups of views, each read one way, the ways taking turns: 64 views each way
PROBE_GROUP_VIEWS = 8  # two views per read thread: the queue a batch's reads keep


class ProbeResult(NamedTuple):
    """Bytes per second each way over the probe's views, and whether past the cache is the faster."""
    past: float
    through: float

    @property
    def read_past(self) -> bool:
        return self.past >= self.through

    def __str__(self) -> str:
        way = "past the page cache" if self.read_past else "through the page cache"
        if not self.past and not self.through:
            return f"{way} (too few views read straight from shard files to compare the ways)"
        return f"{way} (probed here: {self.past / 1e6:,.0f} MB/s past it, {self.through / 1e6:,.0f} MB/s through it)"


def probe(readers: Sequence[tuple[ViewReader, ViewReader]], videos: np.ndarray, views: int, threads: int,
          seed: int = 0) -> ProbeResult:
    """Read random (video, view) chunks of `readers` (each array's reader past the cache and through it), a group
    at a time on `threads` threads, the two ways in turn, and each view once, so that neither way finds what the
    other brought into the cache. Views not read straight from a shard file are left out; with too few to
    compare, past the cache (as the features' size says)."""
    rng = np.random.default_rng(seed)
    count = min(PROBE_GROUPS * PROBE_GROUP_VIEWS, len(videos) * views)
    picks = [(readers[i % len(readers)], int(videos[item // views]), int(item % views))
             for i, item in enumerate(rng.choice(len(videos) * views, size=count, replace=False))]
    # each reader's shard indexes are read here, not while a way is timed
    picks = [pick for pick in picks if all(reader.place(pick[1], pick[2]) is not None for reader in pick[0])]
    seconds, done = [0.0, 0.0], [0, 0]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(abs, range(threads)))  # the threads started before anything is timed
        for group in range(PROBE_GROUPS):
            way = group % 2  # 0: past the cache, 1: through it
            jobs = [(pair[way], video, view, np.empty(pair[way].chunk, pair[way].array.dtype))
                    for pair, video, view in picks[group * PROBE_GROUP_VIEWS:(group + 1) * PROBE_GROUP_VIEWS]]
            began = time.perf_counter()
            list(pool.map(lambda job: job[0].read(*job[1:]), jobs))
            seconds[way] += time.perf_counter() - began
            done[way] += sum(job[3].nbytes for job in jobs)
    if not all(done):
        return ProbeResult(past=0.0, through=0.0)
    return ProbeResult(past=done[0] / seconds[0], through=done[1] / seconds[1])
