"""Training on several processes: `torchrun --nproc-per-node N clipcache train-head ...`.

Every rank builds the same head from the same seed and draws the same global order of batches (seeded by
seed and pass, as in one process); each reads only its own contiguous slice of every global batch.
DistributedDataParallel averages the gradients over the ranks, and each rank's loss is weighted by its
share of the batch, so a step is the step one process makes on the whole batch (NCCL on GPUs, gloo on
CPU). Validation is computed by every rank on the whole validation set (the same weights give the same
numbers, so every rank takes the same best-epoch and early-stopping decisions); rank 0 alone writes the run
directory, and the state it saves holds every rank's random generator, so `--resume` stays exact.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from clipcache.pipeline.common import launched


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes files and prints."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, head: nn.Module) -> nn.Module:
        """The module the training step calls: the head itself in one process, else DDP around it (gradients
        averaged over the ranks during backward)."""
        if self.world == 1:
            return head
        # EVL's channels-last temporal conv returns its (C, 1, 3, 1) weight's gradient in other strides than the
        # weight's: DDP then copies those few KB each step and warns on every rank; the copy is all it costs
        warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(head, device_ids=ids)

    def share(self, items: int) -> float:
        """This rank's weight for a mean loss over its `items` samples so that DDP's average of gradients over
        ranks is the gradient of the mean over the whole global batch (slices may differ by one sample)."""
        (total,) = self.sum(items)
        return items * self.world / total

    def sum(self, *values: float) -> tuple[float, ...]:
        """`values` summed over the ranks (an epoch's loss and sample count)."""
        if self.world == 1:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return tuple(total.tolist())

    def gather_rng(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's CPU random state, in rank order (rank 0 saves them all)."""
        if self.world == 1:
            return [state]
        states: list[torch.Tensor | None] = [None] * self.world
        dist.all_gather_object(states, state)
        return [s for s in states if s is not None]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start(device: torch.device) -> Ranks:
    """This process's rank, joining the process group on first use; on GPUs each rank takes the GPU of its
    local rank."""
    if not launched():
        return Ranks(device=device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


class RankSlices(Sampler[list[int]]):
    """This rank's contiguous slice of each global batch of `batches` (every rank iterates the same global
    batches, so the slices partition them)."""

    def __init__(self, batches: Sampler[list[int]], rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            bounds = np.linspace(0, len(batch), self.world + 1).round().astype(int)
            yield batch[bounds[self.rank]:bounds[self.rank + 1]]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]
