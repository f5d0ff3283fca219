"""The few helpers both stages share: where a model runs, in which precision, on how many threads and in how many
processes."""
from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager

import torch
from tqdm import tqdm

from clipcache import InputError


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; otherwise cpu, cuda or cuda:N, checked against this machine."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device}: expected auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    return resolved


def launched() -> bool:
    """Whether this process is one of several ranks started by torchrun (or another launcher that sets
    WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous address)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (the encoder's and the heads' matmuls); on CPU a no-op, where fp32 is
    faster and is the exact reference."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def note(line: str | None, quiet: bool = False) -> None:
    """One line on stderr for the user (a fallback, videos left out), unless quiet; progress bars stay
    intact."""
    if line and not quiet:
        tqdm.write(line, file=sys.stderr)



def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def compute_threads(requested: int | None) -> int:
    """Torch intra-op threads for stage two. Torch's default (one per core) spin-waits at every operation's
    barrier for cores that something else holds (the dataset's read threads, decode workers, another job): with
    one competing busy process on 2 cores a text head's epoch ran 30-80x slower (issue 20), and in
    `benchmarks/threads.py` the text and attnpool steps on 2 threads fell to 0.4-0.5 of their idle speed where
    1 thread kept 0.97-1.06 (2 threads were 1.1-2.0x faster than 1 on the idle machine). So: `requested` when
    given (an OMP_NUM_THREADS the user set counts as one); else half the usable cores, the rest left to the
    read threads and to other processes so that a barrier seldom waits for a core, fewer when the load average
    says other processes already keep more than half busy, shared among the ranks torchrun started here."""
    if requested is not None:
        if requested < 1:
            raise InputError(f"--threads must be at least 1, got {requested}")
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = _usable_cores()
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    ranks = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return max(1, min(cores // 2, cores - busy) // ranks)


def use_compute_threads(requested: int | None) -> int:
    """Set torch's intra-op threads for this process by `compute_threads` and return how many."""
    threads = compute_threads(requested)
    torch.set_num_threads(threads)
    return threads
