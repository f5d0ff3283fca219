"""Linear probe as in the CLIP paper: L2-regularised logistic regression on frame-averaged embeddings,
C chosen on validation by CLIP's parametric search, refit on train+val, reported on test."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.metrics import classification_metrics
from clipcache.pipeline.train.splits import left_out, train_val_test

FIRST_EXPONENTS = (-6, -4, -2, 0, 2, 4, 6)  # log10 C, where CLIP starts its search
FINEST_STEP = 1 / 8  # CLIP stops at 8 steps per decade


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
        return LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(x, y)


def search_c(score: Callable[[float], float]) -> float:
    """CLIP's search: score C = 10^-6, 10^-4, ..., 10^6, then keep halving the step around the best
    exponent, scoring its two neighbours, down to 1/8 decade (15 fits in all). Ties (small validation
    sets) go to the C nearest 1."""
    scores = {float(e): score(10.0 ** e) for e in FIRST_EXPONENTS}

    def best() -> float:
        return max(scores, key=lambda e: (scores[e], -abs(e)))

    step = float(FIRST_EXPONENTS[1] - FIRST_EXPONENTS[0])
    while step > FINEST_STEP:
        step /= 2
        centre = best()
        for exponent in (centre - step, centre + step):
            if FIRST_EXPONENTS[0] <= exponent <= FIRST_EXPONENTS[-1] and exponent not in scores:
                scores[exponent] = score(10.0 ** exponent)
    return 10.0 ** best()


def _probe_once(reader: CacheReader, splits: dict[str, np.ndarray]) -> dict[str, Any]:
    labels = reader.column("label")
    x = {name: video_features(reader, videos) for name, videos in splits.items() if len(videos)}
    y = {name: labels[videos] for name, videos in splits.items()}
    if len(np.unique(y["train"])) < 2:
        raise InputError(f"{reader.path}: the probe needs at least two classes in the training split")
    c = search_c(lambda c: float((_fit(x["train"], y["train"], c).predict(x["val"]) == y["val"]).mean()))
    if "test" in x and not np.array_equal(splits["test"], splits["val"]):
        model, tested = _fit(np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]]), c), "test"
    else:  # no separate test split: report on validation, which chose C, without fitting on it
        model, tested = _fit(x["train"], y["train"], c), "val"
    probs = np.zeros((len(y[tested]), len(reader.classes)))
    probs[:, model.classes_] = model.predict_proba(x[tested])
    return {"C": c, "split": tested, **classification_metrics(probs, y[tested], reader.classes)}


def linear_probe(reader: CacheReader, train: str = "train", val: str = "val", test: str = "test",
                 shots: int | None = None, seeds: int = 3) -> dict[str, Any]:
    """One probe on the full training split, or K-shot probes over `seeds` seeds (mean and std)."""
    if not shots:
        return {"kind": "linear probe", "left_out": left_out(reader),
                **_probe_once(reader, train_val_test(reader, train, val, test))}
    runs = [_probe_once(reader, train_val_test(reader, train, val, test, shots, seed)) for seed in range(seeds)]
    top1 = np.array([r["top1"] for r in runs])
    return {"kind": f"linear probe, {shots}-shot x {seeds} seeds", "split": runs[0]["split"],
            "left_out": left_out(reader), "top1": float(top1.mean()), "top1_std": float(top1.std()),
            "top5": float(np.mean([r["top5"] for r in runs])),
            "mean_class_accuracy": float(np.mean([r["mean_class_accuracy"] for r in runs])),
            "runs": [{"seed": s, "C": r["C"], "top1": r["top1"]} for s, r in enumerate(runs)]}
