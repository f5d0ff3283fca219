"""Creating a store and writing it one whole shard group at a time.

Every array is chunked (or sharded) along the video axis in groups of `shard_videos`, and a group is
only ever written whole, by one process: partial shard writes are read-modify-write in zarr and lose
data under concurrency. A group's status chunk is written last, and LocalStore writes each chunk
atomically, so after a crash a group either reads as finished or as pending and is redone.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from clipcache import InputError
from clipcache.cache import quant
from clipcache.cache.schema import (
    FORMAT,
    PENDING,
    VIDEO_NUMERIC_ARRAYS,
    VIDEO_STRING_ARRAYS,
    StoreSettings,
    check_format,
    dimension_names,
    scale_name,
    tokens_name,
)
from clipcache.cache.store import consolidate, open_root


class StoreMismatchError(InputError):
    """An existing store was made with other settings or from other videos."""


@dataclass
class GroupResult:
    """Everything extracted for the videos of one shard group (failed videos hold zeros)."""

    group: int
    status: np.ndarray  # (n,) uint8
    error: list[str]
    note: list[str]
    frame_index: np.ndarray  # (n, V, T) int32
    fps: np.ndarray
    num_frames: np.ndarray
    width: np.ndarray
    height: np.ndarray
    duration: np.ndarray
    tokens: dict[int, np.ndarray]  # absolute block -> (n, V, T, L, D)
    pooled: np.ndarray  # (n, V, T, E)


def _compressors(settings: StoreSettings) -> tuple | None:
    return (ZstdCodec(level=3),) if settings.compression == "zstd" else None


def _array(group: zarr.Group, name: str, **spec: object) -> zarr.Array:
    """An array with its named dimensions (see `schema.dimension_names`)."""
    path = f"{group.path}/{name}" if group.path else name
    return group.create_array(name, dimension_names=dimension_names(path), **spec)


def _create_layout(root: zarr.Group, settings: StoreSettings, paths: list[str], labels: list[int],
                   splits: list[str], frozen: dict[str, np.ndarray]) -> None:
    n, s, v, t = settings.num_videos, settings.shard_videos, settings.views, settings.frames
    length, width, embed = settings.tokens, settings.width, settings.embed_dim
    videos = root.create_group("videos")
    for name in VIDEO_STRING_ARRAYS:
        _array(videos, name, shape=(n,), chunks=(s,), dtype=str)
    for name, dtype in VIDEO_NUMERIC_ARRAYS.items():
        _array(videos, name, shape=(n,), chunks=(s,), dtype=dtype, fill_value=0)
    _array(videos, "frame_index", shape=(n, v, t), chunks=(s, v, t), dtype="int32", fill_value=0)
    videos["path"][:] = np.array(paths, dtype=object)
    videos["split"][:] = np.array(splits, dtype=object)
    videos["label"][:] = np.asarray(labels, dtype=np.int32)

    compressors = _compressors(settings)
    tokens = root.create_group("tokens")
    token_dtype = "int8" if settings.dtype == "int8" else "float16"
    for layer in settings.layers:
        _array(tokens, str(layer), shape=(n, v, t, length, width), chunks=(1, v, t, length, width),
               shards=(s, v, t, length, width), dtype=token_dtype, fill_value=0, compressors=compressors)
        if settings.dtype == "int8":
            _array(tokens, f"{layer}_scale", shape=(n, v, t, length), chunks=(s, v, t, length), dtype="float32",
                   fill_value=0)
    _array(root, "pooled", shape=(n, v, t, embed), chunks=(s, v, t, embed), dtype="float16", fill_value=0,
           compressors=compressors)
    frozen_group = root.create_group("frozen")
    for name, value in frozen.items():
        _array(frozen_group, name, data=np.ascontiguousarray(value, dtype=np.float32))
    root.create_group("text")


def create_store(path: Path, settings: StoreSettings, paths: list[str], labels: list[int],
                 splits: list[str], frozen: dict[str, np.ndarray]) -> None:
    """Build the empty store beside `path` and move it into place in one rename.

    Several processes (job-array shards, ranks) may race to create the same store: the first rename
    wins and the others find the finished layout, so nobody ever sees a half-made store.
    """
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        root = open_root(tmp, mode="w")
        _create_layout(root, settings, paths, labels, splits, frozen)
        root.attrs.update({"format": FORMAT, **settings.to_attrs()})
        consolidate(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_settings(path: Path) -> StoreSettings:
    attrs = dict(open_root(path).attrs)
    check_format(attrs, str(path))
    return StoreSettings.from_attrs(attrs)


def check_settings(path: Path, wanted: StoreSettings) -> None:
    """Refuse to resume a store whose content settings differ from this run's."""
    stored = read_settings(path)
    if stored.fingerprint() != wanted.fingerprint():
        diffs = "; ".join(stored.differences(wanted))
        raise StoreMismatchError(
            f"{path}: store was made with other settings ({diffs}); "
            "use --overwrite to replace it or choose another store"
        )


class StoreWriter:
    """Writes finished shard groups into an existing store."""

    def __init__(self, path: Path, settings: StoreSettings) -> None:
        self.path = path
        self.settings = settings
        self.root = open_root(path, mode="r+")

    def pending_groups(self) -> list[int]:
        """Groups not yet finished; a group is finished when its status chunk holds no pending video."""
        status = self.root["videos/status"][:]
        return [
            g for g in range(self.settings.num_groups)
            if (status[slice(*self.settings.group_range(g))] == PENDING).any()
        ]

    def write_group(self, result: GroupResult) -> None:
        start, stop = self.settings.group_range(result.group)
        region = slice(start, stop)
        for layer, values in result.tokens.items():
            if self.settings.dtype == "int8":
                q, scale = quant.quantize(values)
                self.root[tokens_name(layer)][region] = q
                self.root[scale_name(layer)][region] = scale
            else:
                self.root[tokens_name(layer)][region] = values.astype(np.float16, copy=False)
        self.root["pooled"][region] = result.pooled.astype(np.float16, copy=False)
        videos = self.root["videos"]
        videos["frame_index"][region] = result.frame_index
        for name in ("fps", "num_frames", "width", "height", "duration"):
            videos[name][region] = getattr(result, name)
        videos["error"][region] = np.array(result.error, dtype=object)
        videos["note"][region] = np.array(result.note, dtype=object)
        videos["status"][region] = result.status  # last: marks the group finished
