"""Which features an export writes, and one video's of them as a (T, C) float32 series with the time of each row.

`pooled` is the model's image embedding of each stored frame (before normalisation, as stored); `cls:<block>` is
the CLS token of the residual stream after a stored block (a dense store made with --tokens cls keeps exactly
that). Clip stores export their first view (the first clip's centre crop), whose frames lie at
frame_index / fps seconds; dense stores their stored times.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath

import numpy as np

from clipcache import InputError
from clipcache.cache.dense import block_name
from clipcache.cache.reader import CacheReader


@dataclass(frozen=True)
class FeatureChoice:
    spec: str  # as given: pooled or cls:<block>
    layer: int | None  # the absolute block of a cls:<block> choice; None for pooled

    def channels(self, reader: CacheReader) -> int:
        return reader.settings.embed_dim if self.layer is None else reader.settings.width


def choose_features(spec: str, reader: CacheReader) -> FeatureChoice:
    """`pooled`, or `cls:<block>` with a block the store keeps (negative counts from the last block)."""
    settings = reader.settings
    stored = ", ".join(f"cls:{layer}" for layer in settings.layers) or "none"
    if spec == "pooled":
        return FeatureChoice(spec, None)
    kind, _, block = spec.partition(":")
    try:
        layer = int(block)
    except ValueError:
        layer = None
    if kind != "cls" or layer is None:
        raise InputError(f"--features {spec}: expected pooled or cls:<block> (this store: pooled, {stored})")
    absolute = layer + settings.num_blocks if layer < 0 else layer
    if absolute not in settings.layers:
        raise InputError(f"--features {spec}: {reader.path} keeps no block {layer} (it keeps: pooled, {stored})")
    return FeatureChoice(spec, absolute)


@dataclass(frozen=True)
class Series:
    values: np.ndarray  # (T, C) float32
    times: np.ndarray  # (T,) float64 seconds: when each row's frame is shown


class SeriesReader:
    """One video's chosen features and their times, read from the store (damage raises StoreDamageError)."""

    def __init__(self, reader: CacheReader, choice: FeatureChoice) -> None:
        self.reader, self.choice = reader, choice

    @cached_property
    def native_fps(self) -> np.ndarray:
        """Each video's frame rate as decoded (a dense store's: frames over duration)."""
        return self.reader.column("fps").astype(np.float64)

    @cached_property
    def _frame_index(self) -> np.ndarray:
        return self.reader.column("frame_index")

    def read(self, video: int) -> Series:
        reader, layer = self.reader, self.choice.layer
        if reader.settings.dense:
            values = reader.dense(video, "pooled") if layer is None else reader.dense(video, block_name(layer))[:, 0]
            return Series(values.astype(np.float32), reader.dense(video, "time").astype(np.float64))
        values = reader.pooled(video)[0] if layer is None else reader.tokens(layer, video)[0, :, 0]
        fps = self.native_fps[video]
        if not fps > 0:
            raise InputError(f"{reader.path}: video {video} has no frame rate recorded, so its frames have no times")
        return Series(values.astype(np.float32), self._frame_index[video, 0].astype(np.float64) / fps)


def stems(reader: CacheReader, videos: np.ndarray) -> dict[int, str]:
    """Each video's file stem, the name its files get; two videos with one stem are refused (one line)."""
    paths = reader.column("path")
    named: dict[str, int] = {}
    for video in videos:
        stem = PurePosixPath(str(paths[video])).stem
        if stem in named:
            raise InputError(f"{reader.path}: videos {paths[named[stem]]} and {paths[video]} share the file stem "
                             f"{stem!r}, so their exported files would collide; export them from separate stores")
        named[stem] = int(video)
    return {video: stem for stem, video in named.items()}
