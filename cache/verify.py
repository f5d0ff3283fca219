"""`clipcache verify`: check every chunk of a store and name each damaged video and array.

Checksummed arrays (`clipcache/2`) are checked from their bytes: a written chunk must exist and match
its crc32c, which is all reading could find and is cheaper than decoding. Arrays of older stores are
decoded, so only a missing or undecodable chunk shows there. Per-video arrays are checked group by
group: a group's chunks exist once its status is written (the table's path, label, split and status
exist from creation), so a missing chunk of a pending group is no damage.

Metadata is covered too: every folder of the store that is a zarr node must hold its zarr.json. Without it
zarr no longer lists what the folder holds (a group's arrays vanish from listings, xarray and consolidation),
although a direct path may still read an array, so reading alone would never notice.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from clipcache import InputError
from clipcache.cache.chunks import DECODE_ERRORS, chunk_exists, damaged_rows, is_checked, rows_per_file
from clipcache.cache.dense import video_damage
from clipcache.cache.location import Store, is_remote, parse_store
from clipcache.cache.objects import StoreObjects
from clipcache.cache.reader import StoreDamageError, read_block
from clipcache.cache.schema import (
    DONE,
    PENDING,
    STATUSES,
    TABLE_AT_CREATION,
    VIDEO_STRING_ARRAYS,
    StoreSettings,
    check_format,
    numeric_columns,
    scale_name,
    tokens_name,
)
from clipcache.cache.store import open_root


@dataclass
class Damage:
    array: str
    videos: list[int]  # empty for arrays that are not per video (frozen/, text/)
    reason: str
    paths: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    store: str
    format: str
    videos: int
    arrays: int
    checksums: bool  # every array carries crc32c checksums
    damage: list[Damage]

    @property
    def intact(self) -> bool:
        return not self.damage

    def damaged_videos(self) -> set[int]:
        return {video for d in self.damage for video in d.videos}

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "intact": self.intact}


def video_arrays(settings: StoreSettings) -> list[str]:
    """Every per-video array a store with these settings holds (a dense store's time series apart)."""
    names = [f"videos/{name}" for name in (*VIDEO_STRING_ARRAYS, *numeric_columns(settings.layout))]
    if settings.dense:
        return names
    names.append("videos/frame_index")
    for layer in settings.layers:
        names.append(tokens_name(layer))
        if settings.dtype == "int8":
            names.append(scale_name(layer))
    return [*names, "pooled"]


def verify_store(path: Store | str, owns: Callable[[int], bool] = lambda group: True, whole: bool = True
                 ) -> VerifyReport:
    """Check the per-video arrays' groups that `owns` accepts, and with `whole` the arrays that are not
    per video (a job-array shard checks its own share)."""
    path = parse_store(path)
    if isinstance(path, Path) and not path.is_dir():
        raise InputError(f"{path}: {'not a store (a store is a folder)' if path.exists() else 'no such store'}")
    try:
        root = open_root(path)
        attrs = dict(root.attrs)
    except (FileNotFoundError, ValueError, zarr.errors.NodeNotFoundError) as error:
        what = "no such store" if isinstance(error, zarr.errors.NodeNotFoundError) and is_remote(path) else \
            f"not a readable zarr store ({str(error).splitlines()[0][:80]})"
        raise InputError(f"{path}: {what}") from None
    version = check_format(attrs, str(path))
    settings = StoreSettings.from_attrs(attrs, str(path))
    _check_lengths(root, settings, path)
    damage: list[Damage] = []
    written = _written_groups(root, settings, version, damage, owns)
    arrays, checked = 0, True
    for name in video_arrays(settings):
        array = _open(root, name, damage, list(range(settings.num_videos)))
        if array is None:
            continue
        arrays, checked = arrays + 1, checked and is_checked(array)
        at_creation = version >= 2 and name.removeprefix("videos/") in TABLE_AT_CREATION
        if name != "videos/status":
            damage += _video_array_damage(array, name, owns, lambda g: at_creation or written[g])
    for name, array in _other_arrays(root) if whole else []:
        arrays, checked = arrays + 1, checked and is_checked(array)
        damage += _array_damage(array, name)
    damage += _value_damage(root, settings, damage, owns)
    if settings.dense:
        damage += _dense_damage(root, settings, damage, owns)
    if whole:
        named = {d.array for d in damage}
        damage += [d for d in _metadata_damage(root) if d.array not in named]
    _name_paths(root, damage)
    return VerifyReport(str(path), attrs["format"], settings.num_videos, arrays, checked, damage)


def _check_lengths(root: zarr.Group, settings: StoreSettings, path: Store) -> None:
    """Every per-video array must hold the videos the root's attributes count: when they disagree, the
    attributes or the arrays were damaged or edited, and no chunk can be mapped to its videos."""
    for name in video_arrays(settings):
        try:
            rows = root[name].shape[0]
        except (KeyError, ValueError):  # missing or unreadable: reported as damage
            continue
        if rows != settings.num_videos:
            raise InputError(f"{path}: {name} holds {rows} videos, the store's attributes say {settings.num_videos} "
                             "(num_videos); its zarr.json or that array was damaged or edited")


GROUP_METADATA_MISSING = "group metadata missing (its zarr.json was deleted)"
ARRAY_METADATA_MISSING = "array metadata missing (its zarr.json was deleted)"


@contextmanager
def unlisted_quiet() -> Iterator[None]:
    """Without zarr's warning about a folder that lacks its zarr.json while walking a group: such a folder is
    damage that `verify` names in one line (and `--repair` restores or names)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component")
        yield


def _metadata_damage(root: zarr.Group) -> list[Damage]:
    """Folders of the store that lack their zarr.json: a group's (its members are then unlisted) or an
    array's (a folder holding chunks, `c/`). Hidden folders (a writer's partial work, a lock) are no nodes,
    and an array's chunk folders are not walked."""
    objects = StoreObjects(root.store)
    files, subfolders = objects.tree()
    found, todo = [], ["."]
    while todo:  # depth first, in name order, as a walk of the folder goes
        name = todo.pop()
        below = sorted(sub for sub in subfolders.get(name, ()) if not sub.startswith("."))
        holds_chunks = "c" in below
        key = "zarr.json" if name == "." else f"{name}/zarr.json"
        if "zarr.json" in files.get(name, ()):
            kind = _node_type(objects.read(key))
            if kind == "array" or kind is None and holds_chunks:
                below = []
            if kind is None and name != ".":
                found.append(Damage(name, [], "metadata unreadable (zarr.json is not valid JSON metadata)"))
        else:
            found.append(Damage(name, [], ARRAY_METADATA_MISSING if holds_chunks else GROUP_METADATA_MISSING))
            if holds_chunks:
                below = []
        todo += [sub if name == "." else f"{name}/{sub}" for sub in reversed(below)]
    return found


