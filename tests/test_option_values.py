"""Option values no run can use are refused with one line before anything starts: non-finite numbers (`--lr
inf` trained to NaN weights and published them), seeds beyond what the generators accept (an OverflowError
traceback), and step or seed counts that would run for ever without a word."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli


@pytest.mark.parametrize("option, value, reason", [
    ("--lr", "inf", "--lr must be a finite number, got inf"),
    ("--weight-decay", "nan", "--weight-decay must be 0 or more, got nan"),
    ("--warmup-epochs", "inf", "--warmup-epochs must be a finite number, got inf"),
    ("--grad-clip", "-inf", "--grad-clip must be 0 or more, got -inf"),
    ("--label-smoothing", "nan", "--label-smoothing must be a finite number, got nan"),
    ("--seed", "100000000000000000000000", "--seed must be at most 4294967295"),
    ("--seed", "-1", "--seed must be 0 or more"),
    ("--min-steps", "10000000000000000000000", "--min-steps must be at most 1000000"),
    ("--epochs", "10000000000", "--epochs must be at most 10000"),
])
def test_train_head_refuses_unusable_numbers(tmp_path: Path, option: str, value: str, reason: str) -> None:
    out = tmp_path / "run"
    result = run_cli("train-head", tmp_path / "store.zarr", "--head", "linear", "--out", out, option, value)
    assert result.code == 2, result
    assert result.stderr.startswith(f"clipcache: error: {reason}"), result
    assert len(result.stderr.strip().splitlines()) == 1, result
    assert not out.exists()


def test_eval_refuses_a_seed_count_that_would_run_for_ever(tmp_path: Path) -> None:
    result = run_cli("eval", tmp_path / "store.zarr", "--probe", "linear", "--shots", "1", "--seeds", "1000000000")
    assert result.code == 2, result
    assert result.stderr.strip() == "clipcache: error: --seeds must be at most 1000, got 1000000000", result


def test_the_bounds_are_in_the_help() -> None:
    help_text = " ".join(run_cli("train-head", "--help").stdout.split())
    assert "at most 1,000,000" in help_text and "(0 to 4294967295)" in help_text
