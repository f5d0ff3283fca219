"""Creating a store and writing it one whole shard group at a time.

Every array is chunked (or sharded) along the video axis in groups of `shard_videos`, and a group is
only ever written whole, by one process: partial shard writes are read-modify-write in zarr and lose
data under concurrency. A group's status chunk is written last, and LocalStore writes each chunk
atomically, so after a crash a group either reads as finished or as pending and is redone.

Rewriting a finished group in place (retrying its failed videos) keeps the stored bytes of its other
videos in every array, so a crash at any point leaves each video either as it was or finished anew.
Repairing damage marks the damaged groups pending first, so the redo has resume's guarantees.
"""
from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from clipcache import InputError
from clipcache.cache import quant
from clipcache.cache.chunks import chunk_key
from clipcache.cache.location import Store, StoreUrl, zarr_store
from clipcache.cache.objects import StoreObjects
from clipcache.cache.place import aside
from clipcache.cache.reader import CacheReader, read_block
from clipcache.cache.schema import (
    PENDING,
    TABLE_AT_CREATION,
    UNFINISHED,
    VIDEO_STRING_ARRAYS,
    StoreSettings,
    check_format,
    dimension_names,
    numeric_columns,
    scale_name,
    tokens_name,
)
from clipcache.cache.store import consolidate, open_root
from clipcache.cache.verify import GROUP_METADATA_MISSING, Damage, VerifyReport, unlisted_quiet


class StoreMismatchError(InputError):
    """An existing store was made with other settings or from other videos."""


@dataclass
class GroupResult:
    """Everything extracted for the videos of one shard group (failed videos hold zeros). A dense store's
    features are already in dense/<v>/ (written video by video): its result is the table alone."""

    group: int
    status: np.ndarray  # (n,) uint8
    error: list[str]
    note: list[str]
    fps: np.ndarray
    num_frames: np.ndarray
    width: np.ndarray
    height: np.ndarray
    duration: np.ndarray
    frame_index: np.ndarray | None = None  # (n, V, T) int32; clip stores
    tokens: dict[int, np.ndarray] = field(default_factory=dict)  # absolute block -> (n, V, T, L, D); clip stores
    pooled: np.ndarray | None = None  # (n, V, T, E); clip stores
    samples: np.ndarray | None = None  # (n,) int32 frames stored per video; dense stores
    path: list[str] | None = None  # where each video was found (kept as created when None)
    keep: np.ndarray | None = None  # (n,) bool: videos whose stored values stay as they are


# what the machine refuses to store, whatever the input: a full disk, a quota, a file size limit
SPACE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file size limit reached"}
WRITE_EMPTY = {"write_empty_chunks": True}  # a written chunk always exists, so a missing file is damage
TABLE_COMPRESSORS = (ZstdCodec(level=0), Crc32cCodec())  # zarr's default compressor, plus the checksum


def _compressors(settings: StoreSettings) -> tuple:
    """Feature compression, then the checksum that lets readers and `verify` find damaged bytes."""
    return ((ZstdCodec(level=3),) if settings.compression == "zstd" else ()) + (Crc32cCodec(),)


