"""A store whose folder named no splits (root/<class>/<video>) is usable: splits drawn for it (stratified, seeded,
recorded), every video scorable by zero-shot and by a cross-validated probe, and errors that name the options."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.demo.synthetic import write_demo_videos
from clipcache.pipeline.train.splits import draw_splits, store_splits
from conftest import run_cli, tiny_extract_args

PER_CLASS = 5


@pytest.fixture(scope="module")
def unsplit_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes of PER_CLASS videos laid out root/<class>/<video>.mp4."""
    tmp = tmp_path_factory.mktemp("unsplit")
    write_demo_videos(tmp / "made", {"all": PER_CLASS}, frames=8)
    store = tmp / "features.zarr"
    result = run_cli(*tiny_extract_args(tmp / "made" / "all", store))
    assert result.code == 0, result
    assert set(CacheReader(store).column("split")) == {""}
    return store


def _result(stdout: str) -> dict:
    return json.loads(stdout)


def test_drawn_splits_are_stratified_seeded_and_cover_every_class() -> None:
    labels = np.repeat(np.arange(4), 10)
    drawn = draw_splits(labels, (0.6, 0.2, 0.2), seed=0)
    for label in range(4):
        names, counts = np.unique(drawn[labels == label], return_counts=True)
        assert dict(zip(names, counts)) == {"train": 6, "val": 2, "test": 2}
    assert (draw_splits(labels, (0.6, 0.2, 0.2), seed=0) == drawn).all()
    assert (draw_splits(labels, (0.6, 0.2, 0.2), seed=1) != drawn).any()
    few = draw_splits(np.zeros(3, np.int64), (0.8, 0.1, 0.1))  # three videos: one in each split
    assert sorted(few) == ["test", "train", "val"]


def test_a_head_trains_on_the_drawn_splits_and_eval_scores_their_test_split(unsplit_store: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "run"
    trained = run_cli("train-head", unsplit_store, "--head", "linear", "--out", out, "--epochs", "1",
                      "--min-steps", "0", "--device", "cpu")
    assert trained.code == 0, trained
    assert "has no splits" in trained.stderr and "0.7/0.1/0.2" in trained.stderr, trained
    evaluated = run_cli("eval", unsplit_store, "--checkpoint", out, "--device", "cpu", "--json", "--quiet")
    assert evaluated.code == 0, evaluated
    record = _result(evaluated.stdout)
    splits, drawn = store_splits(CacheReader(unsplit_store))
    assert record["split"] == "test" and record["held_out"] is True
    assert record["videos"] == int((splits == "test").sum()) == 3
    assert record["split_drawn"] == {"fractions": [0.7, 0.1, 0.2], "seed": 0, "stratified_by": "label"}
    refused = run_cli("eval", unsplit_store, "--checkpoint", out, "--split-fractions", "0.5,0.25,0.25")
    assert refused.code == 2 and "--split-fractions" in refused.stderr, refused


def test_zero_shot_and_the_probe_score_every_video(unsplit_store: Path, tmp_path: Path) -> None:
    zero = run_cli("eval", unsplit_store, "--zero-shot", "--split", "all", "--device", "cpu", "--json", "--quiet",
                   "--out", tmp_path)
    assert zero.code == 0, zero
    assert _result(zero.stdout)["videos"] == 3 * PER_CLASS and _result(zero.stdout)["split"] == "all"
    probe = run_cli("eval", unsplit_store, "--probe", "linear", "--split", "all", "--json", "--quiet",
                    "--out", tmp_path)
    assert probe.code == 0, probe
    record = _result(probe.stdout)
    assert record["videos"] == 3 * PER_CLASS and record["held_out"] is True
    run = record["runs"][0]
    assert run["folds"] == 5 and len(run["C"]) == 5 and run["fitted_on"] == "the other 4 of 5 stratified folds"
    rows = (Path(record["output"]) / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * PER_CLASS  # each video scored once


def test_fractions_are_an_option_and_recorded(unsplit_store: Path, tmp_path: Path) -> None:
    probe = run_cli("eval", unsplit_store, "--probe", "linear", "--split-fractions", "0.4,0.2,0.4", "--json",
                    "--quiet", "--out", tmp_path)
    assert probe.code == 0, probe
    record = _result(probe.stdout)
    assert record["videos"] == 3 * 2 and record["split_drawn"]["fractions"] == [0.4, 0.2, 0.4]
    for bad in ("0.5,0.5", "0.7,0.2,0.2", "0,0.5,0.5", "a,b,c"):
        refused = run_cli("eval", unsplit_store, "--probe", "linear", "--split-fractions", bad)
        assert refused.code == 2 and f"--split-fractions {bad}: expected TRAIN,VAL,TEST" in refused.stderr, refused


def test_errors_name_the_options(unsplit_store: Path, tmp_path: Path) -> None:
    missing = run_cli("eval", unsplit_store, "--zero-shot", "--split", "nosuch", "--device", "cpu")
    assert missing.code == 2 and "name one with --split" in missing.stderr and "drawn" in missing.stderr, missing
    training = run_cli("train-head", unsplit_store, "--head", "linear", "--out", tmp_path / "r", "--train-split",
                       "nosuch", "--device", "cpu")
    assert training.code == 2 and "name one with --train-split" in training.stderr, training
