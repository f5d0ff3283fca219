"""A run whose loss or weights stop being numbers stops with one line naming the epoch and step, publishes
nothing of that epoch (no best weights from NaN), and its files stay strict JSON."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clipcache.pipeline.train.checkpoint import BEST, LAST, METRICS, RUN_FILE, write_metrics
from conftest import run_cli


def _strict(text: str) -> object:
    """JSON as any strict reader takes it: NaN and Infinity are not JSON."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in a JSON file")
    return json.loads(text, parse_constant=refuse)


def test_a_run_that_diverges_stops_and_publishes_nothing(appearance_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("train-head", appearance_store, "--head", "linear", "--out", out, "--lr", "1e30",
                     "--epochs", "2", "--min-steps", "10", "--device", "cpu", "--quiet")
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result
    assert re.search(r"became (nan|inf|-inf|non-finite) at epoch 1, step [0-9]+/[0-9]+;", lines[0]), result
    assert "lower --lr" in lines[0]
    assert not (out / BEST).exists() and not (out / LAST).exists()
    if (out / METRICS).exists():
        assert (out / METRICS).read_text() == ""
    _strict((out / RUN_FILE).read_text())
    assert _strict((out / RUN_FILE).read_text())["best"] is None
    evaluated = run_cli("eval", appearance_store, "--checkpoint", out, "--device", "cpu", "--quiet")
    assert evaluated.code == 2, evaluated  # nothing to score


def test_metrics_are_never_written_with_non_finite_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_metrics(tmp_path, [{"epoch": 1, "loss": float("nan")}])
    assert not (tmp_path / METRICS).exists()
