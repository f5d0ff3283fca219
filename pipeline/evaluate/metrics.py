"""The standard video-classification metrics."""
from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """top-1, top-5, mean class accuracy, per-class accuracy and the confusion matrix."""
    ranked = np.argsort(-probs, axis=1)
    top1 = ranked[:, 0] == labels
    top5 = (ranked[:, : min(5, probs.shape[1])] == labels[:, None]).any(axis=1)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    present = confusion.sum(axis=1) > 0
    per_class = np.where(present, np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1), np.nan)
    return {
        "videos": int(len(labels)),
        "top1": float(top1.mean()) if len(labels) else 0.0,
        "top5": float(top5.mean()) if len(labels) else 0.0,
        "mean_class_accuracy": float(np.nanmean(per_class)) if present.any() else 0.0,
        "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class)},
        "confusion": confusion.tolist(),
    }
