"""`clipcache copy SRC DST`: a store moved between a folder and object storage, object by object.

Every object's bytes are checked before they are written (`check.py`) and read back after, so a copy never passes
on damage it could see, nor adds its own. The destination is written in place, in a folder as in object storage:
its root `zarr.json` says `clipcache/unfinished` (`cache.place.UNFINISHED`) from the first write to the last, which
puts the source's root there, so no reader takes a copy in progress for a store. In place rather than built beside
and renamed because one rule then serves both kinds of store, and because a stopped copy is found where it was
going: the next run resumes it, skipping every object already there with the same bytes (size, then crc32c),
removing what the source does not hold, and copying the rest; the result equals an uninterrupted copy.

The copy holds the destination's writer lock throughout (`StoreLock` for a folder, `ObjectLock` for a URL), so no
extract writes it meanwhile. The source is only read.
"""
from __future__ import annotations

import itertools
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
from tqdm import tqdm

from clipcache import InputError
from clipcache.cache.info import size_text
from clipcache.cache.lease import ObjectLock
from clipcache.cache.location import Store, StoreUrl
from clipcache.cache.lock import Holder, StoreLock, store_lock
from clipcache.cache.objects import StoreObjects
from clipcache.cache.place import remove_store, store_format, writable_folder
from clipcache.cache.schema import UNFINISHED
from clipcache.pipeline.common import note
from clipcache.pipeline.copy.check import METADATA, ObjectCheck, is_metadata
from clipcache.pipeline.copy.config import CopyConfig


@dataclass
class CopySummary:
    src: Store
    dst: Store
    copied: int = 0  # objects written
    copied_bytes: int = 0
    skipped: int = 0  # objects already at DST with the same bytes (a resumed copy)
    skipped_bytes: int = 0
    removed: int = 0  # objects at an unfinished DST that SRC does not hold
    left_out: int = 0  # objects of SRC that are no part of its store (in an array's folder, none of its chunks)

    def __str__(self) -> str:
        extra = "".join(f", {count} {what}" for count, what in ((self.removed, "stray objects removed at DST"),
                                                                (self.left_out, "objects that are no chunk left out"))
                        if count)
        return (f"copied {self.src} to {self.dst}: {self.copied} objects ({size_text(self.copied_bytes)}) written, "
                f"{self.skipped} already there ({size_text(self.skipped_bytes)}) skipped{extra}")


def copy_store(cfg: CopyConfig) -> CopySummary:
    """Copy SRC to DST, or refuse with one line and nothing changed."""
    src, dst = cfg.src, cfg.dst
    _check_source(src)
    if _overlap(src, dst):
        raise InputError(f"{dst}: is the source store {src}, or lies inside it or holds it; copy to another place "
                         "(nothing was changed)")
    _check_destination(dst, cfg.overwrite)  # before taking the lock, so a refusal leaves not even the lock behind
    source = StoreObjects.of(src)
    check = ObjectCheck(source.store)
    root = _checked(source, check, METADATA, src)
    writable_folder(dst)
    target = StoreObjects.of(dst, read_only=False)
    lock = store_lock(dst)
    for stale in lock.acquire(Holder.this_process(f"copy from {src}"),
                              lambda: _start(src, dst, cfg.overwrite, target, root)):
        note(f"{dst}: removed the stale lock of a run that died ({stale.describe()})", cfg.quiet)
    with lock:
        summary = CopySummary(src, dst)
        _copy_objects(source, target, check, lock, summary, cfg.quiet)
        lock.check()
        _write(target, METADATA, root, dst)  # published: DST is a store from here on
        summary.copied, summary.copied_bytes = summary.copied + 1, summary.copied_bytes + len(root)
    return summary


def _check_source(src: Store) -> None:
    fmt = store_format(src)  # refuses what is not a clipcache store
    if fmt is None:
        raise InputError(f"{src}: no store there, nothing to copy")
    if fmt == UNFINISHED:
        raise InputError(f"{src}: an unfinished store (a creation, removal or copy that was stopped), not one to copy")


def _check_destination(dst: Store, overwrite: bool) -> str | None:
    """DST's format; a finished store is refused unless --overwrite, and `store_format` refuses anything that is
    not a clipcache store. A new or empty place, or an unfinished store (a stopped copy), is written."""
    fmt = store_format(dst)
    if fmt not in (None, UNFINISHED) and not overwrite:
        raise InputError(f"{dst}: a clipcache store is there already; --overwrite replaces it (nothing was changed)")
    return fmt


