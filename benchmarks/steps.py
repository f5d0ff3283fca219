"""Training steps timed one way for every benchmark: forward, cross-entropy, backward and an AdamW step
(fused where torch has it, as for every contender), bf16 autocast on GPU, synchronised around the clock,
and contenders interleaved round by round so that load from other processes falls on all of them alike.
On a CPU the process's CPU time is kept next to the wall clock: on a shared machine it leaves out the
time the process waited for a core (it still counts the time threads spin at their barriers).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import nn

from clipcache.pipeline.common import autocast


class Timing(NamedTuple):
    wall: float  # seconds
    cpu: float  # CPU seconds of this process, all threads


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[Any], object], device: torch.device, inputs: Callable[[], Any] = lambda: None
          ) -> Callable[[], Timing]:
    """A function that runs `work(inputs())` and returns its time; preparing the inputs (e.g. fresh copies
    for a module that writes into them) is not timed."""

    def run() -> Timing:
        given = inputs()
        _synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        work(given)
        _synchronize(device)
        return Timing(time.perf_counter() - wall, time.process_time() - cpu)

    return run


def training_step(forward: Callable[[Any], torch.Tensor], params: Iterable[nn.Parameter], labels: torch.Tensor,
                  device: torch.device, inputs: Callable[[], Any] = lambda: None) -> Callable[[], Timing]:
    """`timed` training step on the logits `forward(inputs())`."""
    optimizer = torch.optim.AdamW(list(params), lr=1e-4, weight_decay=0.05, fused=device.type in ("cpu", "cuda"))

    def step(given: Any) -> None:
        with autocast(device):
            loss = nn.functional.cross_entropy(forward(given).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed(step, device, inputs)


def interleaved(steps: dict[str, Callable[[], Timing]], repeats: int) -> dict[str, Timing]:
    """Median times of each step over `repeats` rounds that run every step once, after a warm-up round."""
    for step in steps.values():
        step()
    times: dict[str, list[Timing]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(step())
    return {name: Timing(statistics.median(t.wall for t in runs), statistics.median(t.cpu for t in runs))
            for name, runs in times.items()}


def compared(ours: Timing, reference: Timing, device: torch.device) -> str:
    """'ours X ms, reference Y ms, ratio Z', with the CPU-time ratio on a CPU."""
    line = (f"ours {ours.wall * 1e3:.0f} ms, reference {reference.wall * 1e3:.0f} ms, "
            f"ratio {reference.wall / ours.wall:.2f}")
    if device.type == "cpu":
        line += (f" (CPU time: ours {ours.cpu * 1e3:.0f} ms, reference {reference.cpu * 1e3:.0f} ms, "
                 f"ratio {reference.cpu / ours.cpu:.2f})")
    return line


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
