"""Temporal segments kept in a store (`segments/`): one row per annotated segment of an untrimmed video.

Columns, one array each along the dimension `segment`, every chunk ending with crc32c and written even when it
holds only zeros (as the store's table arrays): `video` int32 (store video index), `start`/`end` float64 seconds,
`label` int32 (index into the attribute `classes`, -1 for an ambiguous region), `ambiguous` bool. Rows are sorted
by video, then start, so one video's segments are one contiguous run. Attributes: `classes`, `sources` (name and
sha256 of every annotation file), `format` (the annotation format), `counts` (segments per problem kind, see
`pipeline/extract/annotations.py`) and `rows`.

Replacing a table never leaves a half one where readers look. The new table is written whole into
`.segments-partial/segments`, the current one is moved to `.segments-old/segments`, the new one is renamed to
`segments`, then the old one is removed. The two hidden folders hold no `zarr.json`, so zarr never takes them
for nodes. A reader takes `segments`, or, when a writer died between the two renames, the old table, which is
whole; so at every instant the table read is one that was written completely. Writers hold the store's lock
(`cache/lock.py`), so one fixed partial folder suffices: what a dead writer left there is removed.
Object storage has no rename: there the table is deleted and written in place, its attributes last, so a
writer stopped meanwhile leaves a table that reads as damaged (never as a shorter one) until the next run
with the annotations writes it again.

Damage raises: a flipped byte fails the crc32c, a missing chunk file (zarr would read fill values) is found
by its absence, and every column must have the recorded number of rows.
"""
from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from clipcache import InputError
from clipcache.cache.chunks import DECODE_ERRORS, damaged_rows
from clipcache.cache.location import Store, StoreUrl, parse_store
from clipcache.cache.objects import StoreObjects
from clipcache.cache.schema import dimension_names
from clipcache.cache.store import consolidate
from clipcache.cache.writer import TABLE_COMPRESSORS, WRITE_EMPTY

GROUP = "segments"
PARTIAL, OLD = ".segments-partial", ".segments-old"  # hold the table in a subfolder: not zarr nodes themselves
COLUMNS = {"video": "int32", "start": "float64", "end": "float64", "label": "int32", "ambiguous": "bool"}
AMBIGUOUS_LABEL = -1


@dataclass(frozen=True)
class SegmentTable:
    """The segments of a store's videos, column by column (see the module docstring)."""

    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    ambiguous: np.ndarray
    classes: tuple[str, ...]
    format: str
    sources: tuple[dict[str, str], ...] = ()  # {"name": file name, "sha256": of its bytes}
    counts: dict[str, int] = field(default_factory=dict)  # problem kind -> segments (lines, videos) affected

    def __len__(self) -> int:
        return len(self.video)

    def columns(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name), dtype=dtype) for name, dtype in COLUMNS.items()}


class SegmentsDamageError(InputError):
    """The store's segment table is damaged: a chunk is missing, fails its checksum or rows are missing."""


def write_segments(store: Store | str, table: SegmentTable) -> None:
    """Replace the store's segment table by `table` (see the module docstring for why a crash is harmless).
    Call it holding the store's lock."""
    store = parse_store(store)
    objects = StoreObjects.of(store, read_only=False)
    if not objects.exists("zarr.json"):
        raise InputError(f"{store}: not a zarr store, so it cannot hold segments")
    columns = table.columns()
    if any(len(values) != len(table) for values in columns.values()):
        raise ValueError(f"segment columns differ in length: { {k: len(v) for k, v in columns.items()} }")
    if isinstance(store, StoreUrl):  # no rename: written in place, its attributes (and `rows`) last
        objects.delete_all(GROUP)
        _write_table(zarr.open_group(objects.store, path=GROUP, mode="w"), table, columns)
        consolidate(store)
        return
    partial, old, current = store / PARTIAL, store / OLD, store / GROUP
    shutil.rmtree(partial, ignore_errors=True)
    _write_table(zarr.open_group(str(partial / GROUP), mode="w"), table, columns)
    if current.exists():
        shutil.rmtree(old, ignore_errors=True)  # an old table left beside a whole current one
        old.mkdir()
        current.rename(old / GROUP)
    (partial / GROUP).rename(current)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    consolidate(store)


