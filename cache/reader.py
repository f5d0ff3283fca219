"""Read access to a store: settings, per-video table and features (int8 dequantised on read)."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import zarr

from clipcache import InputError
from clipcache.cache import quant
from clipcache.cache.schema import DONE, StoreSettings, check_format, scale_name, tokens_name
from clipcache.cache.store import open_root

Index = slice | np.ndarray | list[int] | int


class CacheReader:
    """A store opened read-only. Data of videos whose status is not done must never be used."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such store")
        try:
            self.root = open_root(self.path)
        except Exception as exc:  # zarr raises several types for "not a group"
            raise InputError(f"{self.path}: not a zarr store ({exc})") from None
        attrs = dict(self.root.attrs)
        check_format(attrs, str(self.path))
        self.attrs = attrs
        self.settings = StoreSettings.from_attrs(attrs)

    @property
    def num_videos(self) -> int:
        return self.settings.num_videos

    @property
    def classes(self) -> tuple[str, ...]:
        return self.settings.classes

    def column(self, name: str) -> np.ndarray:
        """One per-video column (videos/<name>) read whole."""
        return self.root[f"videos/{name}"][:]

    @cached_property
    def status(self) -> np.ndarray:
        return self.column("status")

    @cached_property
    def done(self) -> np.ndarray:
        """Indices of the videos whose features can be trusted."""
        return np.flatnonzero(self.status == DONE)

    def tokens(self, layer: int, index: Index) -> np.ndarray:
        """Residual stream after block `layer` for the selected videos: (n, V, T, L, D) float16/float32."""
        if layer not in self.settings.layers:
            raise KeyError(f"{self.path}: layer {layer} not stored (stored: {list(self.settings.layers)})")
        values = self._take(tokens_name(layer), index)
        if self.settings.dtype == "int8":
            return quant.dequantize(values, self._take(scale_name(layer), index))
        return values

    def pooled(self, index: Index) -> np.ndarray:
        """The model's image embedding per frame (before normalisation): (n, V, T, E) float16."""
        return self._take("pooled", index)

    def frozen(self) -> dict[str, np.ndarray]:
        """Frozen encoder parameters that heads need without loading CLIP (ln_post, proj, ln_1, qkv)."""
        return {name: array[:] for name, array in self.root["frozen"].arrays()}

    def _take(self, name: str, index: Index) -> np.ndarray:
        array = self.root[name]
        if isinstance(index, (slice, int, np.integer)):
            return array[index]
        return read_rows(array, np.asarray(index))


def read_rows(array: zarr.Array, rows: np.ndarray) -> np.ndarray:
    """array[rows] in the given order, read as whole chunks (or shards) along the video axis.

    zarr's own orthogonal selection with an index array goes element by element: ~100x slower.
    """
    block = (array.shards or array.chunks)[0]
    out = np.empty((len(rows),) + array.shape[1:], dtype=array.dtype)
    for start in np.unique(rows // block) * block:
        stop = min(start + block, array.shape[0])
        mask = (rows >= start) & (rows < stop)
        out[mask] = array[start:stop][rows[mask] - start]
    return out
