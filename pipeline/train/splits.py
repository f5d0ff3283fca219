"""Which videos train, validate and test: split names or list files, hold-outs and K-shot subsets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import FAILED, MISSING, PENDING

# Every status but done, by the name reports use: `left_out` counts each (a new status is one line here).
NOT_DONE = {FAILED: "failed", PENDING: "pending", MISSING: "missing"}
TEST, VAL = "test", "val"


def split_videos(reader: CacheReader, spec: str, splits: np.ndarray | None = None) -> np.ndarray:
    """Done videos of a split given by name (the store's split column, or `splits`, a split per store video
    that another file gave) or by a file of paths (one per line, first column; relative to the input root as
    the store records them)."""
    done = reader.done
    if Path(spec).is_file():
        lines = Path(spec).read_text(encoding="utf-8-sig").splitlines()
        wanted = {line.split(",")[0].split()[0] for line in lines if line.strip()}
        paths = reader.column("path")
        chosen = np.array([i for i in done if paths[i] in wanted], dtype=np.int64)
        if len(chosen) == 0:
            raise InputError(f"{spec}: none of its paths is a done video of {reader.path}")
        return chosen
    splits = reader.column("split") if splits is None else splits
    return done[splits[done] == spec]


def labelled(reader: CacheReader, videos: np.ndarray, what: str) -> np.ndarray:
    """Refuse videos without a label where labels are needed."""
    labels = reader.column("label")[videos]
    if (labels < 0).any():
        raise InputError(f"{reader.path}: {int((labels < 0).sum())} {what} videos have no label")
    return videos


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) positions: `fraction` of each class (at least one where a class has two or more)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = round(len(members) * fraction) if len(members) > 1 else 0
        count = max(count, 1) if len(members) > 1 else 0
        held.extend(members[:count])
        keep.extend(members[count:])
    return np.sort(np.array(keep, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


def k_shot(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Positions of a K-shot subset: K random videos per class (all of a class with fewer)."""
    if shots < 1:
        raise InputError(f"--shots must be at least 1, got {shots}")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:shots] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def train_val_test(reader: CacheReader, train: str = "train", val: str = "val", test: str = "test",
                   shots: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The three splits of labelled done videos; without a validation split, a stratified seeded 10% of
    train is held out. "test" is empty when the store has no such split."""
    train_videos = labelled(reader, split_videos(reader, train), "training")
    if len(train_videos) == 0:
        raise InputError(f"{reader.path}: no done videos in training split {train!r} "
                         f"(splits present: {sorted(set(reader.column('split')) - {''}) or 'none'})")
    val_videos = split_videos(reader, val)
    labels = reader.column("label")
    if len(val_videos) == 0:
        keep, held = stratified_holdout(labels[train_videos], 0.1, seed)
        train_videos, val_videos = train_videos[keep], train_videos[held]
    if len(val_videos) == 0:
        raise InputError(f"{reader.path}: no validation split {val!r} and too few training videos to hold some "
                         "out (a class needs two); name one with --val-split")
    if shots:
        train_videos = train_videos[k_shot(labels[train_videos], shots, seed)]
    return {"train": train_videos, "val": labelled(reader, val_videos, "validation"),
            "test": labelled(reader, split_videos(reader, test), "test")}


@dataclass(frozen=True)
class EvalSplit:
    """The videos an evaluation scores and the split they are: `name` is the split scored, `requested` the
    one asked for; they differ only after the test -> val fallback."""

    name: str
    requested: str
    videos: np.ndarray

    @property
    def fell_back(self) -> bool:
        return self.name != self.requested


def evaluation_split(reader: CacheReader, requested: str = TEST, splits: np.ndarray | None = None,
                     named_by: Path | None = None, labels: bool = True) -> EvalSplit:
    """Done videos of `requested` (labelled ones where `labels` is needed: classification). `splits` (a split
    per store video, see `split_videos`) replaces the store's split column; `named_by` is the file it comes
    from. The one fallback rule of the project: "test" asked of a store (or `splits`) without a test split
    scores the "val" split instead (the caller reports it; see `EvalSplit.fell_back`)."""
    name, videos = requested, split_videos(reader, requested, splits)
    if len(videos) == 0 and requested == TEST:
        name, videos = VAL, split_videos(reader, VAL, splits)
    if len(videos) == 0:
        present = set(reader.column("split") if splits is None else splits) - {""}
        where = f" with the splits of {named_by}" if named_by else ""
        raise InputError(f"{reader.path}{where}: no done videos in split {requested!r} "
                         f"(splits present: {sorted(present) or 'none'})")
    if not labels:
        return EvalSplit(name, requested, videos)
    if (reader.column("label")[videos] < 0).all():
        raise InputError(f"{reader.path}: split {name!r} has no labelled videos to score")
    return EvalSplit(name, requested, labelled(reader, videos, "evaluation"))


def left_out(reader: CacheReader) -> dict[str, int]:
    """How many videos of each status but done: their features cannot be used."""
    return {name: int((reader.status == status).sum()) for status, name in NOT_DONE.items()}


def left_out_note(counts: dict[str, int], store: str) -> str | None:
    """The one line that reports unusable videos, or None when there are none."""
    if not any(counts.values()):
        return None
    parts = [f"{n} {state}" for state, n in counts.items() if n]
    return f"{store}: {' and '.join(parts)} videos left out (clipcache info {store} lists them)"
