"""Stage two's compute threads: chosen by one rule (common.compute_threads), set by --threads, never part of a run's
identity (a run resumes on other threads)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from clipcache import InputError
from clipcache.pipeline.common import compute_threads
from conftest import run_cli


@pytest.fixture
def no_omp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_the_rule(no_omp: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    assert compute_threads(3) == 3  # asked for: taken as asked
    assert 1 <= compute_threads(None) <= max(1, cores // 2)  # half the cores at most: the rest for others
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cores))  # ranks share the cores
    assert compute_threads(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's own setting is a request
    assert compute_threads(None) == 5
    with pytest.raises(InputError, match="--threads must be at least 1, got 0"):
        compute_threads(0)


def test_threads_set_the_training_and_are_not_part_of_the_run(appearance_store: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        out = tmp_path / "run"
        common = ["train-head", appearance_store, "--head", "text", "--out", out, "--min-steps", "0",
                  "--device", "cpu", "--quiet"]
        refused = run_cli(*common, "--epochs", "1", "--threads", "0")
        assert refused.code == 2 and "--threads must be at least 1" in refused.stderr, refused
        first = run_cli(*common, "--epochs", "1", "--threads", "2")
        assert first.code == 0, first
        assert torch.get_num_threads() == 2
        assert json.loads((out / "run.json").read_text())["config"]["threads"] == 2  # recorded, as run
        resumed = run_cli(*common, "--epochs", "2", "--threads", "1", "--resume")  # other threads: same run
        assert resumed.code == 0 and "2 epochs" in resumed.stdout, resumed
        assert torch.get_num_threads() == 1
        run = json.loads((out / "run.json").read_text())
        assert run["epochs_done"] == 2 and run["config"]["threads"] == 1
    finally:
        torch.set_num_threads(before)
