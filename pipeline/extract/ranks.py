"""Which part of the work this process owns: a torchrun rank, a `--shard i/n` job, or everything."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch.distributed as dist

from clipcache import InputError
from clipcache.pipeline.common import launched

T = TypeVar("T")


@dataclass(frozen=True)
class WorkSplit:
    rank: int
    world: int
    torchrun: bool  # ranks can wait for each other (gloo barrier); job-array shards cannot

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, group: int) -> bool:
        """Shard groups go round-robin, so every process writes whole shards and never shares one."""
        return group % self.world == self.rank

    def barrier(self) -> None:
        if self.torchrun:
            dist.barrier()

    def share(self, value: T) -> T:
        """Rank 0's `value` on every rank (a barrier too); the value itself without torchrun."""
        if not self.torchrun:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` with 0 <= i < n, as job arrays number their tasks."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def work_split(shard: str | None) -> WorkSplit:
    """torchrun's environment wins (gloo process group, for the barriers); else `--shard`; else all."""
    if launched():
        if shard:
            raise InputError("--shard cannot be combined with torchrun: the ranks already split the work")
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return WorkSplit(dist.get_rank(), dist.get_world_size(), torchrun=True)
    if shard:
        index, count = parse_shard(shard)
        return WorkSplit(index, count, torchrun=False)
    return WorkSplit(0, 1, torchrun=False)
