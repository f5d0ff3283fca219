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

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.core.array import Array, AsyncArray
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.storage import StorePath

from clipcache.cache.chunks import EMPTY, crc_intact, index_bytes, is_checked, shard_index

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
        rest = key[len(array.store_path.path) + 1:]
        coords = tuple(int(n) for n in re.findall(r"[0-9]+", rest))
        return len(coords) != array.ndim or array.metadata.encode_chunk_key(coords) != rest

    def damage(self, key: str, data: bytes) -> str | None:
        """Why `data`, the bytes of `key`, are not what the store's writer made; None when intact (or when nothing
        in them can tell)."""
        if is_metadata(key):
            return self._metadata(key, data)
        array = self.arrays.get(self.owner(key))
        if array is None or not is_checked(array):
            return None
        if isinstance(array.metadata.codecs[0], ShardingCodec):
            return _shard_damage(array, data)
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


def _shard_damage(array: Array, data: bytes) -> str | None:
    """A shard whose index (at its end, crc32c-checked) and inner chunks (crc32c each) do not match."""
    sharding = array.metadata.codecs[0]
    if sharding.index_location != ShardingCodecIndexLocation.end or tuple(sharding.index_codecs) != CHECKED_INDEX:
        return None  # not a layout clipcache writes: its index cannot be read from the bytes alone
    entries = int(np.prod([shard // chunk for shard, chunk in zip(array.shards, array.chunks)]))
    index = shard_index(data, entries)
    if index is None:
        return "shard index damaged (cut short or checksum mismatch)"
    chunks_end = len(data) - index_bytes(entries)
    for entry, (offset, length) in enumerate(index.tolist()):
        if offset != EMPTY and (offset + length > chunks_end or not crc_intact(data[offset:offset + length])):
            return f"inner chunk {entry} of the shard fails its checksum"
    return None