def _video_array_specs(settings: StoreSettings) -> dict[str, dict[str, object]]:
    """How each per-video array is made: chunked by shard group, the token arrays (and their int8 scales)
    sharded with one inner chunk per video and view (a sample reads only the view it uses), every chunk
    checksummed. A dense store has the table only here: its features live in dense/<v>/ (cache.dense)."""
    n, s, v, t = settings.num_videos, settings.shard_videos, settings.views, settings.frames
    length, width, embed = settings.tokens, settings.width, settings.embed_dim
    specs: dict[str, dict[str, object]] = {}
    for name in VIDEO_STRING_ARRAYS:
        specs[f"videos/{name}"] = {"shape": (n,), "chunks": (s,), "dtype": str, "compressors": TABLE_COMPRESSORS}
    for name, dtype in numeric_columns(settings.layout).items():
        specs[f"videos/{name}"] = {"shape": (n,), "chunks": (s,), "dtype": dtype, "fill_value": 0,
                                   "compressors": TABLE_COMPRESSORS}
    if settings.dense:
        return specs
    specs["videos/frame_index"] = {"shape": (n, v, t), "chunks": (s, v, t), "dtype": "int32", "fill_value": 0,
                                   "compressors": TABLE_COMPRESSORS}
    features = _compressors(settings)
    for layer in settings.layers:
        specs[tokens_name(layer)] = {
            "shape": (n, v, t, length, width), "chunks": (1, 1, t, length, width), "shards": (s, v, t, length, width),
            "dtype": "int8" if settings.dtype == "int8" else "float16", "fill_value": 0, "compressors": features}
        if settings.dtype == "int8":
            specs[scale_name(layer)] = {"shape": (n, v, t, length), "chunks": (1, 1, t, length),
                                        "shards": (s, v, t, length), "dtype": "float32", "fill_value": 0,
                                        "compressors": (Crc32cCodec(),)}
    specs["pooled"] = {"shape": (n, v, t, embed), "chunks": (s, v, t, embed), "dtype": "float16", "fill_value": 0,
                       "compressors": features}
    return specs


def _create_array(root: zarr.Group, name: str, overwrite: bool = False, **spec: object) -> zarr.Array:
    """An array with its named dimensions (see `schema.dimension_names`), chunks written even when zero."""
    return root.create_array(name, dimension_names=dimension_names(name), config=WRITE_EMPTY, overwrite=overwrite,
                             **spec)


def _write_frozen(root: zarr.Group, frozen: dict[str, np.ndarray]) -> None:
    """The frozen parameters, one checksummed chunk per array."""
    for name, value in frozen.items():
        value = np.ascontiguousarray(value, dtype=np.float32)
        _create_array(root, f"frozen/{name}", overwrite=True, shape=value.shape, chunks=value.shape,
                      dtype="float32", compressors=(Crc32cCodec(),))[...] = value


def _write_table(root: zarr.Group, region: slice, paths: list[str], labels: list[int], splits: list[str],
                 status: bool) -> None:
    """The columns written at creation (TABLE_AT_CREATION) for `region`; status pending when asked."""
    columns = {"path": np.array(paths[region], dtype=object), "split": np.array(splits[region], dtype=object),
               "label": np.asarray(labels[region], dtype=np.int32)}
    if status:
        columns["status"] = np.full(len(columns["path"]), PENDING, np.uint8)
    for name, values in columns.items():
        root[f"videos/{name}"].with_config(WRITE_EMPTY)[region] = values


def _create_layout(root: zarr.Group, settings: StoreSettings, paths: list[str], labels: list[int],
                   splits: list[str], frozen: dict[str, np.ndarray]) -> None:
    for group in ("videos", "dense" if settings.dense else "tokens", "frozen", "text"):
        root.create_group(group)
    for name, spec in _video_array_specs(settings).items():
        _create_array(root, name, **spec)
    _write_table(root, slice(None), paths, labels, splits, status=True)
    _write_frozen(root, frozen)


