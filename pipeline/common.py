"""The few helpers both stages share: where a model runs, in which precision, and in how many processes."""
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
