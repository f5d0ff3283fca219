"""Every head learns with its default options on a small training set of nearly collinear features:
fresh generated videos (4 classes x 8 training videos) that no default was tuned on, where each class
is a small coloured square on one scene shared by all videos, so the tiny random encoder's video
embeddings are pairwise cosine > 0.99. Each head, trained through the command line with no training
option but its seed, must come within 10 points of test top-1 of a leak-free logistic-regression probe
computed here (tests/leak_free_probe.py), on average over three seeds: on a set this small one run's top-1
moves with its trajectory (the text head gave 0.70-0.825 over seeds 0-5 against the probe's 0.825, and once
0.70 with seed 0 in a full run whose state differed from a run alone in a way not found). EVL's defaults are
tested on motion-only classes in test_temporal.py, the prompt head's also on the appearance store in
test_prompt.py."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from clipcache.pipeline.demo.synthetic import write_video
from conftest import run_cli, tiny_extract_args
from leak_free_probe import probe_top1, training_features

COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (50, 70, 220), "yellow": (220, 200, 40)}
SPLITS = {"train": 8, "val": 3, "test": 10}


def _frames(colour: tuple[int, int, int], seed: int, n: int = 8, height: int = 48, width: int = 64,
            size: int = 8) -> np.ndarray:
    """The shared scene with fresh noise per frame, and a small square of the class colour in a random place."""
    scene = np.random.default_rng(7).integers(60, 200, (height, width, 3))
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, height - size), rng.integers(0, width - size)
    frames = np.clip(scene + rng.integers(-20, 21, (n, height, width, 3)), 0, 255).astype(np.uint8)
    frames[:, y:y + size, x:x + size] = colour
    return frames


@pytest.fixture(scope="module")
def collinear_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("collinear")
    for split, count in SPLITS.items():
        for name, colour in COLOURS.items():
            for i in range(count):
                seed = zlib.crc32(f"{split}/{name}/{i}".encode())
                write_video(root / "videos" / split / name / f"{i}.mp4", _frames(colour, seed))
    store = root / "store.zarr"
    result = run_cli(*tiny_extract_args(root / "videos", store))
    assert result.code == 0, result
    info = json.loads(run_cli("info", store, "--json").stdout)
    assert info["done"] == info["videos"], info["failures"]  # every video in: the bounds below are for this set
    return store


@pytest.fixture(scope="module")
def probe(collinear_store: Path) -> float:
    x, _ = training_features(collinear_store)
    cosines = x @ x.T
    assert cosines[np.triu_indices(len(x), 1)].mean() > 0.99  # nearly collinear, as the issue found
    top1 = probe_top1(collinear_store, folds=4)
    assert top1 >= 0.6  # the features do separate the classes: a comparison that means something
    return top1


PROMPT_LIMIT = pytest.mark.xfail(strict=True, reason=(
    "Efficient-Prompt's 2-layer temporal transformer (no outer residual) fits the 32 training videos and "
    "generalises to ~0.65-0.70 here against the probe's 0.825 (its test top-1 peaks there in every epoch); "
    "on less collinear sets it is within 10 points (test_prompt.py); see the README's known limits"))


SEEDS = (0, 1, 2)


@pytest.mark.parametrize("head", ["linear", "text", pytest.param("prompt", marks=PROMPT_LIMIT), "attnpool"])
def test_every_head_with_default_options_comes_within_10_points_of_a_probe(collinear_store: Path, probe: float,
                                                                           tmp_path: Path, head: str) -> None:
    top1, runs = [], []
    for seed in SEEDS:
        out = tmp_path / f"{head}-{seed}"
        trained = run_cli("train-head", collinear_store, "--head", head, "--out", out, "--seed", str(seed),
                          "--device", "cpu", "--quiet")
        assert trained.code == 0, trained
        report = run_cli("eval", collinear_store, "--checkpoint", out, "--device", "cpu", "--json", "--quiet")
        assert report.code == 0, report
        result = json.loads(report.stdout)
        assert result["split"] == "test" and result["videos"] == 4 * SPLITS["test"]
        top1.append(result["top1"])
        run = json.loads((out / "run.json").read_text())
        runs.append((run["stopping"]["why"], run["best"]["epoch"]))
    assert np.mean(top1) >= probe - 0.10, (head, top1, probe, runs)
