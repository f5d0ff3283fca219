"""Which videos train, validate and test: split names or list files, hold-outs and K-shot subsets.

A store whose inputs named no split (a `root/<class>/<video>` folder) gets splits drawn for it: stratified by
label, seeded, over every video of the store (done or not, so that a repair or a resumed extraction changes
no video's split), with train/val/test fractions `DRAWN_FRACTIONS` unless an evaluation names others. Training
and evaluation draw the same splits from the same store, so a drawn test split never trains or selects a head.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcache import InputError
from clipcache.cache.location import Store
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import FAILED, MISSING, PENDING

# Every status but done, by the name reports use: `left_out` counts each (a new status is one line here).
NOT_DONE = {FAILED: "failed", PENDING: "pending", MISSING: "missing"}
TEST, VAL = "test", "val"
ALL = "all"  # every done video, where the store has no split of that name: what nothing is fitted on can score
DRAWN_FRACTIONS = (0.7, 0.1, 0.2)  # train, val, test of the splits drawn for a store without splits
DRAWN_SEED = 0  # fixed, not the run's --seed: runs with other seeds train and test on the same drawn splits


@dataclass(frozen=True)
class Drawn:
    """How the splits of a store without splits were drawn (recorded in results, so they can be drawn again)."""

    fractions: tuple[float, float, float]
    seed: int = DRAWN_SEED

    def to_json(self) -> dict[str, object]:
        return {"fractions": list(self.fractions), "seed": self.seed, "stratified_by": "label"}


def draw_splits(labels: np.ndarray, fractions: tuple[float, float, float], seed: int = DRAWN_SEED) -> np.ndarray:
    """A split name per video: of each label (no label is a stratum too), a seeded `fractions` share each of
    train, val and test; a class of three or more videos gives at least one to each split of nonzero fraction,
    and train keeps at least one."""
    rng = np.random.default_rng(seed)
    names = np.full(len(labels), "train", dtype=object)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        counts = [round(len(members) * f) for f in fractions[1:]]
        if len(members) >= 3:
            counts = [max(c, 1) if f > 0 else 0 for c, f in zip(counts, fractions[1:])]
        while sum(counts) >= len(members) and sum(counts) > 0:  # train keeps one
            counts[int(np.argmax(counts))] -= 1
        names[members[:counts[0]]] = VAL
        names[members[counts[0]:counts[0] + counts[1]]] = TEST
    return names.astype(str)


def store_splits(reader: CacheReader, fractions: tuple[float, float, float] | None = None
                 ) -> tuple[np.ndarray, Drawn | None]:
    """The split of every store video: the store's own, or drawn (see the module) when no video has one."""
    column = reader.column("split")
    if (column != "").any():
        return column, None
    drawn = Drawn(fractions or DRAWN_FRACTIONS)
    return draw_splits(reader.column("label"), drawn.fractions, drawn.seed), drawn


def drawn_note(store: Store, drawn: Drawn | None) -> str | None:
    """The one line that says a store's splits were drawn, and how to choose others."""
    if drawn is None:
        return None
    shares = "/".join(f"{f:g}" for f in drawn.fractions)
    default = "/".join(f"{f:g}" for f in DRAWN_FRACTIONS)
    return (f"{store}: the store has no splits; using train/val/test drawn for it ({shares} of each class, seed "
            f"{drawn.seed}; train-head draws {default}, eval --split-fractions others; --split {ALL} scores every "
            "video)")


def split_videos(reader: CacheReader, spec: str, splits: np.ndarray | None = None,
                 fractions: tuple[float, float, float] | None = None) -> np.ndarray:
    """Done videos of a split given by name (the store's splits, drawn with `fractions` where it has none, or
    `splits`, a split per store video that another file gave; "all": every done video unless a split is named
    so) or by a file of paths (one per line, first column; relative to the input root as the store records
    them)."""
    done = reader.done
    if Path(spec).is_file():
        lines = Path(spec).read_text(encoding="utf-8-sig").splitlines()
        wanted = {line.split(",")[0].split()[0] for line in lines if line.strip()}
        paths = reader.column("path")
        chosen = np.array([i for i in done if paths[i] in wanted], dtype=np.int64)
        if len(chosen) == 0:
            raise InputError(f"{spec}: none of its paths is a done video of {reader.path}")
        return chosen
    splits = store_splits(reader, fractions)[0] if splits is None else splits
    if spec == ALL and not (splits == ALL).any():
        return done
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


