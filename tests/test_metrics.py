"""The classification metrics equal scikit-learn's, which they replace for start-up time (pipeline/evaluate/metrics.py):
random scores with many ties (scores rounded to a few values), classes without videos, one class."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, top_k_accuracy_score

from clipcache.pipeline.evaluate.metrics import TOP_K, classification_metrics


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn, on the one-class case
@pytest.mark.parametrize("classes", [1, 3, 6, 12])
@pytest.mark.parametrize("seed", range(4))
def test_classification_metrics_equal_scikit_learns(classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, max(1, classes - 1), size=40)  # the last class has no video
    probs = np.round(rng.random((40, classes)) * 3) / 3  # four values: ties everywhere
    names = tuple(f"c{i}" for i in range(classes))
    ours = classification_metrics(probs, labels, names)
    everyone = np.arange(classes)
    assert ours["confusion"] == confusion_matrix(labels, probs.argmax(axis=1), labels=everyone).tolist()
    if classes > TOP_K:
        assert ours["top5"] == top_k_accuracy_score(labels, probs, k=TOP_K, labels=everyone)
    else:
        assert ours["top5"] is None
