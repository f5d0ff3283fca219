"""Whether an object of a store holds the bytes its writer made, judged from the bytes alone, before a copy writes
them anywhere.

Metadata (`zarr.json`) must be JSON. A chunk of an array whose codecs end with crc32c (`cache.chunks`) must match
its checksum; a shard (the token arrays) is checked as `clipcache verify` checks it: its index against the index's
checksum, then every inner chunk the index points to against its own. The arrays are learnt from their metadata,
so a store's metadata objects are checked before its chunks. Chunks of arrays without checksums (older stores) and
objects that belong to no array are taken as they are: only the copy's read-back can speak for them.
"""
from __future__ import annotations

import json
import re

import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.core.array import Array, AsyncArray
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.storage import StorePath

from clipcache.cache.chunks import crc_intact, is_checked, rows_per_file, shard_damage

METADATA = "zarr.json"
CHECKED_INDEX = (BytesCodec(endian="little"), Crc32cCodec())  # the index layout `shard_index` reads


def is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == METADATA


class ObjectCheck:
    """Checks the objects of one store: its metadata first (which tells it the arrays), then its chunks."""

    def __init__(self, store: zarr.abc.store.Store) -> None:
        self.store = store
        self.arrays: dict[str, Array] = {}  # node path -> the array its metadata describes

    def owner(self, key: str) -> str:
        """The array (or, for metadata and strays, the node) a key belongs to, for messages."""
        parts = key.split("/")[:-1]
        for depth in range(len(parts), 0, -1):
            if "/".join(parts[:depth]) in self.arrays:
                return "/".join(parts[:depth])
        return "/".join(parts) or "the root"

    def foreign(self, key: str) -> bool:
        """Whether the key lies in an array's folder without being one of its chunks (zarr never reads it)."""
        if is_metadata(key):
            return False
        array = self.arrays.get(self.owner(key))
        if array is None:
            return False
        coords = _coords(array, key)
        return len(coords) != array.ndim or array.metadata.encode_chunk_key(coords) != key[len(array.path) + 1:]

    def damage(self, key: str, data: bytes) -> str | None:
        """Why `data`, the bytes of `key`, are not what the store's writer made; None when intact (or when nothing
        in them can tell)."""
        if is_metadata(key):
            return self._metadata(key, data)
        array = self.arrays.get(self.owner(key))
        if array is None or not is_checked(array):
            return None
        if isinstance(array.metadata.codecs[0], ShardingCodec):
            return _shard_damage(array, _coords(array, key), data)
        return None if crc_intact(data) else "checksum mismatch"

    def _metadata(self, key: str, data: bytes) -> str | None:
        try:
            metadata = json.loads(data)
        except ValueError as error:
            return f"metadata is not valid JSON ({error})"
        if not isinstance(metadata, dict):
            return "metadata is not a JSON object"
        if metadata.get("node_type") == "array":
            node = key.rpartition("/")[0]
            try:
                parsed = ArrayV3Metadata.from_dict(metadata)
            except (ValueError, TypeError, KeyError) as error:
                return f"array metadata unreadable ({str(error).splitlines()[0][:80]})"
            self.arrays[node] = Array(AsyncArray(metadata=parsed, store_path=StorePath(self.store, node)))
        return None


def _coords(array: Array, key: str) -> tuple[int, ...]:
    """The chunk coordinates a key of the array names (`tokens/2/c/1/0/0/0/0` -> (1, 0, 0, 0, 0))."""
    return tuple(int(n) for n in re.findall(r"[0-9]+", key[len(array.path) + 1:]))


def _shard_damage(array: Array, coords: tuple[int, ...], data: bytes) -> str | None:
    """Why a shard's bytes are damaged (`cache.chunks.shard_damage`, over the rows the shard holds), or None."""
    sharding = array.metadata.codecs[0]
    if sharding.index_location != ShardingCodecIndexLocation.end or tuple(sharding.index_codecs) != CHECKED_INDEX:
        return None  # not a layout clipcache writes: its index cannot be read from the bytes alone
    per_file = rows_per_file(array)
    damaged = shard_damage(array, data, min(per_file, array.shape[0] - coords[0] * per_file))
    if not damaged:
        return None
    row = min(damaged)
    return f"video {coords[0] * per_file + row}: {damaged[row]}"