def create_store(path: Store, settings: StoreSettings, paths: list[str], labels: list[int],
                 splits: list[str], frozen: dict[str, np.ndarray]) -> None:
    """Build the empty store beside `path` and move it into place in one rename; in object storage, build it
    in place with its root marked unfinished until the last write (`cache.place`).

    Several processes (job-array shards, ranks) may race to create the same store: the first rename
    wins and the others find the finished layout, so nobody ever sees a half-made store.
    """
    if isinstance(path, StoreUrl):
        root = zarr.open_group(zarr_store(path, read_only=False), mode="w", attributes={"format": UNFINISHED},
                               use_consolidated=False)
        _create_layout(root, settings, paths, labels, splits, frozen)
        root.attrs.update({"format": settings.format, **settings.to_attrs()})
        consolidate(path)
        return
    tmp = aside(path, "tmp")
    try:
        root = open_root(tmp, mode="w")
        _create_layout(root, settings, paths, labels, splits, frozen)
        root.attrs.update({"format": settings.format, **settings.to_attrs()})
        consolidate(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_settings(path: Store) -> StoreSettings:
    attrs = dict(open_root(path).attrs)
    check_format(attrs, str(path))
    return StoreSettings.from_attrs(attrs)


def check_settings(path: Store, wanted: StoreSettings) -> None:
    """Refuse to resume a store whose content settings differ from this run's. A store that did not record
    its batch size (made before it was recorded) is resumed with any."""
    stored = read_settings(path)
    if not stored.batch_size:
        wanted = replace(wanted, batch_size=0)
    if stored.fingerprint() != wanted.fingerprint():
        diffs = "; ".join(stored.differences(wanted))
        raise StoreMismatchError(
            f"{path}: store was made with other settings ({diffs}); "
            "use --overwrite to replace it or choose another store"
        )


def check_complete(path: Store, settings: StoreSettings) -> None:
    """Refuse to write into a store that lacks some of its arrays (deleted by hand, or damaged)."""
    root = open_root(path)
    absent = [name for name in _video_array_specs(settings) if name not in root]
    if absent:
        raise InputError(f"{path}: arrays {', '.join(absent)} are missing (the store is damaged); "
                         "add --repair to redo what they held")


class StoreWriter:
    """Writes finished shard groups into an existing store."""

    def __init__(self, path: Store, settings: StoreSettings, check_lock: Callable[[], None] = lambda: None) -> None:
        """`check_lock` raises when this run no longer holds the store's lock (a lease in object storage that
        ran out): it is called before each group and each piece is written."""
        self.path = path
        self.settings = settings
        self.check_lock = check_lock
        self.root = open_root(path, mode="r+")

    def _array(self, name: str) -> zarr.Array:
        return self.root[name].with_config(WRITE_EMPTY)

    def pending_groups(self) -> list[int]:
        """Groups not yet finished; a group is finished when its status chunk holds no pending video."""
        status = CacheReader(self.path).status
        return [
            g for g in range(self.settings.num_groups)
            if (status[slice(*self.settings.group_range(g))] == PENDING).any()
        ]

    def write_group(self, result: GroupResult) -> None:
        """Write a whole group, status last; the rows `result.keep` marks keep their stored bytes."""
        self.check_lock()
        for layer, values in result.tokens.items():
            if self.settings.dtype == "int8":
                q, scale = quant.quantize(values)
                self._put(tokens_name(layer), result, q)
                self._put(scale_name(layer), result, scale)
            else:
                self._put(tokens_name(layer), result, values.astype(np.float16, copy=False))
        if result.pooled is not None:
            self._put("pooled", result, result.pooled.astype(np.float16, copy=False))
            self._put("videos/frame_index", result, result.frame_index)
        dense = ("samples",) if self.settings.dense else ()
        for name in ("fps", "num_frames", "width", "height", "duration", *dense):
            self._put(f"videos/{name}", result, getattr(result, name))
        for name in ("error", "note") + (("path",) if result.path is not None else ()):
            self._put(f"videos/{name}", result, np.array(getattr(result, name), dtype=object))
        self._put("videos/status", result, result.status)  # last: marks the group finished

    def _put(self, name: str, result: GroupResult, values: np.ndarray) -> None:
        array = self._array(name)
        if result.keep is not None and result.keep.any():
            values = np.array(values, copy=True)
            values[result.keep] = read_block(array, result.group)[result.keep]
        array[slice(*self.settings.group_range(result.group))] = values

    def repair(self, report: VerifyReport, paths: list[str], labels: list[int], splits: list[str],
               frozen: dict[str, np.ndarray], owns: Callable[[int], bool], main: bool
               ) -> tuple[list[int], list[Damage]]:
        """Make the damage `report` found redoable; return the damaged groups, now pending, and the damage it
        could not restore. Groups whose metadata (zarr.json) is gone get it again (they hold no attributes),
        arrays whose metadata is gone are made again, damaged table chunks are rewritten from the input list
        (the store's identity guarantees it lists the same videos), damaged frozen parameters are written
        again and damaged text tables dropped (stage two recomputes them). Only the groups `owns` accepts
        are touched; `main` also repairs what is not per video. What is left (the segment table, whose
        attributes only its annotation files hold; folders the store's layout has no place for) is returned."""
        s = self.settings
        specs = _video_array_specs(s)
        left = []
        if main:
            for d in sorted(report.damage, key=lambda d: d.array.count("/")):  # parents first
                if d.reason == GROUP_METADATA_MISSING and _layout_group(d.array):
                    zarr.open_group(self.root.store, path=d.array, mode="a")
                elif not d.videos and not _restorable(d.array, specs):
                    left.append(d)
        lost = {d.array for d in report.damage if d.array in specs and not _chunk_damage(d.reason)}
        for name in sorted(lost):
            _create_array(self.root, name, overwrite=True, **specs[name])
        groups = sorted({v // s.shard_videos for v in report.damaged_videos()} & set(filter(owns, range(s.num_groups))))
        table_damaged = lost | {d.array for d in report.damage if d.array.removeprefix("videos/") in TABLE_AT_CREATION}
        self._remove_damaged_files(report, specs.keys() - lost, set(groups))
        for group in groups:
            region = slice(*s.group_range(group))
            if table_damaged:
                _write_table(self.root, region, paths, labels, splits, status=False)
            self._array("videos/status")[region] = np.full(region.stop - region.start, PENDING, np.uint8)
        if main:
            if any(d.array.split("/")[0] == "frozen" for d in report.damage):
                _write_frozen(self.root, frozen)
            for key in sorted({d.array.split("/")[1] for d in report.damage if d.array.startswith("text/")}):
                StoreObjects(self.root.store).delete_all(f"text/{key}")  # its zarr.json may be the damage
        with unlisted_quiet():  # what is left unrestored is named by the caller
            consolidate(self.path)
        return groups, left


    def _remove_damaged_files(self, report: VerifyReport, arrays: set[str], groups: set[int]) -> None:
        """Delete the damaged chunk and shard files of the per-video `arrays` in the `groups` about to be
        rewritten whole. zarr reads a file it writes into unless the write covers the whole of it (a shard
        always; a chunk of the last, shorter group), and fails on damaged bytes: what is replaced must not be
        read. A crash before the rewrite leaves a file missing where it was damaged: still damage that
        verify finds and --repair redoes."""
        objects = StoreObjects(self.root.store)
        for d in report.damage:
            if d.array in arrays:
                for block in sorted({video // self.settings.shard_videos for video in d.videos} & groups):
                    objects.delete(chunk_key(self.root[d.array], block))


def _layout_group(name: str) -> bool:
    """A group of the store's layout, which holds no attributes: its metadata can be written again."""
    parts = name.split("/")
    return name in ("videos", "tokens", "dense", "frozen", "text") or parts[0] == "dense" and len(parts) == 2 \
        and parts[1].isdigit()


def _restorable(name: str, specs: dict[str, dict[str, object]]) -> bool:
    """Whether `repair` restores damage to `name` that is not per video."""
    return name in specs or _layout_group(name) or name.split("/")[0] in ("frozen", "text") \
        or name.startswith("dense/")


def _chunk_damage(reason: str) -> bool:
    """Damage to chunks of an array whose metadata is intact (else the array itself is made again)."""
    return reason not in ("array missing",) and not reason.startswith("metadata unreadable")
