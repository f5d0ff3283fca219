"""Linear probe as in the CLIP paper: L2-regularised logistic regression on frame-averaged embeddings, with
C chosen by CLIP's parametric search.

The split reported is never used for fitting or for choosing C. With a test split apart from validation,
C is chosen on validation and the probe refit on train+val before scoring test (CLIP's protocol). When the
split reported is the validation split (a store without a test split falls back to it, or `--split val`),
C is chosen by stratified cross-validation on the training videos and the probe is fitted on them alone.
Asked to score every video (`--split all`, e.g. of a store without splits), it scores each fold of a stratified
k-fold with a probe fitted on the other folds, its C chosen by cross-validation within those.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.results import METRICS, Result, Scores, describe, over_runs, single
from clipcache.pipeline.train.splits import ALL, EvalSplit, evaluation_split, train_val_test

FIRST_EXPONENTS = (-6, -4, -2, 0, 2, 4, 6)  # log10 C, where CLIP starts its search
FINEST_STEP = 1 / 8  # CLIP stops at 8 steps per decade
CV_FOLDS = 5  # at most; fewer when a class has fewer training videos
METHOD = "linear probe"
SMALL = 1 << 20  # feature matrices below this many values fit on one BLAS thread


def video_features(reader: CacheReader, videos: np.ndarray) -> np.ndarray:
    """Mean over frames and test views of the pooled embeddings, L2-normalised: (n, E)."""
    test_views = reader.settings.clips * reader.settings.crops
    order = np.argsort(videos)
    pooled = reader.pooled(videos[order])[:, :test_views].astype(np.float32).mean(axis=(1, 2))
    features = np.empty_like(pooled)
    features[order] = pooled
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    # Small problems fit on one BLAS thread: with OpenBLAS's threads on a busy 2-core machine the same CV
    # search took 9.8 s instead of 1.4 s (36 videos, 76 fits); large ones keep every thread.
    with warnings.catch_warnings(), threadpool_limits(1 if x.size < SMALL else None, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(x, y)


def search_c(score: Callable[[float], float]) -> tuple[float, dict[float, float]]:
    """CLIP's search: score C = 10^-6, 10^-4, ..., 10^6, then keep halving the step around the best
    exponent, scoring its two neighbours, down to 1/8 decade (15 fits in all). Ties (small validation
    sets) go to the C nearest 1. Returns the best C and every C tried with its score."""
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
    return 10.0 ** best(), {10.0 ** e: s for e, s in sorted(scores.items())}


def held_out_accuracy(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> Callable[[float], float]:
    """Accuracy on validation of a probe fitted on the training videos, as a function of C."""
    def score(c: float) -> float:
        return float((_fit(x, y, c).predict(x_val) == y_val).mean())
    return score


def cross_validated(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[float], float] | None:
    """Mean accuracy over stratified folds of the training videos as a function of C, or None when a class
    has a single training video."""
    counts = np.bincount(y)
    folds = min(CV_FOLDS, int(counts[counts > 0].min()))
    if folds < 2:
        return None
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))

    def score(c: float) -> float:
        return float(np.mean([(_fit(x[a], y[a], c).predict(x[b]) == y[b]).mean() for a, b in splits]))
    return score


def _probe_once(reader: CacheReader, videos: np.ndarray, features: np.ndarray, fit: dict[str, np.ndarray],
                scored: EvalSplit, seed: int) -> tuple[dict[str, Any], Scores]:
    """One probe: C chosen, fitted and scored as the module says; `features` are those of `videos` (sorted)."""
    labels = reader.column("label")

    def xy(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return features[np.searchsorted(videos, chosen)], labels[chosen]

    x_train, y_train = xy(fit["train"])
    if len(np.unique(y_train)) < 2:
        raise InputError(f"{reader.path}: the probe needs at least two classes in the training split")
    if np.isin(scored.videos, fit["val"]).any():  # the split reported is validation: choose C without it
        score, selection, fitted_on = cross_validated(x_train, y_train, seed), "cross-validation on train", "train"
        x_fit, y_fit = x_train, y_train
    else:
        x_val, y_val = xy(fit["val"])
        score, selection, fitted_on = held_out_accuracy(x_train, y_train, x_val, y_val), "val", "train+val"
        x_fit, y_fit = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    if score is None:
        c, sweep, selection = 1.0, {}, "none: C = 1 (a class has one training video, too few to cross-validate)"
    else:
        c, sweep = search_c(score)
    model = _fit(x_fit, y_fit, c)
    x_test, y_test = xy(scored.videos)
    probs = np.zeros((len(y_test), len(reader.classes)))
    probs[:, model.classes_] = model.predict_proba(x_test)
    details = {"seed": seed, "C": c, "selection": selection, "fitted_on": fitted_on,
               "train_videos": len(fit["train"]), "sweep": [{"C": k, "accuracy": v} for k, v in sweep.items()]}
    return details, Scores(scored.videos, y_test, probs, reader.classes, f"seed-{seed}")


def every_video_probe(reader: CacheReader, scored: EvalSplit, seed: int = 0) -> tuple[dict[str, Any], Scores]:
    """Each video of `scored` scored by a probe that never saw it: stratified folds (CV_FOLDS at most), each
    scored by a probe fitted on the other folds with C chosen by cross-validation within them."""
    y = reader.column("label")[scored.videos]
    counts = np.bincount(y)
    folds = min(CV_FOLDS, int(counts[counts > 0].min()))
    if folds < 2 or len(counts[counts > 0]) < 2:
        raise InputError(f"{reader.path}: --split {ALL} scores each video by cross-validation, which needs two "
                         "classes with two done videos each at least")
    x = video_features(reader, scored.videos)
    probs, chosen = np.zeros((len(y), len(reader.classes))), []
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        score = cross_validated(x[fit], y[fit], seed)
        c = 1.0 if score is None else search_c(score)[0]
        model = _fit(x[fit], y[fit], c)
        probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
        chosen.append(c)
    details = {"seed": seed, "C": chosen, "selection": "cross-validation within each fold's training videos",
               "fitted_on": f"the other {folds - 1} of {folds} stratified folds", "folds": folds}
    return details, Scores(scored.videos, y, probs, reader.classes, f"seed-{seed}")


def linear_probe(reader: CacheReader, train: str = "train", val: str = "val", test: str = "test",
                 shots: int | None = None, seeds: int = 3, fractions: tuple[float, float, float] | None = None
                 ) -> Result:
    """One probe on the full training split, or K-shot probes over `seeds` seeds (mean and std); every video
    by cross-validation when `test` is "all". `fractions` draw the splits of a store without splits."""
    if shots is not None and shots < 1:
        raise InputError(f"--shots must be at least 1, got {shots}")
    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {seeds}")
    scored = evaluation_split(reader, test, fractions=fractions)
    if test == ALL:
        if shots:
            raise InputError(f"--shots trains on a split: not with --split {ALL}, which cross-validates every video")
        details, scores = every_video_probe(reader, scored)
        description = describe(reader, method=METHOD, split=scored, held_out=True,
                               options={"cross_validated": True}, protocol="single")
        result = single(description, scores)
        result.record["runs"] = [{**details, **{k: v for k, v in scores.metrics().items() if k in METRICS}}]
        return result
    fits = [train_val_test(reader, train, val, test, shots, seed, fractions)
            for seed in (range(seeds) if shots else [0])]
    for fit in fits:
        shared = int(np.isin(scored.videos, fit["train"]).sum())
        if shared:
            raise InputError(f"{reader.path}: split {scored.name!r} holds {shared} videos of the training split "
                             f"{train!r}; the probe never reports on videos it is fitted on")
    needed = np.unique(np.concatenate([scored.videos, *[np.concatenate([f["train"], f["val"]]) for f in fits]]))
    features = video_features(reader, needed)
    runs = [_probe_once(reader, needed, features, fit, scored, seed) for seed, fit in enumerate(fits)]
    options = {"train_split": train, "val_split": val, "shots": shots, "seeds": seeds if shots else None}
    description = describe(reader, method=METHOD, split=scored, held_out=True, options=options,
                           protocol="few-shot" if shots else "single")
    records = [{**details, **{k: v for k, v in scores.metrics().items() if k in METRICS}} for details, scores in runs]
    if shots:
        return over_runs(description, records, [scores for _, scores in runs])
    result = single(description, runs[0][1])
    result.record["runs"] = records
    return result