def _write_table(group: zarr.Group, table: SegmentTable, columns: dict[str, np.ndarray]) -> None:
    rows = len(table)
    for name, values in columns.items():
        array = group.create_array(name, shape=(rows,), chunks=(max(rows, 1),), dtype=COLUMNS[name],
                                   dimension_names=dimension_names(f"segments/{name}"), compressors=TABLE_COMPRESSORS,
                                   config=WRITE_EMPTY)
        array[...] = values
    group.attrs.update({"classes": list(table.classes), "format": table.format, "sources": list(table.sources),
                        "counts": dict(table.counts), "rows": rows})


def read_segments(store: Store | str) -> SegmentTable | None:
    """The store's segment table, checked; None when the store has none."""
    store = parse_store(store)
    objects = StoreObjects.of(store)
    where = GROUP if objects.exists(f"{GROUP}/zarr.json") else f"{OLD}/{GROUP}"
    if not objects.exists(f"{where}/zarr.json"):
        return None
    try:
        group = zarr.open_group(objects.store, path=where, mode="r", use_consolidated=False)
        attrs: dict[str, Any] = dict(group.attrs)
        rows = int(attrs["rows"])
        columns = {name: _read_column(group[name], rows, f"{store}: {GROUP}/{name}") for name in COLUMNS}
        return SegmentTable(**columns, classes=tuple(attrs["classes"]), format=str(attrs["format"]),
                            sources=tuple(attrs.get("sources", ())), counts=dict(attrs.get("counts", {})))
    except SegmentsDamageError:
        raise
    except (KeyError, TypeError, ValueError, zarr.errors.NodeNotFoundError) as error:  # metadata or attributes
        raise _damage(f"{store}: {GROUP}", str(error).splitlines()[0][:80]) from None


def _read_column(array: zarr.Array, rows: int, where: str) -> np.ndarray:
    if array.shape != (rows,):
        raise _damage(where, f"{array.shape[0]} rows, its table has {rows}")
    for block in range(-(-rows // array.chunks[0])):
        damaged = damaged_rows(array, block)
        if damaged:
            raise _damage(where, next(iter(damaged.values())))
    try:
        return array[...]
    except DECODE_ERRORS as error:
        raise _damage(where, f"cannot be decoded: {str(error).splitlines()[0][:80]}") from None


def _damage(where: str, why: str) -> SegmentsDamageError:
    return SegmentsDamageError(f"{where} is damaged ({why}); writing the annotations again replaces the table")


def clip_to_duration(start: float, end: float, duration: float) -> tuple[float, float] | None:
    """A segment within a video of `duration` seconds: its end clipped to the video's end; None when it starts
    at or after the end (nothing of it is in the video)."""
    if start >= duration:
        return None
    return start, min(end, duration)


def clip_segments(table: SegmentTable, durations: Mapping[int, float]) -> tuple[SegmentTable, list[tuple[str, str]]]:
    """`clip_to_duration` on every segment of a video whose duration is known now (the rule readers apply: the
    file's times are kept in the store), and (kind, description) of each change: `past the end` (clipped) or
    `after the end` (dropped). Pass decoded videos only (a store holds duration 0 for videos not done); segments
    of other videos, or of a duration that is not finite, are kept as they are."""
    keep = np.ones(len(table), dtype=bool)
    end = table.end.copy()
    events = []
    for row in range(len(table)):
        duration = durations.get(int(table.video[row]))
        if duration is None or not math.isfinite(duration) or end[row] <= duration:
            continue
        what = f"video {table.video[row]} [{table.start[row]:g}, {end[row]:g}] past its duration {duration:g} s"
        clipped = clip_to_duration(float(table.start[row]), float(end[row]), float(duration))
        if clipped is None:
            keep[row] = False
            events.append(("after the end", what))
        else:
            end[row] = clipped[1]
            events.append(("past the end", what))
    return SegmentTable(table.video[keep], table.start[keep], end[keep], table.label[keep], table.ambiguous[keep],
                        table.classes, table.format, table.sources, table.counts), events
