"""A clip store as one xarray Dataset, for people who explore features in xarray.

The store's layout is a public contract (arrays `pooled` and `tokens/<b>`, the table under `videos/`), so nothing is
renamed on disk; this view only names the token arrays after their block and puts each video's path, class name,
split and status beside the features as coordinates. Features stay on disk until read (zarr checks their crc32c
then); data of a video whose status is not done must not be used (unwritten chunks read as zeros). xarray is an
optional dependency: only this module needs it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from clipcache import InputError
from clipcache.cache.location import Store
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import VIDEO

if TYPE_CHECKING:
    import xarray


def open_dataset(store: Store | str) -> xarray.Dataset:
    """`pooled` and `block_<b>` (int8 stores: with `block_<b>_scale`, tokens = block_<b> x scale) over
    (video, view, frame, ...), with the coordinates `path`, `label` (class name, "" when unknown), `split` and
    `status` along `video`, and the store's attributes."""
    try:
        import xarray as xr
    except ImportError:
        raise InputError("clipcache.cache.xr.open_dataset needs xarray, which is not installed "
                         "(pip install 'clipcache[xarray]')") from None
    reader = CacheReader(store)
    if reader.settings.dense:
        raise InputError(f"{reader.path}: a dense store holds one time series per video, not a (video, view, frame) "
                         "array; open a video with xarray.open_zarr(store, group='dense/<v>', consolidated=False)")
    store = reader.root.store  # zarr's store: a folder, or object storage through obstore (not fsspec)
    pooled = xr.open_zarr(store)
    tokens = xr.open_zarr(store, group="tokens") if reader.settings.layers else xr.Dataset()
    variables = {"pooled": pooled["pooled"], **{f"block_{name}": array for name, array in tokens.data_vars.items()}}
    names = [reader.classes[label] if label >= 0 else "" for label in reader.column("label")]
    coords = {"path": (VIDEO, _strings(reader.column("path"))), "label": (VIDEO, _strings(names)),
              "split": (VIDEO, _strings(reader.column("split"))), "status": (VIDEO, reader.status)}
    return xr.Dataset(variables, coords=coords, attrs=reader.attrs)


def _strings(values: np.ndarray | list[str]) -> np.ndarray:
    """Plain numpy strings (zarr reads variable-length strings as numpy's StringDType, which xarray's selection and
    printing do not all handle)."""
    return np.array([str(value) for value in values], dtype=str)
