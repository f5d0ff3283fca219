"""Few-shot over seeds, base-to-novel with the harmonic mean, half-class zero-shot: each protocol's result
is one record with every run's numbers, written with its predictions into its own folder."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from clipcache.pipeline.evaluate.protocols import base_to_novel, run_train_head, split_classes
from clipcache.pipeline.train.checkpoint import read_run
from clipcache.pipeline.train.config import TrainConfig
from conftest import run_cli

FAST = dict(epochs=2, min_steps=0, device="cpu", quiet=True)  # protocol mechanics: the defaults, shorter


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "predictions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_few_shot_over_seeds_writes_each_seed_and_the_mean(appearance_store: Path, tmp_path: Path) -> None:
    record = run_train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path, shots=2, seeds=2,
                                        **FAST))
    assert [r["seed"] for r in record["runs"]] == [0, 1] and record["protocol"] == "few-shot"
    top1 = [r["top1"] for r in record["runs"]]
    assert record["top1"] == pytest.approx(np.mean(top1)) and record["top1_std"] == pytest.approx(np.std(top1))
    assert "population" in record["std"] and record["split"] == "test" and record["held_out"] is True
    for seed in (0, 1):
        assert read_run(tmp_path / f"seed-{seed}")["splits"]["train"] == 6  # 2 shots x 3 classes
    folder = Path(record["output"])
    assert folder.parent == tmp_path / "eval" and folder.name == "features-test-head-linear-best-2shot-2seeds"
    assert json.loads((folder / "result.json").read_text()) == {k: v for k, v in record.items() if k != "output"}
    rows = _rows(folder)
    assert [r["run"] for r in rows] == ["seed-0"] * 12 + ["seed-1"] * 12
    assert np.mean([int(r["correct"]) for r in rows[:12]]) == pytest.approx(top1[0])


def test_base_to_novel_trains_on_base_classes_only(appearance_store: Path, tmp_path: Path) -> None:
    result = base_to_novel(TrainConfig(store=appearance_store, head="text", out=tmp_path / "b2n", **FAST))
    record = result.record
    options = record["options"]
    assert read_run(tmp_path / "b2n")["classes"] == options["base_classes"]
    assert set(options["base_classes"]).isdisjoint(options["novel_classes"])
    b, n = record["base_top1"], record["novel_top1"]
    assert record["harmonic_mean"] == pytest.approx(2 * b * n / (b + n) if b + n else 0.0)
    assert [r["classes"] for r in record["runs"]] == ["base", "novel"] and [r["top1"] for r in record["runs"]] == [b, n]
    assert {s.run: s.classes for s in result.scores} == {"base": tuple(options["base_classes"]),
                                                         "novel": tuple(options["novel_classes"])}
    with pytest.raises(ValueError, match="scores class names"):
        base_to_novel(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "x", **FAST))


def test_split_classes_is_seeded_and_disjoint() -> None:
    classes = tuple(f"c{i}" for i in range(10))
    base, novel = split_classes(classes, 3)
    assert split_classes(classes, 3) == (base, novel) and len(base) == 5
    assert sorted(base + novel) == sorted(classes) and split_classes(classes, 4) != (base, novel)


def test_half_class_zero_shot_and_zero_shot_base_to_novel_from_the_cli(appearance_store: Path,
                                                                      tmp_path: Path) -> None:
    half = run_cli("eval", appearance_store, "--zero-shot", "--half-classes", "3", "--device", "cpu", "--json",
                   "--out", tmp_path)
    assert half.code == 0, half
    record = json.loads(half.stdout)
    assert record["protocol"] == "half-class zero-shot" and len(record["runs"]) == 3
    assert record["top1"] == pytest.approx(np.mean([r["top1"] for r in record["runs"]]))
    assert [len(r["classes"]) for r in record["runs"]] == [1, 1, 1]
    assert json.loads((Path(record["output"]) / "result.json").read_text())["runs"] == record["runs"]
    b2n = run_cli("eval", appearance_store, "--zero-shot", "--base-to-novel", "--device", "cpu", "--out", tmp_path)
    assert b2n.code == 0, b2n
    assert "zero-shot (base-to-novel, 2 runs) on split 'test'" in b2n.stdout and "harmonic mean" in b2n.stdout
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["features-test-zero-shot-base-to-novel-text4vis-seed0",
                       "features-test-zero-shot-half-class-text4vis-x3"]


def test_base_to_novel_with_the_prompt_head_scores_unseen_classes(appearance_store: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(store=appearance_store, head="prompt", out=tmp_path / "p", seed=1,
                      head_options={"prefix": 2, "suffix": 2}, base_to_novel=True, **{**FAST, "epochs": 2})
    record = run_train_head(cfg)
    assert read_run(tmp_path / "p")["classes"] == record["options"]["base_classes"]
    assert len(record["options"]["novel_classes"]) >= 1 and 0 <= record["novel_top1"] <= 1
    assert Path(record["output"]) == tmp_path / "p" / "eval" / "features-test-head-prompt-base-to-novel-best-seed1"
