"""Training steps timed one way for every benchmark: forward, cross-entropy, backward and an AdamW step
(fused where torch has it, as for every contender), bf16 autocast on GPU, synchronised around the clock,
and contenders interleaved round by round so that load from other processes falls on all of them alike.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from clipcache.pipeline.common import autocast


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[Any], object], device: torch.device, inputs: Callable[[], Any] = lambda: None
          ) -> Callable[[], float]:
    """A function that runs `work(inputs())` and returns its seconds; preparing the inputs (e.g. fresh copies
    for a module that writes into them) is not timed."""

    def run() -> float:
        given = inputs()
        _synchronize(device)
        began = time.perf_counter()
        work(given)
        _synchronize(device)
        return time.perf_counter() - began

    return run


def training_step(forward: Callable[[Any], torch.Tensor], params: Iterable[nn.Parameter], labels: torch.Tensor,
                  device: torch.device, inputs: Callable[[], Any] = lambda: None) -> Callable[[], float]:
    """`timed` training step on the logits `forward(inputs())`."""
    optimizer = torch.optim.AdamW(list(params), lr=1e-4, weight_decay=0.05, fused=device.type in ("cpu", "cuda"))

    def step(given: Any) -> None:
        with autocast(device):
            loss = nn.functional.cross_entropy(forward(given).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed(step, device, inputs)


def interleaved(steps: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds of each step over `repeats` rounds that run every step once, after a warm-up round."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(step())
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def machine(device: torch.device) -> str:
    """The device in words, with what else was running (load average) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"CPU {model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads{load}"