def _node_type(metadata: bytes | None) -> str | None:
    """"array" or "group", or None when the bytes are not a node's metadata."""
    try:
        kind = json.loads(metadata or b"").get("node_type")
    except (ValueError, AttributeError):
        return None
    return kind if kind in ("array", "group") else None


def _open(root: zarr.Group, name: str, damage: list[Damage], videos: list[int]) -> zarr.Array | None:
    try:
        return root[name]
    except KeyError:
        damage.append(Damage(name, videos, "array missing"))
    except ValueError as error:  # its zarr.json is not valid metadata
        damage.append(Damage(name, videos, f"metadata unreadable ({str(error).splitlines()[0][:60]})"))
    return None


def _written_groups(root: zarr.Group, settings: StoreSettings, version: int, damage: list[Damage],
                    owns: Callable[[int], bool]) -> list[bool]:
    """Per group, whether its status was written; a damaged status chunk counts as written (its
    videos' data must then be redone anyway)."""
    status = _open(root, "videos/status", damage, list(range(settings.num_videos)))
    if status is None:
        return [True] * settings.num_groups
    written = []
    for group in range(settings.num_groups):
        start, stop = settings.group_range(group)
        if not owns(group):
            written.append(False)
            continue
        try:
            values = read_block(status, group, must_exist=version >= 2)
        except StoreDamageError:
            damage.append(Damage("videos/status", list(range(start, stop)), _reason(status, group)))
            written.append(True)
            continue
        written.append(bool((values != PENDING).any()))
    return written


def _reason(array: zarr.Array, block: int) -> str:
    damaged = damaged_rows(array, block)
    return next(iter(damaged.values())) if damaged else "cannot be decoded"


