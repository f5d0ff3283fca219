"""Where a store goes: never into or over something that is not a clipcache store.

A run writes only into a store it recognises (the `format` attribute) or into a new or empty folder,
and `--overwrite` removes only a clipcache store, never the input folder or a folder holding it. A
store being replaced is first renamed aside (one rename, so a read-only or busy store is refused with
nothing deleted), and a store being created is built in a hidden folder beside it: a run killed
meanwhile leaves `.STORE.tmp-*` or `.STORE.old-*` behind, which the next run removes (these names are
only ever ours).

Object storage has no rename, so a store there is created and removed in place under its lock, and its root
metadata says when it is unfinished (`clipcache copy` writes a folder the same way): creation writes the root
first with the format `clipcache/unfinished` and its real format last; removal marks the root unfinished first,
deletes every other object, then the root. A reader never takes an unfinished store for one (its format is
refused), and a run killed meanwhile leaves an unfinished store that the next run under the lock removes
(`remove_leftovers`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

from clipcache import InputError
from clipcache.cache.location import Store, StoreUrl
from clipcache.cache.objects import StoreObjects
from clipcache.cache.schema import UNFINISHED


def aside(path: Path, kind: str) -> Path:
    """A hidden sibling of `path` named for what it is: `tmp` (being built) or `old` (being removed)."""
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}")


def _leftover(path: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(path.name)}\.(tmp|old)-[0-9a-f]{{8}}")


def remove_leftovers(path: Store) -> list[Store]:
    """Remove what runs killed while creating or replacing the store at `path` left (beside it, or in object
    storage the unfinished store itself). Call it under the store's lock, when no creation of this store can be
    under way."""
    if isinstance(path, StoreUrl):
        if store_format(path) != UNFINISHED:
            return []
        _delete_objects(path)
        return [path]
    if _unfinished(path):  # a copy into this folder that was stopped (`clipcache copy` would have resumed it)
        _remove_folder(path)
        return [path]
    pattern = _leftover(path)
    found = [p for p in path.parent.glob(f".{path.name}.*-*") if pattern.fullmatch(p.name) and p.is_dir()]
    for leftover in found:
        shutil.rmtree(leftover, ignore_errors=True)
    return found


def _unfinished(path: Path) -> bool:
    """Whether the folder holds an unfinished store (anything else is refused by `store_format`, in its turn)."""
    try:
        return json.loads((path / "zarr.json").read_bytes()).get("attributes", {}).get("format") == UNFINISHED
    except (OSError, ValueError, AttributeError):
        return False


def store_format(path: Store) -> str | None:
    """The format of the store at `path` (`UNFINISHED` for one in object storage being created or removed);
    None when nothing (or an empty folder) is there. Anything else is refused: a run never writes into a
    folder it did not make."""
    if isinstance(path, StoreUrl):
        objects = StoreObjects.of(path)
        root = objects.read("zarr.json")
        if root is None:
            if objects.keys():
                raise InputError(f"{path}: holds objects but no clipcache store; choose another store URL "
                                 "(nothing was changed)")
            return None
        return _format(root, path)
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder (a store is a folder); choose another store path")
    try:
        root = (path / "zarr.json").read_bytes()
    except FileNotFoundError:
        if not any(path.iterdir()):
            return None
        raise InputError(f"{path}: exists, is not empty and is not a clipcache store; choose another store "
                         "path (nothing was changed)") from None
    except OSError as error:
        raise InputError(f"{path}: its zarr.json is unreadable ({error}); choose another store path") from None
    return _format(root, path)


def _format(root: bytes, path: Store) -> str:
    try:
        attrs = json.loads(root).get("attributes", {})
    except (ValueError, AttributeError) as error:
        raise InputError(f"{path}: its zarr.json is unreadable ({error}); choose another store path") from None
    fmt = attrs.get("format") if isinstance(attrs, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("clipcache/"):
        raise InputError(f"{path}: is a zarr store but not a clipcache store; choose another store path")
    return fmt


def writable_folder(path: Store) -> None:
    """Refuse early when the store (or the folder it goes into) cannot be written, e.g. a read-only
    file system, instead of failing at the first write; create the folder it goes into when missing
    (`extract videos/ out/features.zarr` makes out/, as mkdir -p would). Object storage has no folders,
    and its permissions show at the lock's first write."""
    if isinstance(path, StoreUrl):
        return
    target = path if path.exists() else path.parent
    existing = next(folder for folder in (target, *target.parents) if folder.exists())
    if not os.access(existing, os.W_OK):
        raise InputError(f"{path}: {'the store' if existing == path else 'its folder'} is not writable "
                         "(read-only file system or no permission)")
    if target == path:
        return
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file where a folder should be, ...
        raise InputError(f"{path}: cannot create its folder {target} ({error.strerror})") from None


def remove_store(path: Store, inputs: Path) -> None:
    """`--overwrite`: remove the clipcache store at `path`; refuse anything else, and the input folder
    or a folder containing it even when it looks like a store."""
    if isinstance(path, StoreUrl):
        if store_format(path) is not None:
            _delete_objects(path)
        return
    real, videos = path.resolve(), inputs.resolve()
    if videos == real or videos.is_relative_to(real):
        raise InputError(f"--overwrite: {path} is or contains the input folder {inputs}; nothing was deleted")
    if store_format(path) is None:
        return
    _remove_folder(path)


def _remove_folder(path: Path) -> None:
    """Rename the store aside (one rename: a read-only or busy store is refused with nothing deleted), then
    delete it."""
    old = aside(path, "old")
    try:
        os.rename(path, old)
    except OSError as error:
        raise InputError(f"--overwrite: cannot replace {path} ({error.strerror or error}); nothing was deleted") \
            from None
    shutil.rmtree(old, ignore_errors=True)


def _delete_objects(path: StoreUrl) -> None:
    """Remove a clipcache store from object storage: marked unfinished first, so that no reader takes what is
    left for a store if this is stopped, its root last."""
    objects = StoreObjects.of(path, read_only=False)
    root = json.loads(objects.read("zarr.json") or b"{}")
    root["attributes"] = {"format": UNFINISHED}
    root.pop("consolidated_metadata", None)
    objects.write("zarr.json", json.dumps(root).encode())
    for key in objects.keys():
        if key != "zarr.json":
            objects.delete(key)
    objects.delete("zarr.json")
