"""Without --epochs and --patience a run stops on convergence of validation: cycles of the recipe's epochs, another
while validation's mean over a cycle's last quarter beat the quarter before, at most 4 cycles. Real runs of the
linear head on the appearance store (one optimiser step per epoch with --min-steps 0, so they are cheap)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from clipcache.pipeline.train.checkpoint import METRICS, RUN_FILE
from conftest import REPO, run_cli
from training_runs import assert_same_run, epochs_written, kill_after, metrics_rows

# a constant learning rate low enough that validation top-1 only rises in the last quarter of the first cycle
# (epochs 14-16 of 20, measured) and is 1.0 from there on
SLOW = ("--min-steps", "0", "--lr", "1e-3", "--schedule", "constant", "--warmup-epochs", "0")


def _train(store: Path, out: Path, *extra: str) -> tuple[dict, str]:
    result = run_cli("train-head", store, "--head", "linear", "--out", out, "--device", "cpu", *extra)
    assert result.code == 0, result
    return json.loads((out / RUN_FILE).read_text()), result.stderr


def test_a_run_still_improving_goes_on_past_the_recipes_epochs_and_stops_once_converged(appearance_store: Path,
                                                                                       tmp_path: Path) -> None:
    run, stderr = _train(appearance_store, tmp_path / "slow", *SLOW)
    rows = metrics_rows(tmp_path / "slow")
    top1 = [row["val_top1"] for row in rows]
    assert sum(top1[15:20]) > sum(top1[10:15])  # still rising at the end of the recipe's 20 epochs
    assert run["config"]["cycle"] == 20 and run["config"]["epochs"] == 80  # the budget: 4 cycles
    assert run["epochs_done"] == len(rows) == 40 and run["stopped_early"] == 40
    assert run["stopping"]["rule"] == "converged" and run["best"]["epoch"] > 20  # the second cycle's weights kept
    assert min(row["val_loss"] for row in rows[20:]) < min(row["val_loss"] for row in rows[:20])
    assert "linear: batch 18, 1 steps per pass x 20 epochs = 20 steps per cycle, another cycle" in stderr
    assert f"{tmp_path / 'slow'}: converged at epoch 40 (cycle 2 of at most 4)" in stderr
    assert "epoch 21/40  step 21/40" in stderr  # the lines count to the end of the cycle under way


def test_a_converged_run_stops_after_one_cycle_and_says_so(appearance_store: Path, tmp_path: Path) -> None:
    run, stderr = _train(appearance_store, tmp_path / "fast", "--min-steps", "0")
    assert run["epochs_done"] == 20 and run["stopping"]["rule"] == "converged" and run["best"]["val_top1"] == 1.0
    line = [line for line in stderr.splitlines() if "converged at epoch" in line]
    assert line == [f"{tmp_path / 'fast'}: {run['stopping']['line']}"] and "of at most 4" in line[0]
    report = run_cli("eval", appearance_store, "--checkpoint", tmp_path / "fast", "--device", "cpu", "--json",
                     "--quiet")
    assert report.code == 0 and json.loads(report.stdout)["training"]["complete"] is True, report


def test_explicit_epochs_and_patience_keep_their_meaning(appearance_store: Path, tmp_path: Path) -> None:
    run, _ = _train(appearance_store, tmp_path / "given", *SLOW, "--epochs", "20", "--quiet")
    assert run["epochs_done"] == 20 and run["config"]["cycle"] is None and run["stopping"]["rule"] == "epochs"
    run, _ = _train(appearance_store, tmp_path / "patient", "--min-steps", "0", "--patience", "2", "--quiet")
    assert run["stopping"]["rule"] == "patience" and run["stopped_early"] < 20 and run["config"]["epochs"] == 20


def test_a_run_killed_in_its_second_cycle_resumes_to_the_same_decisions_and_weights(appearance_store: Path,
                                                                                   tmp_path: Path) -> None:
    whole, _ = _train(appearance_store, tmp_path / "whole", *SLOW, "--quiet")
    cut = tmp_path / "cut"
    command = [sys.executable, str(REPO / "cli.py"), "train-head", str(appearance_store), "--head", "linear",
               "--out", str(cut), "--device", "cpu", "--quiet", *SLOW]
    kill_after(command, cut / METRICS, 22)
    assert 22 <= epochs_written(cut / METRICS) < 40
    resumed, _ = _train(appearance_store, cut, *SLOW, "--quiet", "--resume")
    assert resumed["stopping"] == whole["stopping"] and resumed["best"]["epoch"] == whole["best"]["epoch"]
    assert_same_run(tmp_path / "whole", cut)
