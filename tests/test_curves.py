"""Training curves as TensorBoard event files beside metrics.jsonl (when tensorboard is installed), or one note."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli, synthetic_store

SHORT = ["--head", "linear", "--min-steps", "4", "--device", "cpu", "--quiet"]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _in_a_fresh_process(args: list[str], without_tensorboard: bool = False) -> tuple[int, str]:
    """(exit code, stderr) of a command run by a process of its own (its own event file), with this environment."""
    probe = ("import sys\n" + ("sys.modules['tensorboard'] = None\n" if without_tensorboard else "")
             + "from typer.testing import CliRunner\nfrom clipcache.cli import app\n"
             f"r = CliRunner().invoke(app, {args!r})\nprint(r.exit_code); sys.stdout.write(r.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done
    code, stderr = done.stdout.split("\n", 1)
    return int(code), stderr


def test_event_files_hold_the_metrics_rows_once_each_across_a_resume(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store, run_dir = synthetic_store(tmp_path / "s.zarr"), tmp_path / "run"
    assert run_cli("train-head", store, "--out", run_dir, "--epochs", "3", *SHORT).code == 0
    first = sorted(run_dir.glob("events.out.tfevents.*"))
    assert len(first) == 1
    watcher = EventAccumulator(str(run_dir))  # as TensorBoard follows a run while it trains
    watcher.Reload()
    assert len(watcher.Scalars("train/loss")) == 3
    code, stderr = _in_a_fresh_process(["train-head", str(store), "--out", str(run_dir), "--epochs", "5", "--resume",
                                        *SHORT])
    assert code == 0, stderr
    assert sorted(run_dir.glob("events.out.tfevents.*"))[:1] == first and len(list(run_dir.glob("events.*"))) == 2
    watcher.Reload()
    curves = EventAccumulator(str(run_dir))  # and as it reads a finished run
    curves.Reload()
    rows = _rows(run_dir)
    assert len(rows) == 5
    for reader in (watcher, curves):
        for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("val_top1", "val/top1"),
                         ("val_loss", "val/loss")):
            scalars = reader.Scalars(tag)
            assert [s.step for s in scalars] == [row["step"] for row in rows]
            assert [s.value for s in scalars] == pytest.approx([row[key] for row in rows], rel=1e-6)
        assert "val/top5" not in reader.Tags()["scalars"]  # null in every row (3 classes): no curve


def test_without_tensorboard_the_run_says_so_once_and_writes_metrics_alone(tmp_path: Path) -> None:
    store, run_dir = synthetic_store(tmp_path / "s.zarr"), tmp_path / "run"
    loud = [arg for arg in SHORT if arg != "--quiet"]
    code, stderr = _in_a_fresh_process(["train-head", str(store), "--out", str(run_dir), "--epochs", "3", *loud],
                                       without_tensorboard=True)
    assert code == 0 and stderr.count("tensorboard is not installed") == 1, stderr
    assert len(_rows(run_dir)) == 3 and not list(run_dir.glob("events.*"))