def _video_array_damage(array: zarr.Array, name: str, owns: Callable[[int], bool],
                        must_exist: Callable[[int], bool]) -> list[Damage]:
    found = []
    per_file = rows_per_file(array)
    for block in range(-(-array.shape[0] // per_file)):
        start = block * per_file
        if not owns(block) or not must_exist(block) and not chunk_exists(array, block):
            continue
        if is_checked(array):
            by_reason: dict[str, list[int]] = {}
            for row, why in damaged_rows(array, block).items():
                by_reason.setdefault(why, []).append(start + row)
            found += [Damage(name, rows, why) for why, rows in by_reason.items()]
            continue
        try:
            read_block(array, block, must_exist=False)
        except StoreDamageError:
            rows = list(range(start, min(start + per_file, array.shape[0])))
            found.append(Damage(name, rows, "cannot be decoded"))
    return found


def _other_arrays(root: zarr.Group) -> list[tuple[str, zarr.Array]]:
    """Arrays that are not per video: frozen/ parameters, text/ tables and the segments/ table, found by
    walking."""
    found = []

    def walk(group: zarr.Group, prefix: str) -> None:
        for name, node in group.members():
            if isinstance(node, zarr.Array):
                found.append((f"{prefix}{name}", node))
            else:
                walk(node, f"{prefix}{name}/")

    with unlisted_quiet():
        for top in ("frozen", "text", "segments"):
            if top in root:
                walk(root[top], f"{top}/")
    return found


def _array_damage(array: zarr.Array, name: str) -> list[Damage]:
    whole_rows = (array.shards or array.chunks)[1:] == array.shape[1:]
    if is_checked(array) and whole_rows:
        reasons = {why for block in range(-(-array.shape[0] // rows_per_file(array)))
                   for why in damaged_rows(array, block).values()}
        return [Damage(name, [], why) for why in sorted(reasons)]
    try:
        array[...]
    except DECODE_ERRORS as error:
        return [Damage(name, [], f"cannot be decoded ({str(error).splitlines()[0][:60]})")]
    return []


def _value_damage(root: zarr.Group, settings: StoreSettings, damage: list[Damage], owns: Callable[[int], bool]
                  ) -> list[Damage]:
    """Values no writer produces: a status outside the known ones, a label outside the classes."""
    unreadable = {d.array for d in damage}
    found = []
    checks = (("videos/status", lambda v: ~np.isin(v, STATUSES), "status value unknown to this clipcache"),
              ("videos/label", lambda v: (v < -1) | (v >= len(settings.classes)), "label outside the store's classes"))
    for name, bad, why in checks:
        if name in unreadable:
            continue
        values = root[name][:]
        rows = [row for row in np.flatnonzero(bad(values)).tolist() if owns(row // settings.shard_videos)]
        if rows:
            found.append(Damage(name, rows, why))
    return found


def _dense_damage(root: zarr.Group, settings: StoreSettings, damage: list[Damage], owns: Callable[[int], bool]
                  ) -> list[Damage]:
    """Every done video's time series (dense/<v>/) must be whole: each array present, as long as the table
    says, every chunk there and intact. Videos whose status or length is unreadable are already damaged."""
    unreadable = {v for d in damage if d.array in ("videos/status", "videos/samples") for v in d.videos}
    if {"videos/status", "videos/samples"} & {d.array for d in damage if not d.videos}:
        return []
    status, samples = root["videos/status"], root["videos/samples"]
    found = []
    for group in filter(owns, range(settings.num_groups)):
        start, stop = settings.group_range(group)
        if set(range(start, stop)) & unreadable:
            continue
        done = read_block(status, group) == DONE
        lengths = read_block(samples, group) if done.any() else None
        for row in np.flatnonzero(done):
            for array, why in video_damage(root, settings, start + int(row), int(lengths[row])).items():
                found.append(Damage(array, [start + int(row)], why))
    return found


def _name_paths(root: zarr.Group, damage: list[Damage]) -> None:
    """Fill in the video paths of each damage where the path column itself is readable."""
    if not damage or any(d.array == "videos/path" and not d.videos for d in damage):
        return
    unreadable = {video for d in damage if d.array == "videos/path" for video in d.videos}
    try:
        paths = root["videos/path"]
    except (KeyError, ValueError):
        return
    for d in damage:
        d.paths = [str(paths[v]) if v not in unreadable else "" for v in d.videos[:3]]


def format_verify(report: VerifyReport) -> str:
    checks = "every chunk checksummed" if report.checksums else \
        "no checksums in this older store: only missing or undecodable chunks can be found"
    head = f"{report.store}: {report.format}, {report.videos} videos, {report.arrays} arrays, {checks}"
    if report.intact:
        return f"{head}{os.linesep}intact"
    lines = [head, f"damaged: {len(report.damaged_videos())} videos, {len(report.damage)} problems"]
    for d in report.damage:
        lines.append(f"  {d.array}  {_videos(d)}: {d.reason}")
    lines.append("`clipcache extract VIDEOS STORE ...` with the store's options and --repair redoes the damaged videos")
    return os.linesep.join(lines)


def _videos(d: Damage) -> str:
    if not d.videos:
        return "(not per video)"
    named = ", ".join(p for p in d.paths if p)
    first = f"video {d.videos[0]}" if len(d.videos) == 1 else f"{len(d.videos)} videos from {d.videos[0]}"
    return f"{first} ({named}{', ...' if len(d.videos) > len(d.paths) else ''})" if named else first

