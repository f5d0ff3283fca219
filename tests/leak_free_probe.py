"""The yardstick for heads trained with default options: a logistic-regression probe that sees nothing
but the training videos (C chosen by cross-validation on them), scored on the test videos."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.probe import search_c, video_features
from clipcache.pipeline.train.splits import train_val_test


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=2000).fit(x, y)


def training_features(store: Path) -> tuple[np.ndarray, np.ndarray]:
    """The probe's inputs (normalised frame-mean embeddings) and labels of the training videos."""
    reader = CacheReader(store)
    videos = train_val_test(reader)["train"]
    return video_features(reader, videos), reader.column("label")[videos]


def probe_top1(store: Path, folds: int = 3) -> float:
    """Test top-1 of the probe: C by CLIP's search scored with stratified k-fold cross-validation on the
    training videos, then fitted on all of them."""
    reader = CacheReader(store)
    test = train_val_test(reader)["test"]
    x, y = training_features(store)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y))

    def cross_validated(c: float) -> float:
        return float(np.mean([(_fit(x[a], y[a], c).predict(x[b]) == y[b]).mean() for a, b in splits]))

    model = _fit(x, y, search_c(cross_validated)[0])
    return float((model.predict(video_features(reader, test)) == reader.column("label")[test]).mean())
