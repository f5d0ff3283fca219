"""A store's files as objects named by key, the same for a folder and for object storage.

What zarr does not do for us (checking a chunk's bytes without decoding them, deleting a damaged chunk,
walking the store for nodes that lost their metadata) goes through these few calls on zarr's own store
(LocalStore or ObjectStore), so every such check is written once for both kinds of store.
"""
from __future__ import annotations

from collections import defaultdict

import zarr
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from clipcache.cache.location import Store, zarr_store


class StoreObjects:
    """Blocking access to the objects of one zarr store by key (`tokens/block_11/c/0/0/0/0`)."""

    def __init__(self, store: zarr.abc.store.Store) -> None:
        self.store = store

    @classmethod
    def of(cls, store: Store, read_only: bool = True) -> "StoreObjects":
        return cls(zarr_store(store, read_only))

    @classmethod
    def of_array(cls, array: zarr.Array) -> "StoreObjects":
        return cls(array.store_path.store)

    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes | None:
        """The object's bytes (from `start` to `end`, or its last `-start` bytes when `start` < 0); None when
        it does not exist."""
        byte_range = None if start is None else SuffixByteRequest(-start) if start < 0 else RangeByteRequest(start, end)
        buffer = sync(self.store.get(key, default_buffer_prototype(), byte_range))
        return None if buffer is None else buffer.to_bytes()

    def exists(self, key: str) -> bool:
        if isinstance(self.store, LocalStore):  # stage two asks before each chunk it reads: a stat, not a hop
            return (self.store.root / key).is_file()  # through zarr's event loop (~50x the time)
        return sync(self.store.exists(key))

    def write(self, key: str, data: bytes) -> None:
        sync(self.store.set(key, default_buffer_prototype().buffer.from_bytes(data)))

    def delete(self, key: str) -> None:
        """Remove the object; nothing when it is absent."""
        sync(self.store.delete(key))

    def delete_all(self, prefix: str) -> None:
        """Remove every object under `prefix` (a folder: with the folder)."""
        sync(self.store.delete_dir(prefix))

    def object_size(self, key: str) -> int:
        return sync(self.store.getsize(key))

    def size(self, prefix: str = "") -> int:
        """Bytes stored under `prefix` (the whole store by default)."""
        return sync(self.store.getsize_prefix(prefix))

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under `prefix`, sorted."""
        async def collect() -> list[str]:
            return [key async for key in self.store.list_prefix(prefix)]
        return sorted(sync(collect()))

    def tree(self) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        """({folder: its objects' names}, {folder: its sub-folders' names}) for the store's keys, the root
        being "."; what a walk of the folder would find."""
        files: dict[str, set[str]] = defaultdict(set)
        folders: dict[str, set[str]] = defaultdict(set)
        for key in self.keys():
            parts = key.split("/")
            for depth in range(len(parts)):
                (files if depth == len(parts) - 1 else folders)["/".join(parts[:depth]) or "."].add(parts[depth])
        return files, folders
