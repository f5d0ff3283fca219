"""Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM (what Slurm, Kubernetes and `kill`
send) stop both stages the same way: one line saying what was kept and how to resume, exit 130 or 143."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import zarr

from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import DONE, PENDING
from conftest import REPO, run_cli, tiny_extract_args


def _start(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "cli.py"), *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (
                                os.environ.get("PYTHONPATH"), str(REPO))))})  # spawned workers import clipcache


def _wait_for(process: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            return
        time.sleep(0.01)
    raise AssertionError(f"{what} before the signal: {process.communicate()}")


def _finished_epochs(out: Path) -> int:
    metrics = out / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def _train(store: Path, out: Path, epochs: int, *extra: str) -> list[str | Path]:
    return ["train-head", store, "--head", "linear", "--out", out, "--epochs", str(epochs), "--min-steps", "0",
            "--device", "cpu", "--quiet", *extra]


def _interrupted_training(store: Path, out: Path, sig: signal.Signals, group: bool) -> tuple[int, str]:
    process = _start(*_train(store, out, 10000))
    _wait_for(process, lambda: _finished_epochs(out) >= 1, "training ended")
    (os.killpg if group else os.kill)(process.pid, sig)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def test_ctrl_c_on_train_head_says_what_was_kept_and_resumes(appearance_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stderr = _interrupted_training(appearance_store, out, signal.SIGINT, group=True)
    kept = _finished_epochs(out)
    assert code == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (f"clipcache: interrupted; {out}: {kept} finished epoch"
                                               f"{'s' if kept != 1 else ''} kept; rerun the same command with "
                                               "--resume to continue")
    resumed = run_cli(*_train(appearance_store, out, kept + 1, "--resume"))
    assert resumed.code == 0 and f"{kept + 1} epochs" in resumed.stdout, resumed
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()][-1] == kept + 1


def test_sigterm_on_train_head_is_ctrl_c_with_exit_143(appearance_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stderr = _interrupted_training(appearance_store, out, signal.SIGTERM, group=False)  # Kubernetes: PID 1
    assert code == 143 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"clipcache: terminated; {out}: ")
    assert stderr.strip().endswith("rerun the same command with --resume to continue")


def test_sigterm_on_extract_keeps_finished_groups_and_resumes(demo_videos: Path, tmp_path: Path) -> None:
    store = tmp_path / "terminated.zarr"
    args = tiny_extract_args(demo_videos, store, "--shard-videos", "2")
    process = _start(*args)
    _wait_for(process, lambda: store.exists() and (zarr.open_group(str(store), mode="r")["videos/status"][:]
                                                   != PENDING).any(), "extraction ended")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert (CacheReader(store).status == PENDING).any(), "the run finished before it could be terminated"
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines() == ["clipcache: terminated; finished shard groups are kept, rerun the same "
                                           "command to resume"]
    assert run_cli("verify", store).code == 0
    assert run_cli(*args).code == 0 and (CacheReader(store).status == DONE).all()
