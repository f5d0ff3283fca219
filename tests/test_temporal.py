"""Temporal modelling works: classes that differ only in the direction of motion (the same frames,
in opposite order) are learned by the EVL head with its default options (the paper's recipe, dropout
0.5 included), while the frame-mean linear head stays near chance."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipcache.pipeline.demo.synthetic import shape_frames, write_video
from conftest import run_cli, tiny_extract_args

SPLITS = {"train": 12, "val": 3, "test": 6}


@pytest.fixture(scope="module")
def motion_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("motion")
    for split, count in SPLITS.items():
        for i in range(count):
            seed = 100 * list(SPLITS).index(split) + i
            frames = shape_frames(12, 48, 64, (230, 200, 40), "circle", motion="right", seed=seed)
            write_video(root / "videos" / split / "moving_right" / f"{i}.mp4", frames)
            write_video(root / "videos" / split / "moving_left" / f"{i}.mp4", frames[::-1].copy())
    store = root / "motion.zarr"
    result = run_cli(*tiny_extract_args(root / "videos", store)[:-1], "--layers", "-3:", "--quiet")
    assert result.code == 0, result
    return store


def _train_and_eval(store: Path, out: Path, head: str) -> float:
    """Held-out top-1 of a head trained through the CLI with default options."""
    trained = run_cli("train-head", store, "--head", head, "--out", out, "--device", "cpu", "--quiet")
    assert trained.code == 0, trained
    report = run_cli("eval", store, "--checkpoint", out, "--device", "cpu", "--json")
    assert report.code == 0, report
    return json.loads(report.stdout)["top1"]


def test_evl_learns_motion_direction_linear_cannot(motion_store: Path, tmp_path: Path) -> None:
    evl = _train_and_eval(motion_store, tmp_path / "evl", "evl")
    linear = _train_and_eval(motion_store, tmp_path / "linear", "linear")
    assert evl >= 0.9
    # the frame means of a video and of its reverse are the same up to codec noise: standardised, the linear
    # head can memorise that noise on its training videos, but it guesses on held-out ones
    assert linear <= 0.7
