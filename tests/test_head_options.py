"""Head options are checked against what each head declares (its `__init__` types and `option_limits`):
a bad value is one line naming the option, before any store is read, never a traceback from torch."""
from __future__ import annotations

from pathlib import Path

import pytest

from clipcache.heads import HEADS, head_class
from conftest import run_cli


@pytest.mark.parametrize("head, pair, reason", [
    ("evl", "dropout=2", "--option dropout must be at most 1, got 2"),
    ("evl", "dropout=-0.5", "--option dropout must be 0 or more, got -0.5"),
    ("evl", "dropout=NaN", "--option dropout must be 0 or more, got nan"),
    ("evl", "num_layers=0", "--option num_layers must be at least 1, got 0"),
    ("evl", "num_layers=2.5", "--option num_layers: evl takes a whole number, got 2.5"),
    ("attnpool", "queries=0", "--option queries must be at least 1, got 0"),
    ("attnpool", "heads=many", "--option heads: attnpool takes a whole number, got 'many'"),
    ("text", "depth=-1", "--option depth must be 0 or more, got -1"),
    ("text", "learn_scale=maybe", "--option learn_scale: text takes true or false, got 'maybe'"),
    ("linear", "normalize=1", "--option normalize: linear takes true or false, got 1"),
    ("prompt", "prefix=-3", "--option prefix must be 0 or more, got -3"),
])
def test_a_bad_head_option_is_one_line(appearance_store: Path, tmp_path: Path, head: str, pair: str,
                                       reason: str) -> None:
    result = run_cli("train-head", appearance_store, "--head", head, "--out", tmp_path / "run", "--option", pair,
                     "--epochs", "1", "--device", "cpu", "--quiet")
    assert result.code == 2, result
    assert result.stderr.strip() == f"clipcache: error: {reason}", result


def test_every_declared_limit_names_an_option_of_its_head() -> None:
    """A limit on a name the head does not take would never be checked."""
    for name in HEADS:
        cls = head_class(name)
        params = cls.__init__.__code__.co_varnames[:cls.__init__.__code__.co_argcount]
        assert set(cls.option_limits) <= set(params), name
