"""Training runs as real processes, for fault tests: start `clipcache train-head`, wait for an epoch, kill it,
and compare two runs bit for bit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file

from clipcache.pipeline.train.checkpoint import BEST, LAST, METRICS
from conftest import HANG_S, REPO

SHORT = dict(epochs=6, min_steps=90, device="cpu", quiet=True)  # the defaults otherwise; short for speed


def command(store: Path, out: Path, head: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), "train-head", str(store), "--head", head, "--out", str(out),
            "--epochs", str(SHORT["epochs"]), "--min-steps", str(SHORT["min_steps"]), "--device", "cpu", "--quiet",
            *extra]


def start(command: list[str], preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            preexec_fn=preexec)


def epochs_written(path: Path) -> int:
    """Lines of a run's metrics.jsonl: its finished epochs (0 before the first)."""
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def when(process: subprocess.Popen, metrics: Path, lines: int) -> None:
    """Wait until the run's metrics hold `lines` finished epochs (the process still running), however long a
    busy machine makes that take; only a run stuck for `HANG_S` fails."""
    deadline = time.monotonic() + HANG_S
    while epochs_written(metrics) < lines:
        assert process.poll() is None, process.communicate()
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the run wrote no epoch {lines} in {HANG_S} s: hung ({process.communicate()})")
        time.sleep(0.005)


def kill_after(command: list[str], metrics: Path, lines: int) -> None:
    process = start(command)
    when(process, metrics, lines)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def weight_pairs(a: Path, b: Path) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(file and tensor name, a's tensor, b's) for the last and best weights of two runs holding the same names."""
    for name in (LAST, BEST):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys()
        for key in wa:
            yield f"{name} {key}", wa[key], wb[key]


def assert_same_run(a: Path, b: Path) -> None:
    """The same final weights (bit for bit) and the same metrics rows, timing aside."""
    for name, wa, wb in weight_pairs(a, b):
        assert torch.equal(wa, wb), name
    rows = [[{k: v for k, v in row.items() if k != "samples_per_s"} for row in metrics_rows(d)] for d in (a, b)]
    assert rows[0] == rows[1]


def assert_close_runs(a: Path, b: Path) -> None:
    """The same weights up to the float rounding of a different reduction order (several ranks), the same
    epochs, steps and validation top-1, and losses within that rounding."""
    for name, wa, wb in weight_pairs(a, b):
        torch.testing.assert_close(wa, wb, rtol=1e-4, atol=1e-5, msg=name)
    rows = [metrics_rows(d) for d in (a, b)]
    assert len(rows[0]) == len(rows[1])
    for ra, rb in zip(*rows):
        assert (ra["epoch"], ra["step"], ra["val_top1"]) == (rb["epoch"], rb["step"], rb["val_top1"])
        assert abs(ra["loss"] - rb["loss"]) <= 1e-4 * abs(ra["loss"]) + 1e-6


def metrics_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl of a run, one dict per finished epoch."""
    return [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
