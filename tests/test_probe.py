"""The linear probe: CLIP's C search, refit on train+val, K-shot over seeds, stores without a test split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.probe import linear_probe, search_c
from conftest import synthetic_store


def test_probe_reaches_90_percent_on_held_out_videos(appearance_store: Path) -> None:
    report = linear_probe(CacheReader(appearance_store))
    assert report["split"] == "test" and report["videos"] == 12
    assert report["top1"] >= 0.9 and 1e-6 <= report["C"] <= 1e6
    assert set(report["per_class"]) == set(CacheReader(appearance_store).classes)


def test_few_shot_probe_over_seeds(appearance_store: Path) -> None:
    report = linear_probe(CacheReader(appearance_store), shots=2, seeds=3)
    top1 = [run["top1"] for run in report["runs"]]
    assert [run["seed"] for run in report["runs"]] == [0, 1, 2]
    assert report["top1"] == pytest.approx(np.mean(top1)) and report["top1_std"] == pytest.approx(np.std(top1))


def test_c_search_follows_clip() -> None:
    """7 values two decades apart, then the step halves around the best down to 1/8 decade: 15 fits."""
    tried = []

    def score(c: float) -> float:
        tried.append(np.log10(c))
        return -abs(np.log10(c) - 1.3)

    best = search_c(score)
    np.testing.assert_allclose(tried[:7], [-6, -4, -2, 0, 2, 4, 6])
    np.testing.assert_allclose(tried[7:], [1, 3, 0.5, 1.5, 1.25, 1.75, 1.125, 1.375])
    assert np.log10(best) == pytest.approx(1.25)
    assert search_c(lambda c: 1.0) == 1.0  # ties go to the C nearest 1


def test_probe_without_test_split_reports_on_validation(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", splits=["train"] * 9 + ["val"] * 3)
    report = linear_probe(CacheReader(store))
    assert report["split"] == "val" and report["videos"] == 3
    asked_for_val = linear_probe(CacheReader(store), test="val")  # never refit on the videos it reports on
    assert asked_for_val["split"] == "val" and asked_for_val["top1"] == report["top1"]
