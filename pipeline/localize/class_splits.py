"""Open-set class splits: which classes a localisation run may learn (seen) and which it is scored on (unseen).

Efficient-Prompt's open-set localisation takes the split files that STALE published (sauradip/STALE,
`config/zero_shot.py` reads them): a folder per ratio and dataset, e.g. `train_75_test_25/ActivityNet/`, holding
`train/split_K.list` (the seen classes, one name a line) and `test/split_K.list` (the unseen ones), ten splits
each. `--class-split` takes such a folder, a JSON file `{"splits": [{"seen": [...], "unseen": [...]}, ...]}`,
or the fraction of seen classes (`0.75`, `0.5`) for splits drawn at random: split K is a permutation of the
store's classes drawn from seed K, its first round(fraction x classes) classes seen. Either way `--class-split-index
K` picks the split; a split names every class of the store exactly once, on one side.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcache import InputError

RANDOM_SEED_BASE = 2022  # random split K is drawn from seed (RANDOM_SEED_BASE, K): the same K, the same split


@dataclass(frozen=True)
class ClassSplit:
    """Seen and unseen classes in the store's order; `source` says where they came from (for result records)."""

    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    source: str
    index: int


def class_split(spec: str, index: int, classes: tuple[str, ...]) -> ClassSplit:
    """Split `index` of `spec` (a STALE split folder, a JSON file, or a seen fraction) over `classes`."""
    path = Path(spec)
    if path.is_dir():
        seen, unseen = _stale_split(path, index)
    elif path.is_file():
        seen, unseen = _json_split(path, index)
    else:
        try:
            fraction = float(spec)
        except ValueError:
            raise InputError(f"--class-split {spec}: no such file or folder, and not a fraction of seen classes "
                             "such as 0.75") from None
        return random_split(fraction, index, classes)
    return _checked(path, seen, unseen, index, classes)


def random_split(fraction: float, index: int, classes: tuple[str, ...]) -> ClassSplit:
    """Split `index` of the seeded random splits with `fraction` of the classes seen."""
    seen_count = round(fraction * len(classes))
    if not 0 < fraction < 1 or not 0 < seen_count < len(classes):
        raise InputError(f"--class-split {fraction}: a fraction of seen classes must leave at least one class on "
                         f"each side of the store's {len(classes)} classes")
    order = np.random.default_rng([RANDOM_SEED_BASE, index]).permutation(len(classes))
    seen = set(order[:seen_count].tolist())
    return ClassSplit(tuple(c for k, c in enumerate(classes) if k in seen),
                      tuple(c for k, c in enumerate(classes) if k not in seen), f"random {fraction:g}", index)


def _stale_split(folder: Path, index: int) -> tuple[list[str], list[str]]:
    """STALE's layout: train/split_K.list (seen) and test/split_K.list (unseen), one class name a line."""
    names = []
    for side in ("train", "test"):
        path = folder / side / f"split_{index}.list"
        if not path.is_file():
            raise InputError(f"{folder}: no {side}/split_{index}.list (a STALE class-split folder holds "
                             "train/split_K.list and test/split_K.list)")
        names.append([line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()])
    return names[0], names[1]


def _json_split(path: Path, index: int) -> tuple[list[str], list[str]]:
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))["splits"]
        split = splits[index]
        return [str(c) for c in split["seen"]], [str(c) for c in split["unseen"]]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise InputError(f'{path}: expected JSON {{"splits": [{{"seen": [...], "unseen": [...]}}, ...]}}') from None
    except IndexError:
        raise InputError(f"{path}: holds {len(splits)} splits, no split {index}") from None


def _checked(path: Path, seen: list[str], unseen: list[str], index: int, classes: tuple[str, ...]) -> ClassSplit:
    """The split in the store's class order, after checking it names each of the store's classes once."""
    unknown = sorted(set(seen + unseen) - set(classes))
    if unknown:
        raise InputError(f"{path}: split {index} names classes the store does not have: {', '.join(unknown[:5])}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    both = sorted(set(seen) & set(unseen))
    if both:
        raise InputError(f"{path}: split {index} names {', '.join(both[:5])} both seen and unseen")
    missing = sorted(set(classes) - set(seen) - set(unseen))
    if missing:
        raise InputError(f"{path}: split {index} leaves out the store's classes {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}")
    if not seen or not unseen:
        raise InputError(f"{path}: split {index} has no {'seen' if not seen else 'unseen'} class")
    return ClassSplit(tuple(c for c in classes if c in set(seen)), tuple(c for c in classes if c in set(unseen)),
                      str(path.resolve()), index)
