"""A torch Dataset over a store that reads only the features a head asks for.

One item is one (video, view): training draws a random view among the stored ones (augmented views
included) and jitters the frame subset; evaluation walks every test view (clips x crops) in order so
predictions can be averaged per video. Each DataLoader worker opens the store itself, and one video's
tokens of one layer are one chunk, so an item costs one read per requested array.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from cache import quant
from cache.reader import CacheReader, read_rows
from cache.schema import scale_name, tokens_name
from heads.base import FeatureRequest


def restrict_to_classes(reader: CacheReader, videos: np.ndarray, classes: tuple[str, ...] | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Videos of the given classes with labels renumbered in that order (all classes when None)."""
    labels = reader.column("label")[videos]
    if classes is None:
        return videos, labels
    unknown = sorted(set(classes) - set(reader.classes))
    if unknown:
        raise ValueError(f"{reader.path}: unknown classes {unknown[:5]}")
    remap = np.full(len(reader.classes) + 1, -1, np.int64)  # the last slot maps label -1
    for new, name in enumerate(classes):
        remap[reader.classes.index(name)] = new
    mapped = remap[labels]
    return videos[mapped >= 0], mapped[mapped >= 0]


def frame_subset(stored: int, wanted: int, rng: np.random.Generator | None) -> np.ndarray:
    """`wanted` of `stored` frames: segment centres, or a random frame per segment when training."""
    if wanted > stored:
        raise ValueError(f"the head wants {wanted} frames but the store holds {stored} per view")
    offsets = rng.random(wanted) if rng is not None else np.full(wanted, 0.5)
    return np.minimum(np.floor((np.arange(wanted) + offsets) * stored / wanted).astype(np.int64), stored - 1)


class CacheDataset(Dataset):
    """Items are dicts: the requested features ("pooled", "tokens", float16 as stored: half the bytes
    to move; the loop casts on the device), "label", "video" and "view"."""

    def __init__(self, reader: CacheReader, request: FeatureRequest, videos: np.ndarray, frames: int,
                 train: bool, preload: bool = False, seed: int = 0, classes: tuple[str, ...] | None = None) -> None:
        settings = reader.settings
        missing = [layer for layer in request.layers if layer not in settings.layers]
        if missing:
            raise ValueError(f"{reader.path}: the head needs blocks {missing}, the store holds "
                             f"{list(settings.layers)} (extract again with --layers including them)")
        self.path, self.request, self.train, self.seed = str(reader.path), request, train, seed
        self.videos, self.labels = restrict_to_classes(reader, np.asarray(videos, dtype=np.int64), classes)
        self.frames = frames
        self.stored_frames = settings.frames
        frame_subset(self.stored_frames, frames, None)  # refuse impossible frame counts now
        test_views = settings.clips * settings.crops
        self.views = np.arange(settings.views) if train else np.arange(test_views)
        self._items = [(v, 0) for v in range(len(self.videos))] if train else \
            [(v, view) for v in range(len(self.videos)) for view in self.views]
        self._dequantise = settings.dtype == "int8"
        self._epoch = 0
        self._root: zarr.Group | None = None
        self._pid = -1
        self._cache: dict[str, np.ndarray] = {}
        if preload:
            self._cache = {name: self._read_all(reader.root, name) for name in self._array_names()}

    def _array_names(self) -> list[str]:
        names = ["pooled"] if self.request.pooled else []
        for layer in self.request.layers:
            names.append(tokens_name(layer))
            if self._dequantise:
                names.append(scale_name(layer))
        return names

    def _read_all(self, root: zarr.Group, name: str) -> np.ndarray:
        """Whole arrays of the selected videos, read chunk by chunk, kept in RAM."""
        data = read_rows(root[name], self.videos)
        if name.startswith("tokens/") and self.request.cls_only and not name.endswith("_scale"):
            data = np.ascontiguousarray(data[..., :1, :])
        return data

    def set_epoch(self, epoch: int) -> None:
        """Training randomness (view, frames) depends on (seed, epoch, item) only: reproducible, resumable."""
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self._items)

    def _group(self) -> zarr.Group:
        if self._root is None or self._pid != os.getpid():  # each DataLoader worker opens its own
            self._root, self._pid = zarr.open_group(self.path, mode="r"), os.getpid()
        return self._root

    def _read(self, name: str, row: int, view: int, frames: np.ndarray) -> np.ndarray:
        if name in self._cache:
            return self._cache[name][row, view][frames]
        value = self._group()[name][int(self.videos[row]), view]
        return value[frames]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        row, view = self._items[item]
        rng = np.random.default_rng([self.seed, self._epoch, item]) if self.train else None
        if self.train:
            view = int(rng.integers(len(self.views)))
        frames = frame_subset(self.stored_frames, self.frames, rng)
        out: dict[str, torch.Tensor] = {
            "label": torch.tensor(int(self.labels[row])),
            "video": torch.tensor(row),
            "view": torch.tensor(view),
        }
        if self.request.pooled:
            out["pooled"] = torch.from_numpy(self._read("pooled", row, view, frames))
        if self.request.layers:
            out["tokens"] = torch.from_numpy(np.stack([self._layer(layer, row, view, frames)
                                                       for layer in self.request.layers]))
        return out

    def _layer(self, layer: int, row: int, view: int, frames: np.ndarray) -> np.ndarray:
        values = self._read(tokens_name(layer), row, view, frames)
        if self.request.cls_only:
            values = values[..., :1, :]
        if self._dequantise:
            scales = self._read(scale_name(layer), row, view, frames)
            return quant.dequantize(values, scales[..., : values.shape[-2]], np.float16)
        return values

