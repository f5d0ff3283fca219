"""Temporal action localisation from a dense store, through the CLI with default options: generated untrimmed
videos (a distracting background, instances of three appearance classes at known times), the tiny random
open_clip model, the proposal head, a text head trained on the segments, the official mAP."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipcache.pipeline.train.checkpoint import METRICS
from conftest import run_cli
from training_runs import assert_same_run, command, kill_after
from untrimmed_videos import annotated_store

KINDS = ("red_square", "green_circle", "blue_stripes")
DURATION, RATE = 40, 4


@pytest.fixture(scope="module")
def action_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 videos of 40 s, two instances each (4-8 s, apart), 9 for training and 3 for testing, annotated by a CSV."""
    rng = np.random.default_rng(0)
    videos = []
    for i in range(12):
        t, instances = float(rng.uniform(2, 6)), []
        for _ in range(2):
            length = float(rng.uniform(4, 8))
            instances.append((round(t, 2), round(t + length, 2), KINDS[int(rng.integers(len(KINDS)))]))
            t += length + float(rng.uniform(6, 10))
        videos.append((f"v{i:02d}", instances, "test" if i >= 9 else "train"))
    return annotated_store(tmp_path_factory.mktemp("actions"), videos, DURATION, RATE)


def _eval(*args: str | Path) -> dict:
    result = run_cli("eval", *args, "--json", "--quiet")
    assert result.code == 0, result
    return json.loads(result.stdout)


def test_proposals_and_trained_detection_from_the_cache(action_store: Path, tmp_path: Path) -> None:
    proposals, names = tmp_path / "proposals", tmp_path / "text"
    trained = run_cli("train-head", action_store, "--head", "proposals", "--out", proposals, "--quiet")
    assert trained.code == 0, trained
    assert json.loads((proposals / "run.json").read_text())["features"].endswith("MB held in memory")
    found = _eval(action_store, "--checkpoint", proposals)
    assert found["split"] == "test" and found["held_out"] is True and found["videos"] == 3
    assert found["proposal_recall@10@0.5"] >= 0.8, found
    assert run_cli("train-head", action_store, "--head", "text", "--out", names, "--quiet").code == 0
    segments = _eval(action_store, "--checkpoint", names)
    assert segments["method"] == "head text on segments" and segments["videos"] == 3 and segments["segments"] == 6
    assert segments["top1"] >= 0.8
    detected = _eval(action_store, "--checkpoint", proposals, "--classifier", names)
    assert detected["map@0.5"] >= 0.6, detected
    submission = json.loads((Path(detected["output"]) / "detections.json").read_text())
    assert set(submission["results"]) == {"v09", "v10", "v11"}
    first = submission["results"]["v09"][0]
    assert first["label"] in KINDS and 0 <= first["segment"][0] < first["segment"][1] <= DURATION


def test_proposals_from_a_file_are_named_zero_shot_and_scored(action_store: Path, tmp_path: Path) -> None:
    """Perfect proposals (the test videos' segments) from a CSV: recall 1 at every tIoU; a file for other videos is
    one line."""
    rows = [line.split(",") for line in (action_store.parent / "annotations.csv").read_text().splitlines()[1:]]
    perfect = tmp_path / "proposals.csv"
    perfect.write_text("video,start,end,score\n" + "".join(f"{v},{s},{e},0.9\n" for v, s, e, _, split in rows
                                                           if split == "test"))
    scored = _eval(action_store, "--proposals", perfect, "--tiou", "0.5")
    assert scored["proposal_ar@100"] == pytest.approx(1.0) and scored["held_out"] is None
    assert scored["method"] == "proposals file + zero-shot" and "map@0.5" in scored
    other = tmp_path / "other.csv"
    other.write_text("video,start,end,score\nnot_here,1,2,0.5\n")
    refused = run_cli("eval", action_store, "--proposals", other)
    assert refused.code == 2 and "none of its videos" in refused.stderr and refused.stderr.count("\n") == 1, refused


def test_localisation_refuses_what_it_cannot_use(action_store: Path, appearance_store: Path, tmp_path: Path) -> None:
    clips = run_cli("train-head", appearance_store, "--head", "proposals", "--out", tmp_path / "p")
    assert clips.code == 2 and "needs a dense store" in clips.stderr, clips
    tokens = run_cli("train-head", action_store, "--head", "attnpool", "--out", tmp_path / "a")
    assert tokens.code == 2 and "holds 0 blocks" in tokens.stderr and tokens.stderr.count("\n") == 1, tokens


def test_a_proposal_run_killed_midway_resumes_to_the_uninterrupted_weights(action_store: Path, tmp_path: Path
                                                                           ) -> None:
    """A real SIGKILL after epoch 2 of 6, then --resume: the same weights and metrics, bit for bit, as a run that
    was never stopped (windows and their shifts are drawn from the seed and the pass only)."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_cli(*command(action_store, whole, "proposals")[2:]).code == 0
    kill_after(command(action_store, cut, "proposals"), cut / METRICS, 2)
    assert run_cli(*command(action_store, cut, "proposals")[2:], "--resume").code == 0
    assert_same_run(whole, cut)