def _start(src: Store, dst: Store, overwrite: bool, target: StoreObjects, root: bytes) -> None:
    """Under the destination's lock: check it again (another run may have made it since), remove a store being
    replaced, and mark the destination unfinished before anything else is written into it."""
    if _check_destination(dst, overwrite) not in (None, UNFINISHED):
        remove_store(dst, src if isinstance(src, Path) else dst.parent)  # a URL source has no folder to protect
    unfinished = json.loads(root)
    unfinished["attributes"] = {"format": UNFINISHED}
    unfinished.pop("consolidated_metadata", None)
    _write(target, METADATA, json.dumps(unfinished).encode(), dst)


# objects copied at once: a request to object storage mostly waits (without the GIL); each holds one object in
# memory, and a token shard can be hundreds of MB (16 videos x 6 views of ViT-B/16 tokens: ~230 MB)
COPY_THREADS = 4


def _copy_objects(source: StoreObjects, target: StoreObjects, check: ObjectCheck, lock: StoreLock | ObjectLock,
                  summary: CopySummary, quiet: bool) -> None:
    """Every object of SRC but its root to DST: metadata first (it tells the checks the arrays), then the chunks,
    `COPY_THREADS` at a time, leaving out what lies in an array's folder without being one of its chunks (zarr's
    `.partial` file of a write that was killed: zarr never reads it); then what DST holds that SRC does not is
    removed."""
    keys = [key for key in source.keys() if key != METADATA and not _hidden(key)]
    there = {key for key in target.keys() if key != METADATA and not _hidden(key)}
    bar = tqdm(total=source.size(), unit="B", unit_scale=True, desc="copy", disable=quiet, file=sys.stderr)

    def copy(key: str) -> tuple[int, bool]:
        """(bytes, whether they were written) for an object copied or found there already."""
        data = _checked(source, check, key, summary.src)
        write = key not in there or not _same(target, key, data)
        if write:
            lock.check()
            _write(target, key, data, summary.dst)
        return len(data), write

    metadata = [key for key in keys if is_metadata(key)]
    pool = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="clipcache-copy")
    try:
        done = [copy(key) for key in metadata]  # first: the checks learn the arrays from them
        wanted = [key for key in keys if not is_metadata(key) and not check.foreign(key)]
        summary.left_out += len(keys) - len(metadata) - len(wanted)
        for size, written in itertools.chain(done, pool.map(copy, wanted)):
            if written:
                summary.copied, summary.copied_bytes = summary.copied + 1, summary.copied_bytes + size
            else:
                summary.skipped, summary.skipped_bytes = summary.skipped + 1, summary.skipped_bytes + size
            bar.update(size)
    finally:  # a damaged object or Ctrl-C: the copies not yet started are not started
        pool.shutdown(cancel_futures=True)
        bar.close()
    # what DST holds that SRC does not: a former copy's, or a `.partial` file of a copy that was killed
    for stray in sorted(there - set(metadata) - set(wanted)):
        lock.check()
        target.delete(stray)
        summary.removed += 1


def _checked(source: StoreObjects, check: ObjectCheck, key: str, src: Store) -> bytes:
    """The object's bytes, refused with one line when damaged: nothing of a damaged store is published."""
    data = source.read(key)
    why = "missing (removed while copying)" if data is None else check.damage(key, data)
    if why is not None:
        raise InputError(f"{src}: {check.owner(key)}: object {key} is damaged ({why}); the copy stopped with its "
                         f"destination unfinished; find the damage with `clipcache verify {src}` and redo it with "
                         "`clipcache extract ... --repair`")
    return data


def _same(target: StoreObjects, key: str, data: bytes) -> bool:
    """Whether DST holds `data` at `key` already: the sizes first (one stat or HEAD), then the checksums."""
    if target.object_size(key) != len(data):
        return False
    there = target.read(key)
    return there is not None and google_crc32c.value(there) == google_crc32c.value(data)


def _write(target: StoreObjects, key: str, data: bytes, dst: Store) -> None:
    """Write the object, then read it back: a copy must not add damage of its own."""
    target.write(key, data)
    back = target.read(key)
    if back is None or google_crc32c.value(back) != google_crc32c.value(data):
        raise InputError(f"{dst}: object {key} reads back other bytes than were written; the copy stopped with its "
                         "destination unfinished (check the storage, then run the copy again to resume)")


def _hidden(key: str) -> bool:
    """Keys with a part starting with "." are no part of a store (locks, a tool's own files)."""
    return any(part.startswith(".") for part in key.split("/"))


def _overlap(src: Store, dst: Store) -> bool:
    """Whether the two stores are one, or one lies inside the other."""
    if isinstance(src, Path) and isinstance(dst, Path):
        a, b = src.resolve(), dst.resolve()
        return a == b or a.is_relative_to(b) or b.is_relative_to(a)
    if isinstance(src, StoreUrl) and isinstance(dst, StoreUrl):
        a, b = src.url + "/", dst.url + "/"
        return a.startswith(b) or b.startswith(a)
    return False
