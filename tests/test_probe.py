"""The linear probe: CLIP's C search, and a reported accuracy that never includes a video used for fitting or
for choosing C (checked against scikit-learn fitted here, independently of the probe's code)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.probe import linear_probe, search_c
from conftest import run_cli


def _features(reader: CacheReader, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Frame- and test-view-mean pooled embeddings, L2-normalised, and labels of a split's videos."""
    videos = np.flatnonzero(reader.column("split") == split)
    pooled = reader.pooled(videos)[:, : reader.settings.clips * reader.settings.crops].astype(np.float32)
    x = pooled.mean(axis=(1, 2))
    return x / np.linalg.norm(x, axis=1, keepdims=True), reader.column("label")[videos]


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    with threadpool_limits(1, user_api="blas"):  # tiny problems: BLAS threads only slow them down
        return LogisticRegression(C=c, max_iter=1000).fit(x, y)


@pytest.fixture(scope="module")
def without_test(appearance_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The appearance store with its test videos moved to an unused split: it has train and val only."""
    copy = tmp_path_factory.mktemp("no-test") / "features.zarr"
    shutil.copytree(appearance_store, copy)
    splits = zarr.open_array(str(copy / "videos" / "split"), mode="r+")
    splits[:] = np.where(splits[:] == "test", "unused", splits[:])
    return copy


def test_with_a_test_split_c_is_chosen_on_val_and_test_is_scored(appearance_store: Path) -> None:
    reader = CacheReader(appearance_store)
    result = linear_probe(reader)
    record, (run,) = result.record, result.record["runs"]
    assert (record["split"], record["split_requested"], record["held_out"]) == ("test", "test", True)
    assert record["videos"] == 12 and record["top1"] >= 0.9 and set(record["per_class"]) == set(reader.classes)
    assert (run["selection"], run["fitted_on"]) == ("val", "train+val") and len(run["sweep"]) == 15
    (x_train, y_train), (x_val, y_val), (x_test, _) = (_features(reader, s) for s in ("train", "val", "test"))
    for point in run["sweep"]:  # each C scored on validation after fitting on train
        assert point["accuracy"] == pytest.approx((_fit(x_train, y_train, point["C"]).predict(x_val) == y_val).mean())
    refit = _fit(np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), run["C"])
    np.testing.assert_allclose(result.scores[0].probs, refit.predict_proba(x_test), atol=1e-4)


def test_without_a_test_split_val_is_scored_and_c_is_chosen_by_cross_validation(without_test: Path) -> None:
    """The bug this guards against: C chosen on val, then val reported as if held out."""
    reader = CacheReader(without_test)
    result = linear_probe(reader)
    record, (run,) = result.record, result.record["runs"]
    assert (record["split"], record["split_requested"], record["held_out"]) == ("val", "test", True)
    assert record["videos"] == 6 and (run["selection"], run["fitted_on"]) == ("cross-validation on train", "train")
    (x_train, y_train), (x_val, _) = _features(reader, "train"), _features(reader, "val")
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x_train, y_train))
    for point in run["sweep"]:  # every score comes from training videos only
        cv = np.mean([(_fit(x_train[a], y_train[a], point["C"]).predict(x_train[b]) == y_train[b]).mean()
                      for a, b in folds])
        assert point["accuracy"] == pytest.approx(cv)
    np.testing.assert_allclose(result.scores[0].probs, _fit(x_train, y_train, run["C"]).predict_proba(x_val),
                               atol=1e-4)


def test_one_shot_without_a_test_split_has_no_c_to_choose(without_test: Path) -> None:
    result = linear_probe(CacheReader(without_test), shots=1, seeds=2)
    assert [run["C"] for run in result.record["runs"]] == [1.0, 1.0]
    assert all(run["selection"].startswith("none: C = 1") and run["train_videos"] == 3 for run in result.record["runs"])


def test_the_probe_never_scores_its_training_videos(appearance_store: Path) -> None:
    with pytest.raises(ValueError, match="split 'train' holds 18 videos of the training split 'train'"):
        linear_probe(CacheReader(appearance_store), test="train")


def test_few_shot_probe_over_seeds(appearance_store: Path) -> None:
    result = linear_probe(CacheReader(appearance_store), shots=2, seeds=3)
    record = result.record
    top1 = [run["top1"] for run in record["runs"]]
    assert record["protocol"] == "few-shot" and [run["seed"] for run in record["runs"]] == [0, 1, 2]
    assert all(run["train_videos"] == 6 and run["selection"] == "val" for run in record["runs"])
    assert record["top1"] == pytest.approx(np.mean(top1)) and record["top1_std"] == pytest.approx(np.std(top1))
    assert "population" in record["std"] and record["top5"] is None  # 3 classes: no top-5
    assert [s.run for s in result.scores] == ["seed-0", "seed-1", "seed-2"]


def test_c_search_follows_clip() -> None:
    """7 values two decades apart, then the step halves around the best down to 1/8 decade: 15 fits."""
    tried = []

    def score(c: float) -> float:
        tried.append(np.log10(c))
        return -abs(np.log10(c) - 1.3)

    best, sweep = search_c(score)
    np.testing.assert_allclose(tried[:7], [-6, -4, -2, 0, 2, 4, 6])
    np.testing.assert_allclose(tried[7:], [1, 3, 0.5, 1.5, 1.25, 1.75, 1.125, 1.375])
    assert np.log10(best) == pytest.approx(1.25) and len(sweep) == 15
    assert list(sweep) == sorted(sweep) and sweep[best] == max(sweep.values())
    assert search_c(lambda c: 1.0)[0] == 1.0  # ties go to the C nearest 1


def test_eval_names_the_split_scored_and_the_fallback_once(without_test: Path, tmp_path: Path) -> None:
    result = run_cli("eval", without_test, "--probe", "linear", "--out", tmp_path)
    assert result.code == 0, result
    assert "on split 'val'" in result.stdout
    assert result.stderr.count("features: no split 'test', scored 'val'") == 1, result
