"""The standard video-classification metrics, computed as scikit-learn's `confusion_matrix` and
`top_k_accuracy_score` compute them (ties included; tests/test_metrics.py compares the two), in numpy: importing
scikit-learn's metrics costs every stage-two command about 0.8 s of its start (README, default runs)."""
from __future__ import annotations

from typing import Any

import numpy as np

TOP_K = 5  # top-5 is reported only with more classes than this: with 5 or fewer it is always 1.0


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """top-1, top-5 (None with 5 classes or fewer), mean class accuracy, per-class accuracy (None for a class
    without videos) and the confusion matrix (rows: true class, columns: predicted)."""
    if len(labels) == 0:
        return {"videos": 0, "top1": 0.0, "top5": None if len(classes) <= TOP_K else 0.0,
                "mean_class_accuracy": 0.0, "per_class": dict.fromkeys(classes),
                "confusion": np.zeros((len(classes), len(classes)), np.int64).tolist()}
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (labels, probs.argmax(axis=1)), 1)
    # Per-class accuracy and its mean are from the confusion matrix: scikit-learn's recall_score and
    # balanced_accuracy_score give the same numbers for classes present, but warn about (and count as 0 or
    # drop silently) the classes a split has no video of, where we report None and leave them out of the mean.
    totals = confusion.sum(axis=1)
    present = totals > 0
    per_class = np.where(present, np.diag(confusion) / np.maximum(totals, 1), np.nan)
    top5 = None
    if len(classes) > TOP_K:  # scikit-learn's order: a stable ascending sort reversed, so ties go to the higher index
        best = np.argsort(probs, axis=1, kind="mergesort")[:, ::-1][:, :TOP_K]
        top5 = float((best == labels[:, None]).any(axis=1).mean())
    return {
        "videos": len(labels),
        "top1": float(np.trace(confusion) / len(labels)),
        "top5": top5,
        "mean_class_accuracy": float(np.nanmean(per_class)),
        "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class)},
        "confusion": confusion.tolist(),
    }


def top_classes(probs: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the k highest-scoring classes per row, best first: (n, min(k, C))."""
    k = min(k, probs.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
