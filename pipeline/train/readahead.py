"""Batches announced to the kernel before they are read.

A shuffled pass reads one (video, view) chunk after another at random places in the shard files; read one
at a time they come from the disk at a fraction of its sequential speed. Announced a few batches ahead
(posix_fadvise WILLNEED), they are fetched many at once while the loop works on earlier batches, which
on the benchmark machine read as fast as the sequential read of the whole files (README, "Reading the
cache"). The order stays the sampler's, so the shuffle stays uniform and a resumed run reads what the
first one would have: grouping batches by shard file would have served the disk too, but it makes a
class-sorted store's batches hold few classes.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence

from torch.utils.data import Sampler

DEPTH = 2  # batches announced ahead of the one being read


class Readahead(Sampler[list[int]]):
    """The batches of `batches` in their order; each is passed to `will_need` `depth` batches before it is
    yielded (the first ones all at once)."""

    def __init__(self, batches: Sampler[list[int]], will_need: Callable[[Sequence[int]], None],
                 depth: int = DEPTH) -> None:
        self.batches, self.will_need, self.depth = batches, will_need, depth

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        coming: deque[list[int]] = deque()
        for batch in self.batches:
            self.will_need(batch)
            coming.append(batch)
            if len(coming) > self.depth:
                yield coming.popleft()
        yield from coming
