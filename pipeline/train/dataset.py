"""A torch Dataset over a store that reads only the features a head asks for.

Items are (video, view) pairs. Training has one item per video and draws its view (augmented views
included) and a jittered frame subset from tables fixed by (seed, epoch), so a run is reproducible
and resumable whatever the batching; evaluation walks every test view (clips x crops) with the segment
centres, so predictions can be averaged per video. Indexing with a list of items returns a whole batch:
from preloaded arrays (RAM or GPU) one gather, otherwise each (video, view) chunk read straight from its
shard file into a batch buffer (reused once no batch uses it) on the read threads, a batch's chunks in file
order (the batch is the same in any order; chunks back to back in a file are one read), past the page cache
where the features are much larger than memory; small views are kept once read. `start` hands out a
batch whose reads are under way, so a loader can start the next batch before the caller uses this one
(loader.py). DataLoader workers open the store themselves.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import cache, partial
from typing import NamedTuple

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset, get_worker_info

from clipcache import InputError
from clipcache.cache.location import is_remote, parse_store
from clipcache.cache.reader import CacheReader, ViewReader, read_chunk, read_rows
from clipcache.cache.schema import scale_name, tokens_name
from clipcache.cache.store import open_root
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.train.buffers import BatchBuffers
from clipcache.pipeline.train.cache_probe import ProbeResult, probe

Batch = dict[str, torch.Tensor]
# Threads reading batches' chunks: one read per hand-off for chunks of at least PARALLEL_BYTES, smaller ones in
# turn by one thread (a hand-off costs more than their read). On the 2-core benchmark machine, float16 ViT-B/16
# views, batch 32, medians of 4: 1 thread 627 MB/s cold and 1,758 warm; 2 threads 807 and 2,988; 4 threads 825
# and 3,031. On a 2-core Intel Xeon with a virtio disk, cold, 6 views: 2 threads 1,436 MB/s, 4 threads 1,763,
# 8 threads 1,799, 16 threads 1,782 (README). Chunks back to back in one file are one read of up to RUN_BYTES: it
# saves system calls for small chunks, while a few MB per read still lets the threads share a batch's large ones.
READ_THREADS = 4
PARALLEL_BYTES = 1 << 18
RUN_BYTES = 1 << 22
# A store in object storage: a range request's time is mostly waiting for the server (tens of ms to S3's first
# byte), which a read thread spends without the GIL, so each read is its own request whatever its size and every
# read of the batch being read and of the next one is in flight at once, up to REQUESTS_IN_FLIGHT (64 requests of
# a ~2.4 MB ViT-B/16 view at ~50 ms each is ~3 GB/s, more than one host trains on; threads are started only as
# reads wait for them). Local disks keep READ_THREADS: there more threads only queue at the disk.
REQUESTS_IN_FLIGHT = 64
# Streamed features more than UNCACHED_SHARE times the memory the page cache could use are read past it (ViewReader
# uncached) where a probe of the store finds that faster on this machine (cache_probe.py): a shuffled pass finds
# about memory / features of its views cached. On the 2-core Intel Xeon (virtio disk) a later pass from a cold cache
# read 0.76-1.03 of a sequential read of the files through the cache and 0.97-1.48 past it; warm, through the
# cache, ~4x that: a cached read pays from ~30% of hits on (README).
UNCACHED_SHARE = 4
# Small views of streamed features (each under PARALLEL_BYTES: int8 scales, pooled embeddings, CLS tokens) are kept
# in this process once read, where all of them take at most 1 / HELD_SHARE of the free memory (int8 scales are
# 1/192 of a ViT-B's tokens): 64 reads of 6 KB per batch took ~15% of a warm int8 pass (README).
HELD_SHARE = 8


def restrict_to_classes(reader: CacheReader, videos: np.ndarray, classes: tuple[str, ...] | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Videos of the given classes with labels renumbered in that order (all classes when None)."""
    labels = reader.column("label")[videos].astype(np.int64)
    if classes is None:
        return videos, labels
    unknown = sorted(set(classes) - set(reader.classes))
    if unknown:
        raise InputError(f"{reader.path}: unknown classes {unknown[:5]}")
    remap = np.full(len(reader.classes) + 1, -1, np.int64)  # the last slot maps label -1
    for new, name in enumerate(classes):
        remap[reader.classes.index(name)] = new
    mapped = remap[labels]
    return videos[mapped >= 0], mapped[mapped >= 0]