def _present(reader: CacheReader, splits: np.ndarray | None, fractions: tuple[float, float, float] | None) -> str:
    """The split names there are, for messages, and where they came from."""
    names = store_splits(reader, fractions) if splits is None else (splits, None)
    listed = sorted(str(name) for name in set(names[0]) - {""}) or "none"
    return f"splits present: {listed}{', drawn: the store has none' if names[1] else ''}"


def train_val_test(reader: CacheReader, train: str = "train", val: str = "val", test: str = "test",
                   shots: int | None = None, seed: int = 0, fractions: tuple[float, float, float] | None = None
                   ) -> dict[str, np.ndarray]:
    """The three splits of labelled done videos; without a validation split, a stratified seeded 10% of
    train is held out. "test" is empty when the store has no such split."""
    train_videos = labelled(reader, split_videos(reader, train, fractions=fractions), "training")
    if len(train_videos) == 0:
        raise InputError(f"{reader.path}: no done videos in training split {train!r} "
                         f"({_present(reader, None, fractions)}); name one with --train-split (a split or a file "
                         "of video paths)")
    if train == ALL or test == ALL:
        raise InputError("split 'all' holds every video: it cannot train beside a test split; name the training "
                         "and test splits apart (--train-split, --split)")
    val_videos = split_videos(reader, val, fractions=fractions)
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
            "test": labelled(reader, split_videos(reader, test, fractions=fractions), "test")}


@dataclass(frozen=True)
class EvalSplit:
    """The videos an evaluation scores and the split they are: `name` is the split scored, `requested` the
    one asked for; they differ only after the test -> val fallback."""

    name: str
    requested: str
    videos: np.ndarray
    drawn: Drawn | None = None  # how the splits were drawn, for a store without splits

    @property
    def fell_back(self) -> bool:
        return self.name != self.requested


def evaluation_split(reader: CacheReader, requested: str = TEST, splits: np.ndarray | None = None,
                     named_by: Path | None = None, labels: bool = True,
                     fractions: tuple[float, float, float] | None = None) -> EvalSplit:
    """Done videos of `requested` (labelled ones where `labels` is needed: classification). `splits` (a split
    per store video, see `split_videos`) replaces the store's split column; `named_by` is the file it comes
    from; `fractions` draw the splits of a store without splits. The one fallback rule of the project: "test"
    asked of a store (or `splits`) without a test split scores the "val" split instead (the caller reports it;
    see `EvalSplit.fell_back`)."""
    name, videos = requested, split_videos(reader, requested, splits, fractions)
    if len(videos) == 0 and requested == TEST:
        name, videos = VAL, split_videos(reader, VAL, splits, fractions)
    if len(videos) == 0:
        where = f" with the splits of {named_by}" if named_by else ""
        raise InputError(f"{reader.path}{where}: no done videos in split {requested!r} "
                         f"({_present(reader, splits, fractions)}); name one with --split (a split, a file of "
                         f"video paths, or {ALL!r})")
    drawn = store_splits(reader, fractions)[1] if splits is None and not Path(requested).is_file() else None
    if not labels:
        return EvalSplit(name, requested, videos, drawn)
    if (reader.column("label")[videos] < 0).all():
        raise InputError(f"{reader.path}: split {name!r} has no labelled videos to score")
    return EvalSplit(name, requested, labelled(reader, videos, "evaluation"), drawn)


def left_out(reader: CacheReader) -> dict[str, int]:
    """How many videos of each status but done: their features cannot be used."""
    return {name: int((reader.status == status).sum()) for status, name in NOT_DONE.items()}


def left_out_note(counts: dict[str, int], store: str) -> str | None:
    """The one line that reports unusable videos, or None when there are none."""
    if not any(counts.values()):
        return None
    parts = [f"{n} {state}" for state, n in counts.items() if n]
    return f"{store}: {' and '.join(parts)} videos left out (clipcache info {store} lists them)"
