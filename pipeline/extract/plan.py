"""Which videos a run decodes: whole pending groups, and in finished groups the videos to retry.

A group is written whole, so a finished group is only ever rewritten in place: the videos retried are
decoded anew and every other video of the group keeps its stored bytes (see `cache.writer`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clipcache.cache.schema import FAILED, MISSING, PENDING, StoreSettings


@dataclass(frozen=True)
class GroupWork:
    group: int
    redo: tuple[int, ...]  # videos decoded now (store indices)
    keep: np.ndarray | None  # (n,) bool over the group: videos whose stored values stay; None: a new group


def plan_groups(status: np.ndarray, found: np.ndarray, settings: StoreSettings, owns: Callable[[int], bool],
                retry_failed: bool) -> list[GroupWork]:
    """Pending groups with every video whose file is there (the others are recorded missing); in
    finished groups, missing videos whose file has appeared and, with `retry_failed`, failed ones."""
    retry = ((status == MISSING) | (retry_failed & (status == FAILED))) & found
    work = []
    for group in filter(owns, range(settings.num_groups)):
        start, stop = settings.group_range(group)
        videos = np.arange(start, stop)
        if (status[start:stop] == PENDING).all():
            work.append(GroupWork(group, tuple(videos[found[start:stop]].tolist()), None))
        elif retry[start:stop].any():
            work.append(GroupWork(group, tuple(videos[retry[start:stop]].tolist()), ~retry[start:stop]))
    return work
