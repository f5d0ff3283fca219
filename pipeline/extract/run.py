"""Stage one: videos -> frozen CLIP tokens in a Zarr store, resumable, shardable across processes.

Decoding runs in worker processes (the bottleneck on GPU machines), the encoder batches the frames of
a whole shard group, and the write of one group overlaps the encoding of the next. Work is divided in
whole shard groups, which is also the unit of resuming: a group is redone unless its status is written.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from clipcache import InputError
from clipcache.cache.info import store_info
from clipcache.cache.location import Store
from clipcache.cache.lock import Holder, StoreLock, store_lock
from clipcache.cache.place import remove_leftovers, remove_store, store_format, writable_folder
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import DENSE, StoreSettings, inputs_digest
from clipcache.cache.verify import Damage, verify_store
from clipcache.cache.writer import SPACE_ERRORS, StoreWriter, check_complete, check_settings, create_store
from clipcache.pipeline.common import note, resolve_device
from clipcache.pipeline.extract.annotated import Annotated, annotate, store_segments
from clipcache.pipeline.extract.config import ExtractConfig
from clipcache.pipeline.extract.decode_pool import DecodePool, Outcome, Recipe, Task
from clipcache.pipeline.extract.dense_groups import DenseGroups
from clipcache.pipeline.extract.dense_progress import DenseProgress
from clipcache.pipeline.extract.dense_recipe import DenseRecipe
from clipcache.pipeline.extract.dry_run import describe_run
from clipcache.pipeline.extract.encoder import FrozenImageEncoder, frozen_parameters, resolve_layers, vision_blocks
from clipcache.pipeline.extract.groups import GroupEncoder
from clipcache.pipeline.extract.plan import GroupWork, plan_groups
from clipcache.pipeline.extract.prepare import PrepareRecipe
from clipcache.pipeline.extract.ranks import WorkSplit, work_split
from clipcache.pipeline.extract.sampling import SamplingPlan
from clipcache.pipeline.extract.sources import VideoList, discover_videos
from clipcache.pipeline.extract.summary import ExtractSummary, RunCounts
from clipcache.pipeline.extract.views import ViewRecipe
from clipcache.pipeline.models import RANDOM_INIT_SEED, LoadedModel, load_model

if TYPE_CHECKING:
    from clipcache.cache.lease import ObjectLock


def _versions() -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"
    return {name: version(pkg) for name, pkg in [
        ("clipcache", "clipcache"), ("torch", "torch"), ("open_clip", "open_clip_torch"),
        ("decord", "decord2"), ("zarr", "zarr"), ("numcodecs", "numcodecs")]}


def dense_rate(cfg: ExtractConfig) -> float | None:
    """--fps as samples per second: None without it (a clip store), 0.0 for every decoded frame."""
    if cfg.fps is None:
        return None
    if cfg.fps.strip().lower() == "all":
        return 0.0
    try:
        rate = float(cfg.fps)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or not 0 < rate <= 1000:
        raise InputError(f"--fps {cfg.fps}: expected frames per second (a number above 0, at most 1000) or 'all'")
    return rate


def layer_spec(cfg: ExtractConfig) -> str:
    """--layers as given, else the layout's default: the last four blocks for clips, none for dense stores
    (all tokens of a long video cost hundreds of MB per block; see the README's dense store sizes)."""
    if cfg.layers is not None:
        return cfg.layers
    return "none" if cfg.fps is not None else "-4,-3,-2,-1"


def _validate(cfg: ExtractConfig) -> None:
    if dense_rate(cfg) is not None:
        given = [f"--{name}" for name, default in (("clips", 1), ("augment", 0), ("crops", 1))
                 if getattr(cfg, name) != default]
        if given:
            raise InputError(f"--fps stores one centre view of every sampled frame: {', '.join(given)} cannot "
                             "be used with it")
    elif cfg.tokens != "all":
        raise InputError("--tokens cls is for dense stores (--fps); clip stores keep all tokens for the heads "
                         "that attend over them")
    if cfg.timeout <= 0:  # a finite number: options.py checks that for every float option
        raise InputError(f"--timeout must be a positive number of seconds, got {cfg.timeout}")


def default_workers() -> int:
    """Decode processes when --workers is not given: every core but one for the encoder, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def build_settings(cfg: ExtractConfig, loaded: LoadedModel, listing: VideoList) -> StoreSettings:
    """The store's identity: this run's options, the model's facts and the input list."""
    visual = loaded.model.visual
    blocks = vision_blocks(loaded.model)
    grid = tuple(int(g) for g in visual.grid_size)
    _, labels, splits = _columns(listing)
    spec, rate = layer_spec(cfg), dense_rate(cfg)
    if rate is None:
        sampling = {"frames": cfg.frames, "sampling": str(cfg.sampling),
                    "stride": cfg.stride if cfg.sampling == "dense" else 1}
    else:  # a dense store: every video whole at `rate`, one centre view
        sampling = {"layout": DENSE, "fps": rate, "keep_tokens": str(cfg.tokens), "frames": 0, "sampling": "fps",
                    "stride": 1}
    return StoreSettings(
        model=loaded.name, pretrained=loaded.pretrained, pretrained_sha256=loaded.pretrained_sha256,
        model_config=loaded.config,
        image_size=loaded.preprocess["image_size"], mean=loaded.preprocess["mean"], std=loaded.preprocess["std"],
        interpolation=loaded.preprocess["interpolation"], resize_mode=loaded.preprocess["resize_mode"],
        clips=cfg.clips, crops=cfg.crops, augment=cfg.augment, seed=cfg.seed,
        layers=() if spec.strip().lower() == "none" else resolve_layers(spec, len(blocks)), num_blocks=len(blocks),
        width=int(blocks[0].ln_1.normalized_shape[0]), heads=int(blocks[0].attn.num_heads),
        embed_dim=int(loaded.model.visual.output_dim), tokens=1 + grid[0] * grid[1], grid=grid,
        dtype=str(cfg.dtype), compression=str(cfg.compression), shard_videos=cfg.shard_videos,
        batch_size=cfg.batch_size, num_videos=len(listing.entries), classes=listing.classes,
        inputs_digest=inputs_digest([e.listed for e in listing.entries], labels, splits),
        extras={"versions": _versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                # provenance, outside the fingerprint: how the random weights that pretrained "" stands for were drawn
                **({} if loaded.pretrained else {"random_init_seed": RANDOM_INIT_SEED})},
        **sampling,
    )


def _columns(listing: VideoList) -> tuple[list[str], list[int], list[str]]:
    index = {name: i for i, name in enumerate(listing.classes)}
    paths = [e.path for e in listing.entries]
    labels = [index[e.label] if e.label is not None else -1 for e in listing.entries]
    return paths, labels, [e.split for e in listing.entries]


def _prepare_store(cfg: ExtractConfig, settings: StoreSettings, listing: VideoList,
                   frozen: dict[str, np.ndarray], split: WorkSplit, annotated: Annotated | None) -> None:
    """Create the store, replace it (--overwrite), or check that it was made with the same settings, then
    with --repair mark this run's damaged groups pending, and write the annotations' segments. Runs under
    the store's lock, so no other run creates, deletes or repairs it meanwhile; under torchrun rank 0 does
    it for every rank."""
    for leftover in remove_leftovers(cfg.store):
        note(f"removed {leftover}, left by a run killed while it created or replaced {cfg.store}", cfg.quiet)
    left: list[Damage] = []  # what --repair could not restore
    if cfg.overwrite:
        remove_store(cfg.store, listing.root)
    if store_format(cfg.store) is None:
        create_store(cfg.store, settings, *_columns(listing), frozen)
    check_settings(cfg.store, settings)
    if cfg.repair:
        owns = (lambda group: True) if split.torchrun else split.owns
        report = verify_store(cfg.store, owns, whole=split.is_main)
        groups, left = StoreWriter(cfg.store, settings).repair(report, *_columns(listing), frozen, owns,
                                                                split.is_main)
        damaged = "; ".join(sorted({f"{d.array}: {d.reason}" for d in report.damage}))
        note(f"{cfg.store}: repairing {len(report.damaged_videos())} damaged videos in {len(groups)} groups "
             f"({damaged})" if report.damage else f"{cfg.store}: no damage found", cfg.quiet)
        if annotated is not None:  # the segment table is written again below
            left = [d for d in left if d.array.split("/")[0] != "segments"]
    check_complete(cfg.store, settings)
    if split.is_main:
        store_segments(cfg.store, annotated)
    if left:
        raise InputError(f"{cfg.store}: --repair restored the rest but could not restore "
                         f"{'; '.join(f'{d.array} ({d.reason})' for d in left)}: {_restore_hint(left)}")


def _restore_hint(left: list[Damage]) -> str:
    """How the user can restore what --repair could not."""
    segments = any(d.array.split("/")[0] == "segments" for d in left)
    hints = ["rerun with --annotations naming the store's annotation files to write the segment table again"] \
        if segments else []
    if not segments or any(d.array.split("/")[0] != "segments" for d in left):
        hints.append("folders the store's layout has no place for are left as they are (clipcache deletes only "
                     "what it made): move them out of the store")
    return "; ".join(hints)


def _job(cfg: ExtractConfig, settings: StoreSettings) -> str:
    """What a run does to a store: shards of one job array share its lock only when this is equal."""
    return json.dumps([settings.fingerprint(), cfg.overwrite, cfg.retry_failed, cfg.repair])


def _lock_store(cfg: ExtractConfig, settings: StoreSettings, listing: VideoList, frozen: dict[str, np.ndarray],
                split: WorkSplit, annotated: Annotated | None) -> StoreLock | ObjectLock:
    """Take the store's lock and prepare the store under it. Under torchrun rank 0 does both for every
    rank and shares the outcome, so all ranks refuse together or go on together."""
    if cfg.overwrite and split.world > 1 and not split.torchrun:
        raise InputError("--overwrite with --shard would let shards delete each other's work; "
                         "delete the store once before starting the shards")
    writable_folder(cfg.store)
    lock = store_lock(cfg.store)
    refusal = None
    if split.is_main or not split.torchrun:
        shard = (split.rank, split.world) if split.world > 1 and not split.torchrun else None
        me = Holder.this_process(_job(cfg, settings), shard, split.world if split.torchrun else 1)
        try:
            for stale in lock.acquire(me, lambda: _prepare_store(cfg, settings, listing, frozen, split, annotated)):
                note(f"{cfg.store}: removed the stale lock of a run that died ({stale.describe()})", cfg.quiet)
        except InputError as error:
            refusal = str(error)
    refusal = split.share(refusal)
    if refusal is not None:
        raise InputError(refusal)
    if not split.is_main:
        check_settings(cfg.store, settings)
    return lock


def _inputs(cfg: ExtractConfig) -> tuple[VideoList, Annotated | None, LoadedModel, StoreSettings]:
    """The videos, their annotations, the model and the store's identity: what a run and a dry run read."""
    _validate(cfg)
    listing = discover_videos(cfg.videos, cfg.lists, cfg.extensions.split(","))
    for line in listing.skipped:
        note(f"{line} (left out)", cfg.quiet)
    annotated = annotate(listing, cfg.annotations) if cfg.annotations else None
    if annotated is not None:
        listing = annotated.listing
        for line in annotated.problems:
            note(f"annotations: {line}", cfg.quiet)
    loaded = load_model(cfg.model, cfg.pretrained, cfg.model_config, device="cpu")
    return listing, annotated, loaded, build_settings(cfg, loaded, listing)


def dry_run(cfg: ExtractConfig) -> str:
    """What `extract` would do with these options, writing nothing (see dry_run.py)."""
    listing, annotated, _, settings = _inputs(cfg)
    return describe_run(cfg.store, listing, annotated, settings)


def extract(cfg: ExtractConfig) -> ExtractSummary:
    """Run stage one for this process's share of the work and summarise the store."""
    device = resolve_device(cfg.device)
    began = time.monotonic()
    split = work_split(cfg.shard)
    listing, annotated, loaded, settings = _inputs(cfg)
    views = ViewRecipe(settings.image_size, settings.interpolation, settings.resize_mode, cfg.crops)
    frozen = frozen_parameters(loaded.model, settings.layers)
    with _room_needed(cfg.store), _lock_store(cfg, settings, listing, frozen, split, annotated) as lock:
        found = np.array([entry.found for entry in listing.entries], dtype=bool)
        work = plan_groups(CacheReader(cfg.store).status, found, settings, split.owns, cfg.retry_failed)
        encoder = FrozenImageEncoder(loaded, settings.layers, device)
        writer = StoreWriter(cfg.store, settings, lock.check)
        if settings.dense:
            outcome = _run_dense(cfg, settings, listing, work, encoder, writer, views, split)
        else:
            recipe = PrepareRecipe(plan=SamplingPlan(cfg.frames, str(cfg.sampling), settings.stride, cfg.clips),
                                   views=views, augment=cfg.augment, seed=cfg.seed)
            encode = GroupEncoder(encoder, settings, cfg.batch_size, listing.entries)
            outcome = _run_groups(cfg, settings, listing, work, encode, writer, recipe, split)
        split.barrier()
    return _summarise(cfg.store, outcome, time.monotonic() - began)


@contextmanager
def _room_needed(store: Store) -> Iterator[None]:
    """A full disk, quota or file size limit is one line naming the store and how to go on; what is finished
    is kept, as after a kill, and the CLI exits 1 (the machine failed, not the input)."""
    try:
        yield
    except OSError as error:
        if error.errno not in SPACE_ERRORS:
            raise
        where = f" ({error.filename})" if error.filename else ""
        raise InputError(f"{store}: {SPACE_ERRORS[error.errno]}{where}; the finished shard groups are kept: make "
                         "room and rerun the same command to resume") from error


def _tasks(listing: VideoList, work: list[GroupWork]) -> list[Task]:
    return [Task(i, listing.root / listing.entries[i].path) for item in work for i in item.redo]


def _pool(cfg: ExtractConfig, recipe: Recipe, tasks: list[Task], prefetch: int) -> DecodePool:
    return DecodePool(recipe, workers=min(cfg.workers or default_workers(), len(tasks)), timeout=cfg.timeout,
                      prefetch=prefetch)


PIECES_AHEAD = 2  # decoded pieces waiting per worker (~40 MB each at 224 px): the encoder's hiccups never idle it


def _run_dense(cfg: ExtractConfig, settings: StoreSettings, listing: VideoList, work: list[GroupWork],
               encoder: FrozenImageEncoder, writer: StoreWriter, views: ViewRecipe, split: WorkSplit) -> RunCounts:
    """Decode, encode and append each video's pieces as they come; write each group's table once its videos
    have ended. Progress counts seconds of video (estimated from the containers), so its ETA covers the whole
    run however long each video is."""
    counts = RunCounts()
    tasks = _tasks(listing, work)
    progress = DenseProgress([task.path for task in tasks], settings.fps or None,
                             disable=cfg.quiet or not split.is_main, rank=split.rank if split.world > 1 else None)
    with ThreadPoolExecutor(max_workers=1) as write_thread:
        groups = DenseGroups(encoder, settings, cfg.batch_size, listing.entries, writer, work, write_thread)
        if tasks:
            workers = min(cfg.workers or default_workers(), len(tasks))
            pool = _pool(cfg, DenseRecipe(settings.fps or None, views), tasks, PIECES_AHEAD * workers)
            for outcome in pool.run(tasks):
                groups.take(outcome)
                progress.update(outcome)
                if outcome.final:
                    counts.add(outcome.error is None)
                    if outcome.error is not None:
                        _report(progress.bar, f"{outcome.task.path}: {outcome.error}")
        groups.wait()
    progress.close()
    return counts


def _run_groups(cfg: ExtractConfig, settings: StoreSettings, listing: VideoList, work: list[GroupWork],
                encode: GroupEncoder, writer: StoreWriter, recipe: PrepareRecipe, split: WorkSplit) -> RunCounts:
    """Decode, encode and write the planned groups; returns what became of the videos decoded."""
    counts = RunCounts()
    by_group = {item.group: item for item in work}
    for item in work:
        if not item.redo:  # every video of a new group is missing: nothing to decode, still written whole
            writer.write_group(encode(item, {}))
    tasks = _tasks(listing, work)
    if not tasks:
        return counts
    buffers: dict[int, dict[int, Outcome]] = {}
    pending_write: Future | None = None
    bar = tqdm(total=len(tasks), unit="video", desc=f"extract[{split.rank}]" if split.world > 1 else "extract",
               disable=cfg.quiet or not split.is_main, dynamic_ncols=True, file=sys.stderr)
    pool = _pool(cfg, recipe, tasks, 2 * settings.shard_videos)
    with ThreadPoolExecutor(max_workers=1) as write_thread:
        for outcome in pool.run(tasks):
            bar.update(1)
            counts.add(outcome.error is None)
            if outcome.error is not None:
                _report(bar, f"{outcome.task.path}: {outcome.error}")
            group = outcome.task.index // settings.shard_videos
            buffer = buffers.setdefault(group, {})
            buffer[outcome.task.index] = outcome
            if len(buffer) == len(by_group[group].redo):
                result = encode(by_group[group], buffers.pop(group))
                if pending_write is not None:
                    pending_write.result()  # at most one group waits for the disk
                pending_write = write_thread.submit(writer.write_group, result)
        if pending_write is not None:
            pending_write.result()
    bar.close()
    return counts


def _report(bar: tqdm, line: str) -> None:
    """One line on stderr per failed video, without breaking the progress bar."""
    bar.write(line, file=sys.stderr)


def _summarise(store: Store, counts: RunCounts, seconds: float) -> ExtractSummary:
    return ExtractSummary(store_info(store), counts, seconds)