def frame_subset(stored: int, wanted: int, offsets: np.ndarray | float) -> np.ndarray:
    """Frame floor((t + offset_t) * stored / wanted) of each of `wanted` equal segments of the stored
    frames: offsets 0.5 give the segment centres, uniform random offsets a jittered subset."""
    positions = (np.arange(wanted) + offsets) * stored / wanted
    return np.minimum(np.floor(positions).astype(np.int64), stored - 1)


def free_memory(device: torch.device) -> int:
    """Bytes that could still be allocated on `device` (for RAM: MemAvailable, as the kernel sees it)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError):  # not Linux: half the physical memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


class CacheDataset(Dataset):
    """`dataset[i]` is one item, `dataset[[i, j, ...]]` a batch (see `loader.batch_loader`): dicts with the
    requested features as stored, to be moved and cast on the device by `evaluate.predict.to_device`
    ("pooled" (T, E) and "tokens" (M, T, L', D) float16; int8 stores: "tokens" int8 plus "token_scales"
    (M, T, L'), half the bytes again), "label", "video" (position in `videos`) and "view".

    `preload`: True holds the needed arrays in memory (on `device` when it is a GPU with room, else in
    RAM) and refuses when they exceed half of what is free; None does so only when they fit; False
    streams them from the store (small views are kept once read: HELD_SHARE). `uncached`: whether streamed
    views are read past the page cache; None: where their size passes UNCACHED_SHARE and a probe of the store
    (`probed`) finds it faster.
    """

    def __init__(self, reader: CacheReader, request: FeatureRequest, videos: np.ndarray, frames: int,
                 train: bool, preload: bool | None = None, device: torch.device = torch.device("cpu"),
                 seed: int = 0, classes: tuple[str, ...] | None = None, uncached: bool | None = None) -> None:
        settings = reader.settings
        missing = [layer for layer in request.layers if layer not in settings.layers]
        if missing:
            raise InputError(f"{reader.path}: the head needs blocks {missing}, the store holds "
                             f"{list(settings.layers)} (extract again with --layers including them)")
        if not 1 <= frames <= settings.frames:
            raise InputError(f"{reader.path}: the head reads {frames} frames per view, the store holds "
                             f"{settings.frames} (use --frames {settings.frames} or fewer)")
        self.path, self.request, self.train, self.seed = str(reader.path), request, train, seed
        self.videos, self.labels = restrict_to_classes(reader, np.asarray(videos, dtype=np.int64), classes)
        self.frames, self.stored_frames = frames, settings.frames
        self.views = settings.views if train else settings.clips * settings.crops
        count = len(self.videos)
        self._rows = np.arange(count) if train else np.repeat(np.arange(count), self.views)
        self._fixed_views = None if train else np.tile(np.arange(self.views), count)
        self._sources = self._source_arrays(settings.dtype == "int8")
        self._shapes = {key: self._view_shape(reader, names[0]) for key, names in self._sources.items()}
        self._dtypes = {key: reader.array(names[0]).dtype for key, names in self._sources.items()}
        self.set_epoch(0)
        self.placement = self._placement(preload, device)
        scattered = train and self.views > 1  # a pass reads one view in several of each file
        self._local = _ProcessLocal(self.path, scattered, False)
        self.probed: ProbeResult | None = None
        if uncached is None:
            cache = free_memory(torch.device("cpu"))  # what the page cache could grow to
            if self.placement is None and not self._local.remote and self.feature_bytes() > UNCACHED_SHARE * cache:
                self.probed = self.probe_cache()
            uncached = self.probed is not None and self.probed.read_past
        self._local.uncached = uncached
        self._holdable = self._small_keys() if self.placement is None else set()
        self._features = {key: self._load(reader, key).to(self.placement) for key in self._sources} \
            if self.placement is not None else {}

    def _source_arrays(self, int8: bool) -> dict[str, list[str]]:
        """The arrays behind each batch entry; tokens are (M, ...) with one array per block."""
        sources = {"pooled": ["pooled"]} if self.request.pooled else {}
        if self.request.layers:
            sources["tokens"] = [tokens_name(layer) for layer in self.request.layers]
            if int8:
                sources["scales"] = [scale_name(layer) for layer in self.request.layers]
        return sources

    def _view_shape(self, reader: CacheReader, name: str) -> tuple[int, ...]:
        """(T, ...) of one view of array `name`: only the CLS token where the head asks for that."""
        shape = reader.array(name).shape[2:]
        return (shape[0], 1, *shape[2:]) if self.request.cls_only and name.startswith("tokens/") else shape

    def _selection(self, key: str) -> tuple[slice, ...]:
        return tuple(slice(0, size) for size in self._shapes[key])

    def feature_bytes(self) -> int:
        """Bytes of the requested arrays for these videos and views, as stored."""
        return sum(self._key_bytes(key) for key in self._sources)

    def _view_bytes(self, key: str) -> int:
        """Bytes of one view of one of `key`'s arrays."""
        return int(np.prod(self._shapes[key])) * self._dtypes[key].itemsize

    def _key_bytes(self, key: str) -> int:
        return len(self.videos) * self.views * len(self._sources[key]) * self._view_bytes(key)

    def where(self) -> str:
        """How much the head reads and where from, for the run's header and run.json."""
        size = f"{self.feature_bytes() / 1e6:.2f} MB"
        if self.placement is not None:
            return f"{size} preloaded on {self.placement}"
        return f"{size} streamed from the store" + (f", {self.probed}" if self.probed else "")

    def probe_cache(self) -> ProbeResult:
        """How fast this store's views read past the page cache and through it here (cache_probe.py): the token
        arrays where the head reads tokens (the bulk of its bytes), else every array it reads."""
        here = self._here()
        names = self._sources.get("tokens") or [name for names in self._sources.values() for name in names]
        readers = [(here.new_view_reader(name, uncached=True), here.new_view_reader(name, uncached=False))
                   for name in names]
        return probe(readers, self.videos, self.views, READ_THREADS, self.seed)

    def _small_keys(self) -> set[str]:
        """The batch entries whose views are small enough to keep once read, where they fit (HELD_SHARE)."""
        small = {key for key in self._sources if self._view_bytes(key) < PARALLEL_BYTES}
        fits = sum(map(self._key_bytes, small)) <= free_memory(torch.device("cpu")) // HELD_SHARE
        return small if fits else set()

    def _placement(self, preload: bool | None, device: torch.device) -> torch.device | None:
        if preload is False:
            return None
        needed = self.feature_bytes()
        places = [device, torch.device("cpu")] if device.type == "cuda" else [torch.device("cpu")]
        free = {place: free_memory(place) for place in places}
        for place in places:
            if needed <= free[place] // 2:
                return place
        if preload:
            room = ", ".join(f"{free[p] / 1e9:.1f} GB on {p}" for p in places)
            raise InputError(f"--preload: {self.path}: the features this head reads take {needed / 1e9:.1f} GB, "
                             f"more than half of what is free ({room}); leave out --preload to stream them")
        return None

    def _load(self, reader: CacheReader, key: str) -> torch.Tensor:
        """(videos, views, M, T, ...): one read per video where a video is a chunk (tokens), else one
        read per chunk of videos (pooled embeddings, scales)."""
        names = self._sources[key]
        out = torch.empty((len(self.videos), self.views, len(names), *self._shapes[key]),
                          dtype=_torch_dtype(self._dtypes[key]))
        target = out.numpy()
        selection = (slice(0, self.views), *self._selection(key))
        for m, name in enumerate(names):
            array = reader.array(name)
            if array.chunks[0] == 1:
                for i, video in enumerate(self.videos):
                    read_chunk(array, (int(video), *selection), target[i, :, m])
            else:
                target[:, :, m] = read_rows(array, self.videos)[(slice(None), *selection)]
        return out

    def set_epoch(self, epoch: int) -> None:
        """Training draws (view, frame offsets) per item from (seed, epoch) only: reproducible, resumable.
        Call it before the loader's workers start: they are forked with the epoch's tables."""
        if self.train:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch_views = rng.integers(self.views, size=len(self._rows))
            self._epoch_offsets = rng.random((len(self._rows), self.frames))

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, item: int | Sequence[int]) -> Batch:
        if isinstance(item, (int, np.integer)):
            return {key: value[0] for key, value in self.start(np.array([item])).result().items()}
        return self.start(np.asarray(item, dtype=np.int64)).result()

    def _draws(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(rows, views, frames) of the items; frames None when every stored frame is used in order."""
        rows = self._rows[items]
        if self.train:
            views = self._epoch_views[items]
            frames = frame_subset(self.stored_frames, self.frames, self._epoch_offsets[items])
        else:
            views = self._fixed_views[items]
            frames = np.broadcast_to(frame_subset(self.stored_frames, self.frames, 0.5), (len(items), self.frames))
        return rows, views, None if self.frames == self.stored_frames else frames

    def start(self, items: np.ndarray) -> PendingBatch:
        """The batch of `items`, its reads started on this process's read threads (preloaded: gathered now)."""
        rows, views, frames = self._draws(items)
        features, reads, then = {}, [], []
        for key in self._sources:
            if self._features:
                features[key] = self._gather(key, rows, views, frames)
            else:
                features[key], started, finish = self._read(key, rows, views, frames)
                reads += started
                then += [finish] if finish is not None else []
        batch = {"label": torch.from_numpy(self.labels[rows]), "video": torch.from_numpy(rows),
                 "view": torch.from_numpy(views)}
        if "pooled" in features:
            batch["pooled"] = features["pooled"][:, 0]
        if "tokens" in features:
            batch["tokens"] = features["tokens"]
        if "scales" in features:
            batch["token_scales"] = features["scales"]
        return PendingBatch(batch, reads, then)

    def _gather(self, key: str, rows: np.ndarray, views: np.ndarray, frames: np.ndarray | None) -> torch.Tensor:
        """From the preloaded (videos, views, M, T, ...) tensor: one indexing operation on its device."""
        data = self._features[key]
        rows_t, views_t = (torch.from_numpy(a).to(data.device) for a in (rows, views))
        if frames is None:  # whole (M, T, ...) blocks: index_select copies them as rows, ~3x faster
            flat = data.flatten(0, 1)
            out = self._out(key, (len(rows), *flat.shape[1:]), flat.dtype) if data.device.type == "cpu" else None
            return torch.index_select(flat, 0, rows_t * data.shape[1] + views_t, out=out)
        layers = torch.arange(data.shape[2], device=data.device)
        frames_t = torch.from_numpy(np.ascontiguousarray(frames)).to(data.device)
        return data[rows_t[:, None, None], views_t[:, None, None], layers[None, :, None], frames_t[:, None, :]]

    def _read(self, key: str, rows: np.ndarray, views: np.ndarray, frames: np.ndarray | None
              ) -> tuple[torch.Tensor, list[Future[None]], Callable[[], None] | None]:
        """A (B, M, T', ...) buffer, the reads under way that fill it from the store (a read waits on the
        disk or copies without holding the GIL) and what to do once they are done. Views read straight from their
        shard files go in file order, those back to back in one file as one read (`_runs`); the rest one by
        one. Small views kept in this process (`_Held`) are read only the first time, into where they are kept,
        and copied into the batch once the reads are done."""
        names = self._sources[key]
        out = self._out(key, (len(rows), len(names), self.frames, *self._shapes[key][1:]),
                        _torch_dtype(self._dtypes[key]))
        target = out.numpy()
        direct: list[_View] = []
        jobs: list[Callable[[], None]] = []
        here = self._here()
        held = here.held(key, (len(self.videos), self.views, len(names), *self._shapes[key]), self._dtypes[key]) \
            if key in self._holdable else None
        missing = ~held.filled[rows, views] if held is not None else np.ones((len(rows), len(names)), bool)
        for m, name in enumerate(names):
            reader = self._view_reader(name)  # made here, not by several threads at once
            whole = self._shapes[key] == reader.chunk
            if whole and here.opening is not None:
                reader.open_shards([int(self.videos[row]) for row in rows[missing[:, m]]], here.opening)
            for b in np.flatnonzero(missing[:, m]):
                row, view, video = rows[b], int(views[b]), int(self.videos[rows[b]])
                into, subset = (held.values[row, view, m], None) if held is not None else \
                    (target[b, m], None if frames is None else frames[b])
                place = reader.place(video, view) if whole else None
                if place is None:
                    jobs.append(partial(self._read_view, key, reader, video, view, subset, into))
                else:
                    direct.append(_View(place, reader, video, view, subset, into))
        jobs += [partial(_read_run, run) for run in _runs(sorted(direct, key=lambda v: v.place[:2]))]
        finish = None if held is None else partial(held.copy, rows, views, frames, missing, target)
        if not jobs:
            return out, [], finish
        if here.remote or self._view_bytes(key) >= PARALLEL_BYTES:
            return out, [here.threads.submit(job) for job in jobs], finish
        return out, [here.threads.submit(_in_turn, jobs)], finish

    def _read_view(self, key: str, reader: ViewReader, video: int, view: int, frames: np.ndarray | None,
                   out: np.ndarray) -> None:
        """One (video, view) of `reader`'s array into `out`: straight from its shard file when the head takes
        the view whole (every frame into place; for a subset the view, then its frames), else through zarr."""
        if self._shapes[key] == reader.chunk:
            if frames is None:
                reader.read(video, view, out)
            else:
                np.take(reader.read(video, view, np.empty(reader.chunk, out.dtype)), frames, axis=0, out=out)
        elif frames is None:
            read_chunk(reader.array, (video, view, *self._selection(key)), out)
        else:
            np.take(read_chunk(reader.array, (video, view, *self._selection(key))), frames, axis=0, out=out)

    def _out(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Memory for a batch entry: a pooled buffer in this process (buffers.py), shared memory in a
        DataLoader worker (handed to the main process without another copy; the worker cannot know when the
        main process is done with it, so nothing is reused there)."""
        if get_worker_info() is not None:
            return torch.empty(shape, dtype=dtype).share_memory_()
        return self._here().buffers.take(key, shape, dtype)

    def _here(self) -> _ProcessLocal:
        """This process's readers, buffers and threads: a DataLoader worker, a fork of the process that made
        the dataset, has none of its parent's threads and starts afresh."""
        if self._local.pid != os.getpid():
            self._local = _ProcessLocal(self.path, self._local.scattered, self._local.uncached)
        return self._local

    def _view_reader(self, name: str) -> ViewReader:
        return self._here().view_reader(name)


class HeldInMemory:
    """For datasets that read their features whole into host memory when made (the localisation heads')."""

    placement = None  # not a CacheDataset's preloaded tensors: gathered per batch on the host

    def feature_bytes(self) -> int:
        raise NotImplementedError

    def where(self) -> str:
        """How much the head reads and where from, for the run's header and run.json."""
        return f"{self.feature_bytes() / 1e6:.2f} MB held in memory"


class PendingBatch:
    """A batch whose reads are under way. `result()` waits for every one of them, so that no read still
    writes into the batch when it is handed out, raises the first failure (damage: one line naming the
    video), then does what `then` asks (copies of views kept in memory)."""

    def __init__(self, batch: Batch, reads: list[Future[None]], then: Sequence[Callable[[], None]] = ()) -> None:
        self._batch, self._reads, self._then = batch, reads, then

    def result(self) -> Batch:
        wait(self._reads)
        for read in self._reads:
            read.result()
        for step in self._then:
            step()
        return self._batch


def _in_turn(reads: list[Callable[[], None]]) -> None:
    for read in reads:
        read()


class _View(NamedTuple):
    """A (video, view) to read straight from its shard file into `out`, all stored frames or `frames` of them."""
    place: tuple[str, int, int]  # file, offset, length (ViewReader.place)
    reader: ViewReader
    video: int
    view: int
    frames: np.ndarray | None
    out: np.ndarray


def _runs(views: list[_View]) -> list[list[_View]]:
    """Views in file order, cut into runs that lie back to back in one file, each up to RUN_BYTES (one read,
    on one thread) and ViewReader.MOST_VIEWS_PER_READ views."""
    runs: list[list[_View]] = []
    for view in views:
        last = runs[-1][-1] if runs else None
        if last is not None and last.place[0] == view.place[0] and last.place[1] + last.place[2] == view.place[1] \
                and sum(v.place[2] for v in runs[-1]) + view.place[2] <= RUN_BYTES \
                and len(runs[-1]) < ViewReader.MOST_VIEWS_PER_READ:
            runs[-1].append(view)
        else:
            runs.append([view])
    return runs


def _read_run(run: list[_View]) -> None:
    """One run of views, each whole into its place in the batch, or into a view-sized buffer and then its
    frames."""
    whole = [view.out if view.frames is None else np.empty(view.reader.chunk, view.out.dtype) for view in run]
    run[0].reader.read_run([(view.video, view.view, out) for view, out in zip(run, whole)])
    for view, out in zip(run, whole):
        if view.frames is not None:
            np.take(out, view.frames, axis=0, out=view.out)


class _Held:
    """Small views of the dataset kept in this process once read: (videos, views, M, ...) and which are filled."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.values = np.empty(shape, dtype)  # pages are taken as views are read
        self.filled = np.zeros(shape[:3], bool)

    def copy(self, rows: np.ndarray, views: np.ndarray, frames: np.ndarray | None, read: np.ndarray,
             target: np.ndarray) -> None:
        """Once the batch's reads are done: what they read counts as kept, and the batch's views (B, M, T', ...)
        are copied into `target`."""
        self.filled[rows, views] |= read
        if frames is None:
            np.take(self.values.reshape(-1, *self.values.shape[2:]), rows * self.values.shape[1] + views, axis=0,
                    out=target)
        else:
            blocks = np.arange(self.values.shape[2])
            target[...] = self.values[rows[:, None, None], views[:, None, None], blocks[None, :, None],
                                      frames[:, None, :]]


class _ProcessLocal:
    """What one process reading the store keeps: open arrays, view readers, batch buffers, read threads, small
    views once read."""

    def __init__(self, path: str, scattered: bool, uncached: bool) -> None:
        self.path, self.scattered, self.uncached, self.pid = path, scattered, uncached, os.getpid()
        self.arrays: dict[str, zarr.Array] = {}
        self.view_readers: dict[str, ViewReader] = {}
        self.buffers = BatchBuffers()
        self.remote = is_remote(parse_store(path))
        self.threads = ThreadPoolExecutor(REQUESTS_IN_FLIGHT if self.remote else READ_THREADS,
                                          thread_name_prefix="clipcache-read")  # started on use
        # object storage: shard indexes a batch needs are requested at once, on threads of their own so that they
        # never queue behind the read-ahead's reads (a folder's index is a read of a few KB: read where placed)
        self.opening = ThreadPoolExecutor(REQUESTS_IN_FLIGHT, thread_name_prefix="clipcache-index") \
            if self.remote else None
        self._held: dict[str, _Held] = {}

    def held(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> _Held:
        if key not in self._held:
            self._held[key] = _Held(shape, dtype)
        return self._held[key]

    def array(self, name: str) -> zarr.Array:
        if name not in self.arrays:
            self.arrays[name] = open_root(self.path)[name]
        return self.arrays[name]

    def view_reader(self, name: str) -> ViewReader:
        if name not in self.view_readers:
            self.view_readers[name] = self.new_view_reader(name, self.uncached)
        return self.view_readers[name]

    def new_view_reader(self, name: str, uncached: bool) -> ViewReader:
        array = self.array(name)  # small views (int8 scales) keep read-ahead: it brings their neighbours
        large = int(np.prod(array.chunks[2:])) * array.dtype.itemsize >= PARALLEL_BYTES
        return ViewReader(array, self.scattered and large, uncached)


@cache
def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    """Remembered: made anew twice per batch, it was a sixth of a batch's Python (0.72 -> 0.59 ms per 64 views)."""
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
