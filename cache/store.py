"""Opening a store's root group, and the consolidated metadata kept for other tools.

Consolidated metadata (one copy of every node's metadata in the root `zarr.json`) lets xarray and
remote readers open a store in one request, but it is a snapshot: a node added later is invisible to
readers that trust it. So clipcache itself never reads through it (`open_root`), and every writer that
adds nodes consolidates again afterwards (`consolidate`).
"""
from __future__ import annotations

import warnings

import zarr

from clipcache.cache.location import Store, StoreUrl, parse_store, zarr_store
from clipcache.cache.objects import StoreObjects


def open_root(store: Store | str, mode: str = "r") -> zarr.Group:
    """The root group as it is stored now, not as the consolidated snapshot describes it. A store in object
    storage is asked for its root alone first: zarr's open sends several requests at once, and when the server
    cannot be reached those still in flight as the error ends the process abort the interpreter's exit."""
    store = parse_store(store)
    if isinstance(store, StoreUrl) and mode != "w":
        StoreObjects.of(store).exists("zarr.json")
    return zarr.open_group(zarr_store(store, read_only=mode == "r"), mode=mode, use_consolidated=False)


def consolidate(path: Store | str) -> None:
    """Rewrite the root's consolidated metadata from every node's own (one atomic file replacement). A dense
    store is never consolidated: its videos' nodes are added all through a run (80,000 for ActivityNet,
    ~90 MB of JSON that every open would parse), and a snapshot without them would hide them from readers
    that trust it (xarray and zarr look only at the root's)."""
    if open_root(path).attrs.get("layout") == "dense":
        return
    with warnings.catch_warnings():  # zarr notes that consolidation is not yet part of the v3 specification
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(zarr_store(parse_store(path), read_only=False))
