"""Numbers that mean what they say: metrics checked against plain numpy, top-5 only with more than five
classes, the split scored named in every record and line, heads flagged when the split scored trained or
selected them, one record layout and a predictions file per evaluation, one-line refusals."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from test_probe import without_test  # noqa: F401 - the store with train and val splits only

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.metrics import classification_metrics
from clipcache.pipeline.evaluate.results import DESCRIPTION, PREDICTION_COLUMNS
from clipcache.pipeline.evaluate.zero_shot import zero_shot
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loop import train_head
from conftest import run_cli, synthetic_store

FAST = dict(epochs=2, batch_size=6, lr=1e-2, device="cpu", quiet=True)


def _eval(*args: str | Path) -> tuple[dict, str]:
    result = run_cli("eval", *args, "--device", "cpu", "--json")
    assert result.code == 0, result
    return json.loads(result.stdout), result.stderr


def _refused(*args: str | Path) -> str:
    result = run_cli(*args)
    assert result.code == 2 and result.stderr.startswith("clipcache: error: "), result
    assert result.stderr.count("\n") == 1, result
    return result.stderr


def test_metrics_agree_with_plain_numpy() -> None:
    rng = np.random.default_rng(0)
    classes = tuple(f"c{i}" for i in range(8))
    labels = rng.integers(0, 7, 300)  # class c7 has no video
    probs = rng.random((300, 8)) + np.eye(8)[labels] * rng.random((300, 1))
    m = classification_metrics(probs, labels, classes)
    ranked = np.argsort(-probs, axis=1)
    assert m["top1"] == pytest.approx((ranked[:, 0] == labels).mean())
    assert m["top5"] == pytest.approx((ranked[:, :5] == labels[:, None]).any(axis=1).mean())
    confusion = np.zeros((8, 8), int)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    assert m["confusion"] == confusion.tolist()
    per_class = [(ranked[labels == c, 0] == c).mean() for c in range(7)]
    assert [m["per_class"][c] for c in classes[:7]] == pytest.approx(per_class) and m["per_class"]["c7"] is None
    assert m["mean_class_accuracy"] == pytest.approx(np.mean(per_class))
    few = classification_metrics(probs[:, :5], np.minimum(labels, 4), classes[:5])
    assert few["top5"] is None  # with 5 classes top-5 would always be 1.0


def test_zero_shot_record_and_predictions(appearance_store: Path, tmp_path: Path) -> None:
    record, _ = _eval(appearance_store, "--zero-shot", "--out", tmp_path)
    assert list(record)[: len(DESCRIPTION)] == list(DESCRIPTION)
    assert (record["method"], record["protocol"], record["split"], record["held_out"]) == \
        ("zero-shot", "single", "test", True)
    assert record["dataset"] == "features" and record["model"] == "tiny-vit" and record["top5"] is None
    folder = Path(record["output"])
    assert folder == tmp_path / "features-test-zero-shot-text4vis"
    assert json.loads((folder / "result.json").read_text()) == {k: v for k, v in record.items() if k != "output"}
    with (folder / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    reader = CacheReader(appearance_store)
    test_paths = set(reader.column("path")[reader.column("split") == "test"])
    assert list(rows[0]) == PREDICTION_COLUMNS[1:] and len(rows) == 12  # one run: no `run` column
    assert {r["path"] for r in rows} == test_paths
    for row in rows:
        scores = [float(row[f"score_{k}"]) for k in (1, 2, 3)]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-5)
        assert row["pred_4"] == row["score_5"] == ""  # 3 classes
        assert row["correct"] == str(int(row["pred_1"] == row["label"]))
        assert row["label"] == reader.classes[reader.column("label")[int(row["video"])]]
    assert np.mean([int(r["correct"]) for r in rows]) == pytest.approx(record["top1"])


@pytest.fixture(scope="module")
def linear_run(appearance_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "linear"
    train_head(TrainConfig(store=appearance_store, head="linear", out=out, **FAST))
    return out


def test_a_head_is_held_out_only_on_videos_that_neither_trained_nor_selected_it(appearance_store: Path,
                                                                                 linear_run: Path) -> None:
    record, stderr = _eval(appearance_store, "--checkpoint", linear_run)
    assert (record["split"], record["held_out"]) == ("test", True) and "WARNING" not in stderr
    assert Path(record["output"]) == linear_run / "eval" / "features-test-head-linear-best"
    on_val = run_cli("eval", appearance_store, "--checkpoint", linear_run, "--split", "val", "--device", "cpu")
    assert "head linear on split 'val' [NOT held out] (6 videos)" in on_val.stdout, on_val
    assert on_val.stderr.count("WARNING: split 'val' includes videos that trained or selected this head") == 1
    last, stderr = _eval(appearance_store, "--checkpoint", linear_run, "--split", "val", "--weights", "last")
    assert last["held_out"] is True and "WARNING" not in stderr  # no early stopping: val chose nothing
    train, _ = _eval(appearance_store, "--checkpoint", linear_run, "--split", "train", "--weights", "last")
    assert train["held_out"] is False


def test_a_head_scored_on_the_val_fallback_says_so_loudly(without_test: Path, tmp_path: Path) -> None:  # noqa: F811
    train_head(TrainConfig(store=without_test, head="linear", out=tmp_path / "r", **FAST))
    result = run_cli("eval", without_test, "--checkpoint", tmp_path / "r", "--device", "cpu")
    assert result.code == 0, result
    assert "on split 'val' [NOT held out]" in result.stdout
    assert result.stderr.count("\n") == 1 and "features: no split 'test', scored 'val'; WARNING: split 'val' " \
        "includes videos that trained or selected this head linear: its accuracy is not a held-out score" \
        in result.stderr


def test_held_out_is_unknown_when_the_training_split_is_gone(appearance_store: Path, tmp_path: Path) -> None:
    reader = CacheReader(appearance_store)
    listed = tmp_path / "train.txt"
    listed.write_text("\n".join(reader.column("path")[reader.column("split") == "train"]) + "\n")
    train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "r", train_split=str(listed), **FAST))
    listed.unlink()
    record, stderr = _eval(appearance_store, "--checkpoint", tmp_path / "r")
    assert record["held_out"] is None and "split 'test' may not be held out from this head linear" in stderr


def test_zero_shot_on_a_subset_of_classes_scores_only_their_videos(appearance_store: Path) -> None:
    classes = CacheReader(appearance_store).classes[:2]
    result = zero_shot(appearance_store, classes=classes, device="cpu")
    assert result.record["videos"] == 8 and result.record["classes"] == 2
    assert result.scores[0].probs.shape == (8, 2) and result.record["options"]["classes"] == list(classes)


def test_unlabelled_stores_and_bad_options_are_refused_in_one_line(tmp_path: Path, appearance_store: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr")
    zarr.open_array(str(store / "videos" / "label"), mode="r+")[:] = -1
    root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    root.attrs["classes"] = []  # as extract writes a folder of videos without class folders
    assert "s.zarr: the store has no class labels; zero-shot needs classes to name" in \
        _refused("eval", store, "--zero-shot", "--device", "cpu")
    assert "s.zarr: split 'test' has no labelled videos to score" in _refused("eval", store, "--probe", "linear")
    file = tmp_path / "a-file"
    file.write_text("mine\n")
    assert f"--out {file}: is a file" in _refused("eval", appearance_store, "--zero-shot", "--out", file)
    assert file.read_text() == "mine\n"
    assert "--shots must be at least 1, got 0" in _refused("eval", appearance_store, "--probe", "linear", "--shots",
                                                            "0")
    assert "--seeds must be at least 1" in _refused("eval", appearance_store, "--probe", "linear", "--seeds", "0")
    assert "add --zero-shot" in _refused("eval", appearance_store, "--probe", "linear", "--half-classes", "2")
