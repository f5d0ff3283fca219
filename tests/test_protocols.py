"""Few-shot over seeds, base-to-novel with the harmonic mean, half-class zero-shot."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipcache.pipeline.evaluate.protocols import base_to_novel, few_shot, split_classes
from clipcache.pipeline.train.checkpoint import read_run
from clipcache.pipeline.train.config import TrainConfig
from conftest import run_cli

FAST = dict(epochs=6, batch_size=6, lr=1e-2, device="cpu", quiet=True)


def test_few_shot_over_seeds(appearance_store: Path, tmp_path: Path) -> None:
    report = few_shot(TrainConfig(store=appearance_store, head="linear", out=tmp_path, shots=2, seeds=2, **FAST))
    assert [r["seed"] for r in report["runs"]] == [0, 1]
    assert report["top1"]["mean"] == pytest.approx(np.mean([r["top1"] for r in report["runs"]]))
    for seed in (0, 1):
        assert read_run(tmp_path / f"seed-{seed}")["splits"]["train"] == 6  # 2 shots x 3 classes


def test_base_to_novel_trains_on_base_classes_only(appearance_store: Path, tmp_path: Path) -> None:
    report = base_to_novel(TrainConfig(store=appearance_store, head="text", out=tmp_path / "b2n", **FAST))
    assert read_run(tmp_path / "b2n")["classes"] == report["base_classes"]
    assert set(report["base_classes"]).isdisjoint(report["novel_classes"])
    b, n = report["base_top1"], report["novel_top1"]
    assert report["harmonic_mean"] == pytest.approx(2 * b * n / (b + n) if b + n else 0.0)
    with pytest.raises(ValueError, match="scores class names"):
        base_to_novel(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "x", **FAST))


def test_split_classes_is_seeded_and_disjoint() -> None:
    classes = tuple(f"c{i}" for i in range(10))
    base, novel = split_classes(classes, 3)
    assert split_classes(classes, 3) == (base, novel) and len(base) == 5
    assert sorted(base + novel) == sorted(classes) and split_classes(classes, 4) != (base, novel)


def test_half_class_zero_shot_and_zero_shot_base_to_novel_from_the_cli(appearance_store: Path) -> None:
    half = run_cli("eval", appearance_store, "--zero-shot", "--half-classes", "3", "--device", "cpu")
    assert half.code == 0, half
    report = json.loads(half.stdout)
    assert len(report["runs"]) == 3 and report["top1"]["mean"] == pytest.approx(np.mean(report["runs"]))
    b2n = json.loads(run_cli("eval", appearance_store, "--zero-shot", "--base-to-novel", "--device", "cpu").stdout)
    assert b2n["method"] == "zero-shot" and 0 <= b2n["harmonic_mean"] <= 1


def test_base_to_novel_with_the_prompt_head_scores_unseen_classes(appearance_store: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(store=appearance_store, head="prompt", out=tmp_path / "p", seed=1,
                      head_options={"prefix": 2, "suffix": 2}, **{**FAST, "epochs": 2})
    report = base_to_novel(cfg)
    assert read_run(tmp_path / "p")["classes"] == report["base_classes"]
    assert len(report["novel_classes"]) >= 1 and 0 <= report["novel_top1"] <= 1
