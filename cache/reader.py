"""Read access to a store: settings, per-video table and features (int8 dequantised on read).

Every read goes chunk by chunk along the video axis and is checked (a token chunk read straight from its
shard file: the first time this process reads it, and again whenever the file changes; `ViewReader`): a chunk
that should exist but does not (zarr would hand back zeros) or whose bytes fail their checksum or their
decoding is a StoreDamageError, one line naming the array and the videos, never zeros and never a codec
traceback.
"""
from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from functools import cached_property
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.core.buffer.cpu import NDBuffer
from zarr.errors import GroupNotFoundError, NodeNotFoundError
from zarr.storage import LocalStore

from clipcache import InputError
from clipcache.cache import quant
from clipcache.cache.chunks import (
    DECODE_ERRORS,
    EMPTY,
    chunk_exists,
    chunk_key,
    damaged_rows,
    index_bytes,
    is_checked,
    plain_inner_grid,
    rows_per_file,
    shard_index,
)
from clipcache.cache.dense import DenseDamage, read_video
from clipcache.cache.location import Store, StoreUrl, describe, parse_store
from clipcache.cache.objects import StoreObjects
from clipcache.cache.schema import (
    DONE,
    PENDING,
    TABLE_AT_CREATION,
    StoreSettings,
    check_format,
    scale_name,
    tokens_name,
)
from clipcache.cache.store import open_root

Index = slice | np.ndarray | list[int] | int


class StoreDamageError(InputError):
    """A chunk of the store is missing or its bytes are damaged."""


def damage_error(array: zarr.Array, rows: dict[int, str]) -> StoreDamageError:
    """One line naming the store, the array, the first damaged video (with its path when readable) and how
    to find and redo all of them; `rows` maps absolute video indices to reasons."""
    store = describe(array.store_path.store)
    first = min(rows)
    try:
        name = f"video {first} ({_path_of(store, first)})"
    except (StoreDamageError, KeyError):
        name = f"video {first}"
    more = f" and {len(rows) - 1} more videos" if len(rows) > 1 else ""
    return StoreDamageError(f"{store}: {array.path} of {name}{more} is damaged ({rows[first]}); "
                            f"`clipcache verify {store}` lists the damage, `clipcache extract` with --repair "
                            "redoes it")


