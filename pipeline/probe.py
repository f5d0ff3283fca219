"""Linear probe as in the CLIP paper: logistic regression on frame-averaged embeddings, C chosen on
validation (a coarse log grid 1e-6..1e6, then a finer one around the best), refit on train+val."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from cache.reader import CacheReader
from cache.splits import train_val_test
from pipeline.metrics import classification_metrics

COARSE_C = np.logspace(-6, 6, 13)


def video_features(reader: CacheReader, videos: np.ndarray) -> np.ndarray:
    """Mean over frames and test views of the pooled embeddings, L2-normalised: (n, E)."""
    test_views = reader.settings.clips * reader.settings.crops
    order = np.argsort(videos)
    pooled = reader.pooled(videos[order])[:, :test_views].astype(np.float32).mean(axis=(1, 2))
    features = np.empty_like(pooled)
    features[order] = pooled
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=1000).fit(x, y)


def choose_c(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """Best validation accuracy over the coarse grid, then over 9 values within a decade of it."""
    def score(c: float) -> float:
        return float((_fit(x_train, y_train, c).predict(x_val) == y_val).mean())

    coarse = {c: score(c) for c in COARSE_C}
    def best_of(scores: dict[float, float]) -> float:  # ties (small validation sets): the C nearest 1
        return max(scores, key=lambda c: (scores[c], -abs(np.log10(c))))

    best = best_of(coarse)
    return float(best_of({c: score(c) for c in np.logspace(np.log10(best) - 1, np.log10(best) + 1, 9)}))


def _probe_once(reader: CacheReader, splits: dict[str, np.ndarray]) -> dict[str, Any]:
    labels = reader.column("label")
    x = {name: video_features(reader, videos) for name, videos in splits.items()}
    y = {name: labels[videos] for name, videos in splits.items()}
    if len(np.unique(y["train"])) < 2:
        raise ValueError(f"{reader.path}: the probe needs at least two classes in the training split")
    c = choose_c(x["train"], y["train"], x["val"], y["val"])
    model = _fit(np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]]), c)
    probs = np.zeros((len(y["test"]), len(reader.classes)))
    probs[:, model.classes_] = model.predict_proba(x["test"])
    return {"C": c, **classification_metrics(probs, y["test"], reader.classes)}


def linear_probe(reader: CacheReader, train: str = "train", val: str = "val", test: str = "test",
                 shots: int | None = None, seeds: int = 3) -> dict[str, Any]:
    """One probe on the full training split, or K-shot probes over `seeds` seeds (mean and std)."""
    if not shots:
        return {"kind": "linear probe", **_probe_once(reader, train_val_test(reader, train, val, test))}
    runs = [_probe_once(reader, train_val_test(reader, train, val, test, shots, seed)) for seed in range(seeds)]
    top1 = np.array([r["top1"] for r in runs])
    return {"kind": f"linear probe, {shots}-shot x {seeds} seeds", "top1": float(top1.mean()),
            "top1_std": float(top1.std()), "top5": float(np.mean([r["top5"] for r in runs])),
            "mean_class_accuracy": float(np.mean([r["mean_class_accuracy"] for r in runs])),
            "runs": [{"seed": s, "C": r["C"], "top1": r["top1"]} for s, r in enumerate(runs)]}
