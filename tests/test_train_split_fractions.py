"""train-head --split-fractions: the splits drawn for a store without splits at the fractions asked for, recorded
in run.json (config and split_drawn), and evaluation of the run scores the test split of the same draw."""
from __future__ import annotations

import json
from pathlib import Path

from test_unsplit import PER_CLASS, unsplit_store  # noqa: F401 (the fixture)

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.train.splits import store_splits
from conftest import run_cli


def test_train_head_draws_the_fractions_asked_for_and_eval_scores_their_test_split(unsplit_store: Path,  # noqa: F811
                                                                                  tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["train-head", unsplit_store, "--head", "linear", "--out", out, "--min-steps", "0", "--device", "cpu",
              "--quiet", "--split-fractions", "0.4,0.2,0.4"]
    trained = run_cli(*common, "--epochs", "1")
    assert trained.code == 0, trained
    run = json.loads((out / "run.json").read_text())
    drawn = {"fractions": [0.4, 0.2, 0.4], "seed": 0, "stratified_by": "label"}
    assert run["config"]["split_fractions"] == [0.4, 0.2, 0.4] and run["split_drawn"] == drawn
    splits, _ = store_splits(CacheReader(unsplit_store), (0.4, 0.2, 0.4))
    classes = len(CacheReader(unsplit_store).classes)
    # of each class's PER_CLASS videos: round(5 * 0.2) = 1 validates, round(5 * 0.4) = 2 test, the other 2 train
    assert PER_CLASS == 5 and run["splits"] == {"train": 2 * classes, "val": classes, "test": 2 * classes}
    evaluated = run_cli("eval", unsplit_store, "--checkpoint", out, "--device", "cpu", "--json", "--quiet")
    assert evaluated.code == 0, evaluated
    record = json.loads(evaluated.stdout)
    assert record["split_drawn"] == drawn and record["held_out"] is True
    assert record["videos"] == int((splits == "test").sum()) == 2 * classes
    other = run_cli(*common[:-1], "0.6,0.2,0.2", "--epochs", "2", "--resume")  # another draw: another run
    assert other.code == 2 and "split_fractions" in other.stderr, other
    resumed = run_cli(*common, "--epochs", "2", "--resume")
    assert resumed.code == 0 and json.loads((out / "run.json").read_text())["epochs_done"] == 2, resumed


def test_a_store_with_splits_records_none_drawn_and_bad_fractions_are_one_line(appearance_store: Path,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["train-head", appearance_store, "--head", "linear", "--out", out, "--epochs", "1", "--min-steps", "0",
              "--device", "cpu", "--quiet"]
    assert run_cli(*common).code == 0
    assert json.loads((out / "run.json").read_text())["split_drawn"] is None
    bad = run_cli(*common, "--split-fractions", "0.5,0.5")
    assert bad.code == 2 and "--split-fractions 0.5,0.5: expected TRAIN,VAL,TEST" in bad.stderr, bad
    captions = run_cli(*common[:3], "prompt", *common[4:], "--captions", tmp_path / "c.csv", "--split-fractions",
                       "0.5,0.25,0.25")
    assert captions.code == 2 and "--split-fractions draws the splits of classification runs" in captions.stderr
