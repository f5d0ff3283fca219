"""Which videos train, validate and test: split names or list files, hold-outs and K-shot subsets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cache.reader import CacheReader


def split_videos(reader: CacheReader, spec: str) -> np.ndarray:
    """Done videos of a split given by name (the store's split column) or by a file of paths
    (one per line, first column; relative to the input root as the store records them)."""
    done = reader.done
    if Path(spec).is_file():
        wanted = {line.split(",")[0].split()[0] for line in Path(spec).read_text().splitlines() if line.strip()}
        paths = reader.column("path")
        chosen = np.array([i for i in done if paths[i] in wanted], dtype=np.int64)
        if len(chosen) == 0:
            raise ValueError(f"{spec}: none of its paths is a done video of {reader.path}")
        return chosen
    splits = reader.column("split")
    return done[splits[done] == spec]


def labelled(reader: CacheReader, videos: np.ndarray, what: str) -> np.ndarray:
    """Refuse videos without a label where labels are needed."""
    labels = reader.column("label")[videos]
    if (labels < 0).any():
        raise ValueError(f"{reader.path}: {int((labels < 0).sum())} {what} videos have no label")
    return videos


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) positions: `fraction` of each class (at least one where a class has two or more)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(len(members) * fraction)) if len(members) > 1 else 0
        count = max(count, 1) if len(members) > 1 else 0
        held.extend(members[:count])
        keep.extend(members[count:])
    return np.sort(np.array(keep, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


def k_shot(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Positions of a K-shot subset: K random videos per class (all of a class with fewer)."""
    if shots < 1:
        raise ValueError(f"--shots must be at least 1, got {shots}")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:shots] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def train_val_test(reader: CacheReader, train: str = "train", val: str = "val", test: str = "test",
                   shots: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The three splits; without a validation split, a stratified seeded 10% of train is held out;
    without a test split, evaluation falls back to validation."""
    train_videos = labelled(reader, split_videos(reader, train), "training")
    if len(train_videos) == 0:
        raise ValueError(f"{reader.path}: no done videos in training split {train!r} "
                         f"(splits present: {sorted(set(reader.column('split')) - {''}) or 'none'})")
    val_videos = split_videos(reader, val)
    labels = reader.column("label")
    if len(val_videos) == 0:
        keep, held = stratified_holdout(labels[train_videos], 0.1, seed)
        train_videos, val_videos = train_videos[keep], train_videos[held]
    if shots:
        train_videos = train_videos[k_shot(labels[train_videos], shots, seed)]
    test_videos = split_videos(reader, test)
    return {"train": train_videos, "val": labelled(reader, val_videos, "validation"),
            "test": labelled(reader, test_videos if len(test_videos) else val_videos, "test")}