def _path_of(store: Store | str, video: int) -> str:
    paths = open_root(store)["videos/path"]
    start = video // rows_per_file(paths) * rows_per_file(paths)
    return str(read_block(paths, video // rows_per_file(paths))[video - start])


def read_block(array: zarr.Array, block: int, selection: tuple = (), out: np.ndarray | None = None,
               must_exist: bool = True) -> np.ndarray:
    """array[rows of file `block`][selection], decoded into `out` when given. `must_exist`: the block was
    written, so a missing file is damage rather than a not-yet-written group."""
    per_file = rows_per_file(array)
    start = block * per_file
    region = (slice(start, min(start + per_file, array.shape[0])),)
    return _checked(array, block, region, selection, out, must_exist)


def read_chunk(array: zarr.Array, selection: tuple, out: np.ndarray | None = None) -> np.ndarray:
    """array[selection] for one done video (`selection[0]` an index), decoded into `out` when given: the
    read stage two's dataset makes per video. Damage raises StoreDamageError naming the video."""
    video = int(selection[0])
    return _checked(array, video // rows_per_file(array), (video,), tuple(selection[1:]), out, True)


def _checked(array: zarr.Array, block: int, region: tuple, selection: tuple, out: np.ndarray | None,
             must_exist: bool) -> np.ndarray:
    first = block * rows_per_file(array)
    if must_exist and is_checked(array) and not chunk_exists(array, block):
        rows = range(first, min(first + rows_per_file(array), array.shape[0]))
        raise damage_error(array, dict.fromkeys(rows, "chunk file missing"))
    try:
        if out is None:
            return array[(*region, *selection)]
        array.get_basic_selection((*region, *selection), out=NDBuffer.from_numpy_array(out))
        return out
    except DECODE_ERRORS as error:
        damaged = {first + row: why for row, why in damaged_rows(array, block).items()}
        if not damaged and is_checked(array):
            raise  # intact bytes that fail to decode: a bug, not damage
        reason = f"cannot be decoded: {str(error).splitlines()[0][:80]}"
        rows = range(first, min(first + rows_per_file(array), array.shape[0]))
        raise damage_error(array, damaged or dict.fromkeys(rows, reason)) from None


class ViewReader:
    """One (video, view) of a token array read straight from its shard file or object. The shard's index (read
    once per shard and checked) says where the view's inner chunk lies; one pread (or one range request to
    object storage) puts it into the caller's buffer and its crc32c is checked there. The same read through
    zarr's sharding codec costs about three times as much per sample (benchmarks/read.py). Arrays of any other
    layout (compressed, older stores) and every read that finds damage go through `read_chunk`, which names
    what is damaged. Several threads may read through one ViewReader at once.

    From a file, a chunk is checked the first time this reader reads it and again whenever its file changes
    (device, inode, size or modification time differ, as after a repair or any write); from object storage, on
    every read. Hashing every byte of every pass (crc32c, ~9 GB/s on one core, holding the GIL) held warm passes
    to about half of a plain read of the files (README). The limit: bytes changed in place whose file keeps its
    size and modification time (set back on purpose) are not found by a reader that checked them before; a new
    process, `clipcache verify` and every read through zarr still find them.

    A shard's index is read once; each read opens the file, reads and closes it (about 1 us a chunk,
    measured), so a pass over a store of 60,000 shard files never holds more than a few descriptors.
    `scattered`: the reads will take a small part of each file at random places (one view in several per
    video), so the kernel is told not to read ahead (POSIX_FADV_RANDOM): what it would read ahead is mostly
    views nobody asked for. `uncached`: files are read past the page cache (O_DIRECT, the aligned span around
    the chunks into a buffer of the thread's, then copied into place), for passes over more than the page cache
    can hold: there a cached read's rare hits do not pay for what filling the cache costs each miss (README);
    a file system that refuses such reads is read through the cache."""

    def __init__(self, array: zarr.Array, scattered: bool = False, uncached: bool = False) -> None:
        self.array, self.scattered = array, scattered
        self.chunk: tuple[int, ...] = array.chunks[2:]  # one (video, view)
        self.grid = plain_inner_grid(array)
        self._rows = rows_per_file(array)
        self._shards: dict[int, tuple[str, np.ndarray | None]] = {}  # shard -> (its key, its checked index)
        store = array.store_path.store
        self._root = Path(store.root) if isinstance(store, LocalStore) else None
        self._remote = None if self._root is not None else store.store  # obstore's, for range requests
        self.uncached = uncached and self._root is not None and hasattr(os, "O_DIRECT")
        self._spans = threading.local()  # each read thread's aligned buffer for uncached reads
        self._opening = threading.Lock()
        # shard -> (its file's identity when checked, which of its inner chunks were checked): a byte per chunk,
        # so a pass over Kinetics-400's 240,000 videos x 6 views remembers ~1.4 MB per array
        self._verified: dict[int, tuple[tuple[int, int, int, int], np.ndarray]] = {}

    MOST_VIEWS_PER_READ = 512  # two buffers each: within the 1,024 a preadv takes (Linux's IOV_MAX)

    def read(self, video: int, view: int, out: np.ndarray) -> np.ndarray:
        """array[video, view] decoded into `out` (C-contiguous, the array's dtype and inner chunk shape)."""
        self.read_run([(video, view, out)])
        return out

    def read_run(self, views: Sequence[tuple[int, int, np.ndarray]]) -> None:
        """Each (video, view) into its `out` (as `read`). Views that lie back to back in one shard, in file
        order, are read by one request (a preadv from a file, each view's bytes straight into its `out` and its
        crc32c beside it; one range request from object storage); anything else (and any view that is short or
        fails its check) view by view."""
        places = [self.place(video, view) if out.shape == self.chunk and out.flags.c_contiguous else None
                  for video, view, out in views]
        direct = len(views) <= self.MOST_VIEWS_PER_READ and self._back_to_back(places, [out for *_, out in views])
        if not direct and len(views) == 1:  # not in this layout, or its index is damaged: read_chunk names it
            read_chunk(self.array, views[0][:2], views[0][2])
            return
        if not direct:
            for item in views:
                self.read_run([item])
            return
        raws = [out.reshape(-1).view(np.uint8) for _, _, out in views]
        crcs = [bytearray(4) for _ in views]
        key, offset = places[0][:2]  # type: ignore[index]
        got, file = self._read_into(key, offset, [part for pair in zip(raws, crcs) for part in pair])
        checked_before = self._checked_chunks(views[0][0] // self._rows, file)
        for (video, view, out), raw, crc, place in zip(views, raws, crcs, places):
            got -= place[2]  # type: ignore[index]
            entry = self._entry(video, view)
            if got >= 0 and checked_before is not None and checked_before[entry]:
                continue
            checked = raw.view()
            checked.flags.writeable = False  # google_crc32c reads read-only buffers only
            if got < 0 or google_crc32c.value(checked) != int.from_bytes(crc, "little"):
                read_chunk(self.array, (video, view), out)
            elif checked_before is not None:
                checked_before[entry] = True

    def _checked_chunks(self, block: int, file: tuple[int, int, int, int] | None) -> np.ndarray | None:
        """Which inner chunks of shard `block` were checked while its file was `file` (forgotten once the file
        changed); None when nothing may be remembered (object storage, a file written during the read)."""
        if file is None:
            return None
        known = self._verified.get(block)
        if known is None or known[0] != file:
            known = self._verified[block] = (file, np.zeros(int(np.prod(self.grid)), dtype=bool))
        return known[1]

    def _entry(self, video: int, view: int) -> int:
        """The (video, view) chunk's place in its shard's index."""
        return (video % self._rows) * self.grid[1] + view

    def _read_into(self, key: str, offset: int, parts: list[np.ndarray | bytearray]
                   ) -> tuple[int, tuple[int, int, int, int] | None]:
        """Bytes of shard `key` from `offset` into `parts`, in order: how many arrived (-1: the object is
        gone since its index was read, and the caller's check sends each view to read_chunk, which names it),
        and the file's identity as it was read (None from object storage, or where it changed during the read)."""
        if self._remote is not None:
            import obstore

            try:
                data = memoryview(obstore.get_range(self._remote, key, start=offset, length=sum(map(len, parts))))
            except FileNotFoundError:
                return -1, None
            for part, at in zip(parts, np.cumsum([0, *map(len, parts[:-1])])):
                size = min(len(part), max(0, len(data) - int(at)))
                np.frombuffer(part, np.uint8)[:size] = np.frombuffer(data[at:at + size], np.uint8)
            return len(data), None
        uncached = self.uncached
        try:
            fd = os.open(self._root / key, os.O_RDONLY | (os.O_DIRECT if uncached else 0))
        except OSError as error:
            if uncached and error.errno == errno.EINVAL:  # a file system without direct reads
                self.uncached = False
                return self._read_into(key, offset, parts)
            return -1, None
        try:
            if self.scattered and not uncached and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            before = _identity(os.fstat(fd))
            try:
                got = self._read_uncached(fd, offset, parts) if uncached else os.preadv(fd, parts, offset)
            except OSError as error:
                if not (uncached and error.errno == errno.EINVAL):
                    raise
                self.uncached = False  # the device asks for more alignment than a page: read through the cache
                return self._read_into(key, offset, parts)
            return got, before if _identity(os.fstat(fd)) == before else None  # written meanwhile: not remembered
        finally:
            os.close(fd)

    ALIGN = 4096  # direct reads: offsets, lengths and memory in multiples of a page, as any disk's block divides

    def _read_uncached(self, fd: int, offset: int, parts: list[np.ndarray | bytearray]) -> int:
        """The bytes of `parts` from `offset` of an O_DIRECT file: the aligned span around them read into this
        thread's buffer, then copied into each part (numpy copies without the GIL). How many arrived."""
        start, length = offset - offset % self.ALIGN, sum(map(len, parts))
        span = -(-(offset + length - start) // self.ALIGN) * self.ALIGN
        buffer = getattr(self._spans, "buffer", None)
        if buffer is None or len(buffer) < span:
            buffer = self._spans.buffer = mmap.mmap(-1, span)  # anonymous mappings start on a page
        got = os.preadv(fd, [memoryview(buffer)[:span]], start)
        data = np.frombuffer(buffer, np.uint8, max(0, min(got - (offset - start), length)), offset - start)
        at = 0
        for part in parts:
            size = min(len(part), len(data) - at)
            np.frombuffer(part, np.uint8)[:size] = data[at:at + size]
            at += size
        return len(data)

    @staticmethod
    def _back_to_back(places: Sequence[tuple[str, int, int] | None], outs: Sequence[np.ndarray]) -> bool:
        """Whether every view lies in the first one's file right after the one before, and fills its `out`."""
        end = places[0][1] if places[0] is not None else -1
        for place, out in zip(places, outs):
            if place is None or place[0] != places[0][0] or place[1] != end or place[2] != out.nbytes + 4:
                return False
            end += place[2]
        return True

    def open_shards(self, videos: Iterable[int], pool: Executor) -> None:
        """Read the indexes of the shards holding `videos` that are not open yet, all at once on `pool`: in object
        storage each is a request of its own, and a shuffled first pass over thousands of shards would otherwise
        wait for them one after another (measured on a local S3 server answering 30 ms late: first passes of int8
        tokens 117-123 MB/s with this, 56-97 without; README)."""
        if self.grid is None:
            return
        blocks = sorted({video // self._rows for video in videos} - self._shards.keys())
        for block, found in zip(blocks, pool.map(self._shard, blocks)):
            with self._opening:
                self._shards.setdefault(block, found)

    def place(self, video: int, view: int) -> tuple[str, int, int] | None:
        """(shard key, offset, length with its checksum) of the (video, view) chunk; None where the array is
        not in this layout or the shard index is unreadable or has no entry for it."""
        if self.grid is None:
            return None
        block = video // self._rows
        if block not in self._shards:
            with self._opening:  # one thread opens it; the others wait for it
                if block not in self._shards:
                    self._shards[block] = self._shard(block)
        file, index = self._shards[block]
        if index is None:
            return None
        offset, length = (int(v) for v in index[self._entry(video, view)])
        return None if offset == EMPTY else (file, offset, length)

    def _shard(self, block: int) -> tuple[str, np.ndarray | None]:
        key, entries = chunk_key(self.array, block), int(np.prod(self.grid))
        try:
            tail = StoreObjects.of_array(self.array).read(key, -index_bytes(entries))
        except OSError:
            tail = None
        return key, None if tail is None else shard_index(tail, entries)


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or written: device, inode, size, modification time."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def read_rows(array: zarr.Array, rows: np.ndarray, must_exist: Callable[[int], bool] = lambda block: True
              ) -> np.ndarray:
    """array[rows] in the given order, read as whole chunks (or shards) along the video axis, checked.
    Where a shard holds a damaged video, the other videos asked for are still read, one by one.

    zarr's own orthogonal selection with an index array goes element by element: ~100x slower.
    """
    rows = np.asarray(rows, dtype=np.int64)
    per_file = rows_per_file(array)
    out = np.empty((len(rows),) + array.shape[1:], dtype=array.dtype)
    for block in np.unique(rows // per_file):
        mask = rows // per_file == block
        try:
            out[mask] = read_block(array, int(block), must_exist=must_exist(int(block)))[rows[mask] - block * per_file]
        except StoreDamageError:
            damaged = damaged_rows(array, int(block)) if array.shards else {}
            wanted = rows[mask] - block * per_file
            if not damaged or any(int(row) in damaged for row in wanted):
                raise
            out[mask] = [read_chunk(array, (int(row + block * per_file),)) for row in wanted]
    return out


class CacheReader:
    """A store opened read-only. Data of videos whose status is not done must never be used."""

    def __init__(self, path: Store | str) -> None:
        self.path = parse_store(path)
        if isinstance(self.path, Path) and not self.path.exists():
            raise InputError(f"{self.path}: no such store")
        try:
            self.root = open_root(self.path)
        except (GroupNotFoundError, NodeNotFoundError, FileNotFoundError, NotADirectoryError):
            what = "no such store" if isinstance(self.path, StoreUrl) else "not a zarr store"
            raise InputError(f"{self.path}: {what}") from None
        except ValueError as error:  # a zarr.json that is not JSON, or not a group's metadata
            raise InputError(f"{self.path}: its zarr.json is unreadable ({str(error).splitlines()[0][:80]})") \
                from None
        attrs = dict(self.root.attrs)
        self.format_version = check_format(attrs, str(self.path))
        self.attrs = attrs
        self.settings = StoreSettings.from_attrs(attrs, str(self.path))
        self._check_labels()

    def _check_labels(self) -> None:
        labels = self.column("label")
        if len(labels) != self.num_videos:
            raise InputError(f"{self.path}: videos/label holds {len(labels)} videos, the store says {self.num_videos}")
        if len(labels) and labels.max() >= len(self.classes):
            raise InputError(f"{self.path}: labels go up to {labels.max()} but the store names only "
                             f"{len(self.classes)} classes (its 'classes' attribute is damaged)")

    @property
    def num_videos(self) -> int:
        return self.settings.num_videos

    @property
    def classes(self) -> tuple[str, ...]:
        return self.settings.classes

    def array(self, name: str) -> zarr.Array:
        try:
            return self.root[name]
        except KeyError:
            raise InputError(f"{self.path}: array {name} is missing (the store is incomplete or damaged; "
                             f"`clipcache verify {self.path}` lists what is wrong)") from None

    def column(self, name: str) -> np.ndarray:
        """One per-video column (videos/<name>) read whole."""
        array = self.array(f"videos/{name}")
        if name in TABLE_AT_CREATION:  # in format 1 a chunk of zeros (pending, label 0) was not written
            return read_rows(array, np.arange(array.shape[0]), lambda block: self.format_version >= 2)
        return read_rows(array, np.arange(array.shape[0]), self._written)

    @cached_property
    def status(self) -> np.ndarray:
        return self.column("status")

    @cached_property
    def done(self) -> np.ndarray:
        """Indices of the videos whose features can be trusted."""
        return np.flatnonzero(self.status == DONE)

    def _written(self, block: int) -> bool:
        """Whether shard group `block` was written (then every array holds its chunk)."""
        start, stop = self.settings.group_range(block)
        return bool((self.status[start:stop] != PENDING).any())

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

    def dense(self, video: int, name: str = "pooled") -> np.ndarray:
        """One done video's time series in a dense store: `time` (seconds), `frame`, `pooled` (samples, E) or
        `block_<b>` (samples, L, D), checked; damage is one line naming the array and the video."""
        if not self.settings.dense:
            raise InputError(f"{self.path}: a store of clips ({self.settings.frames} frames per view) has no "
                             "time series; extract with --fps for one")
        try:
            return read_video(self.root, self.settings, video, name, int(self.samples[video]))
        except DenseDamage as damage:
            raise StoreDamageError(f"{self.path}: {damage.array} of video {video} ({_path_of(self.path, video)}) "
                                   f"is damaged ({damage.reason}); `clipcache verify {self.path}` lists the damage, "
                                   "`clipcache extract` with --repair redoes it") from None

    @cached_property
    def samples(self) -> np.ndarray:
        """Frames stored per video of a dense store (0 for videos not done)."""
        return np.where(self.status == DONE, self.column("samples"), 0)

    def frozen(self) -> dict[str, np.ndarray]:
        """Frozen encoder parameters that heads need without loading CLIP (ln_post, proj, ln_1, qkv)."""
        return {name: read_rows(array, np.arange(array.shape[0])) for name, array in self.array("frozen").arrays()}

    def _take(self, name: str, index: Index) -> np.ndarray:
        rows = np.arange(self.num_videos)[index]
        values = read_rows(self.array(name), np.atleast_1d(rows), self._written)
        return values[0] if np.ndim(rows) == 0 else values
