"""Stage one: videos -> frozen CLIP tokens in a Zarr store, resumable, shardable across processes.

Decoding runs in worker processes (the bottleneck on GPU machines), the encoder batches the frames of
a whole shard group, and the write of one group overlaps the encoding of the next. Work is divided in
whole shard groups, which is also the unit of resuming: a group is redone unless its status is written.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clipcache import InputError
from clipcache.cache.info import store_info
from clipcache.cache.lock import Holder, StoreLock
from clipcache.cache.schema import DONE, FAILED, StoreSettings, inputs_digest
from clipcache.cache.writer import GroupResult, StoreWriter, check_settings, create_store
from clipcache.pipeline.common import note, resolve_device
from clipcache.pipeline.extract.config import ExtractConfig
from clipcache.pipeline.extract.decode_pool import DecodePool, Outcome, Task
from clipcache.pipeline.extract.encoder import FrozenImageEncoder, frozen_parameters, resolve_layers, vision_blocks
from clipcache.pipeline.extract.prepare import PrepareRecipe
from clipcache.pipeline.extract.ranks import WorkSplit, work_split
from clipcache.pipeline.extract.sampling import SamplingPlan
from clipcache.pipeline.extract.sources import VideoList, discover_videos
from clipcache.pipeline.extract.summary import ExtractSummary
from clipcache.pipeline.extract.views import ViewRecipe
from clipcache.pipeline.models import LoadedModel, load_model


def _versions() -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"
    return {name: version(pkg) for name, pkg in [
        ("clipcache", "clipcache"), ("torch", "torch"), ("open_clip", "open_clip_torch"),
        ("decord", "decord2"), ("zarr", "zarr"), ("numcodecs", "numcodecs")]}


def _validate(cfg: ExtractConfig) -> None:
    for name in ("frames", "clips", "shard_videos", "batch_size"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.workers is not None and cfg.workers < 1:
        raise InputError(f"--workers must be at least 1, got {cfg.workers}")
    if cfg.augment < 0:
        raise InputError(f"--augment must be 0 or more, got {cfg.augment}")
    if cfg.timeout <= 0:
        raise InputError(f"--timeout must be positive, got {cfg.timeout}")


def default_workers() -> int:
    """Decode processes when --workers is not given: every core but one for the encoder, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def build_settings(cfg: ExtractConfig, loaded: LoadedModel, listing: VideoList) -> StoreSettings:
    """The store's identity: this run's options, the model's facts and the input list."""
    visual = loaded.model.visual
    blocks = vision_blocks(loaded.model)
    grid = tuple(int(g) for g in visual.grid_size)
    paths, labels, splits = _columns(listing)
    return StoreSettings(
        model=loaded.name, pretrained=loaded.pretrained, model_config=loaded.config,
        image_size=loaded.preprocess["image_size"], mean=loaded.preprocess["mean"], std=loaded.preprocess["std"],
        interpolation=loaded.preprocess["interpolation"], resize_mode=loaded.preprocess["resize_mode"],
        frames=cfg.frames, sampling=str(cfg.sampling), stride=cfg.stride if cfg.sampling == "dense" else 1,
        clips=cfg.clips, crops=cfg.crops, augment=cfg.augment, seed=cfg.seed,
        layers=resolve_layers(cfg.layers, len(blocks)), num_blocks=len(blocks),
        width=int(blocks[0].ln_1.normalized_shape[0]), heads=int(blocks[0].attn.num_heads),
        embed_dim=int(loaded.model.visual.output_dim), tokens=1 + grid[0] * grid[1], grid=grid,
        dtype=str(cfg.dtype), compression=str(cfg.compression), shard_videos=cfg.shard_videos,
        num_videos=len(listing.entries), classes=listing.classes,
        inputs_digest=inputs_digest(paths, labels, splits),
        extras={"versions": _versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )


def _columns(listing: VideoList) -> tuple[list[str], list[int], list[str]]:
    index = {name: i for i, name in enumerate(listing.classes)}
    paths = [e.path for e in listing.entries]
    labels = [index[e.label] if e.label is not None else -1 for e in listing.entries]
    return paths, labels, [e.split for e in listing.entries]


def _prepare_store(cfg: ExtractConfig, settings: StoreSettings, listing: VideoList,
                   frozen: dict[str, np.ndarray]) -> None:
    """Create the store, replace it (--overwrite), or check that it was made with the same settings.
    Runs under the store's lock, so no other run creates or deletes it meanwhile."""
    if cfg.overwrite and cfg.store.exists():
        shutil.rmtree(cfg.store)
    if not cfg.store.exists():
        create_store(cfg.store, settings, *_columns(listing), frozen)
    check_settings(cfg.store, settings)


def _job(cfg: ExtractConfig, settings: StoreSettings) -> str:
    """What a run does to a store: shards of one job array share its lock only when this is equal."""
    return json.dumps([settings.fingerprint(), cfg.overwrite])


def _lock_store(cfg: ExtractConfig, settings: StoreSettings, listing: VideoList, frozen: dict[str, np.ndarray],
                split: WorkSplit, quiet: bool) -> StoreLock:
    """Take the store's lock and prepare the store under it. Under torchrun rank 0 does both for every
    rank and shares the outcome, so all ranks refuse together or go on together."""
    if cfg.overwrite and split.world > 1 and not split.torchrun:
        raise InputError("--overwrite with --shard would let shards delete each other's work; "
                         "delete the store once before starting the shards")
    lock = StoreLock(cfg.store)
    refusal = None
    if split.is_main or not split.torchrun:
        shard = (split.rank, split.world) if split.world > 1 and not split.torchrun else None
        me = Holder.this_process(_job(cfg, settings), shard, split.world if split.torchrun else 1)
        try:
            for stale in lock.acquire(me, lambda: _prepare_store(cfg, settings, listing, frozen)):
                note(f"{cfg.store}: removed the stale lock of a run that died ({stale.describe()})", quiet)
        except InputError as error:
            refusal = str(error)
    refusal = split.share(refusal)
    if refusal is not None:
        raise InputError(refusal)
    if not split.is_main:
        check_settings(cfg.store, settings)
    return lock


class _GroupEncoder:
    """Turns the prepared videos of one shard group into a GroupResult."""

    def __init__(self, encoder: FrozenImageEncoder, settings: StoreSettings, batch_size: int) -> None:
        self.encoder, self.settings, self.batch_size = encoder, settings, batch_size
        self.pin = encoder.device.type == "cuda"
        self.dtype = np.float16 if self.pin else np.float32  # what the encoder hands back

    def __call__(self, group: int, outcomes: dict[int, Outcome]) -> GroupResult:
        s = self.settings
        start, stop = s.group_range(group)
        n, v, t = stop - start, s.views, s.frames
        result = GroupResult(
            group=group, status=np.full(n, FAILED, np.uint8), error=[""] * n, note=[""] * n,
            frame_index=np.zeros((n, v, t), np.int32), fps=np.zeros(n, np.float32),
            num_frames=np.zeros(n, np.int32), width=np.zeros(n, np.int32), height=np.zeros(n, np.int32),
            duration=np.zeros(n, np.float32),
            tokens={layer: np.zeros((n, v, t, s.tokens, s.width), self.dtype) for layer in s.layers},
            pooled=np.zeros((n, v, t, s.embed_dim), self.dtype),
        )
        good = []
        for i in range(start, stop):
            row, outcome = i - start, outcomes[i]
            if outcome.video is None:
                result.error[row] = outcome.error or "unknown error"
                continue
            video, info = outcome.video, outcome.video.info
            result.status[row] = DONE
            result.note[row] = "; ".join(video.notes)
            result.frame_index[row] = video.frame_index
            result.fps[row], result.num_frames[row], result.duration[row] = info.fps, info.num_frames, info.duration
            result.width[row], result.height[row] = info.width, info.height
            good.append(row)
        if good:
            self._encode(result, good, [outcomes[start + row].video.pixels for row in good])
        return result

    def _encode(self, result: GroupResult, rows: list[int], pixels: list[np.ndarray]) -> None:
        s = self.settings
        frames = torch.from_numpy(np.stack(pixels).reshape(-1, s.image_size, s.image_size, 3))
        if self.pin:
            frames = frames.pin_memory()
        token_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in s.layers}
        pooled_parts = []
        for b in range(0, len(frames), self.batch_size):
            tokens, pooled = self.encoder(frames[b:b + self.batch_size])
            for layer, value in tokens.items():
                token_parts[layer].append(value)
            pooled_parts.append(pooled)
        shape = (len(rows), s.views, s.frames)
        for layer, parts in token_parts.items():
            result.tokens[layer][rows] = torch.cat(parts).numpy().reshape(*shape, s.tokens, s.width)
        result.pooled[rows] = torch.cat(pooled_parts).numpy().reshape(*shape, s.embed_dim)


def extract(cfg: ExtractConfig) -> ExtractSummary:
    """Run stage one for this process's share of the work and summarise the store."""
    _validate(cfg)
    began = time.monotonic()
    split = work_split(cfg.shard)
    listing = discover_videos(cfg.videos, cfg.list_file, cfg.extensions.split(","))
    device = resolve_device(cfg.device)
    loaded = load_model(cfg.model, cfg.pretrained, cfg.model_config, device="cpu")
    settings = build_settings(cfg, loaded, listing)
    recipe = PrepareRecipe(
        plan=SamplingPlan(cfg.frames, str(cfg.sampling), settings.stride, cfg.clips),
        views=ViewRecipe(settings.image_size, settings.interpolation, settings.resize_mode, cfg.crops),
        augment=cfg.augment, seed=cfg.seed,
    )
    frozen = frozen_parameters(loaded.model, settings.layers)
    with _lock_store(cfg, settings, listing, frozen, split, cfg.quiet):
        writer = StoreWriter(cfg.store, settings)
        groups = [g for g in writer.pending_groups() if split.owns(g)]
        encode = _GroupEncoder(FrozenImageEncoder(loaded, settings.layers, device), settings, cfg.batch_size)
        processed = _run_groups(cfg, settings, listing, groups, encode, writer, recipe, split)
        split.barrier()
    return _summarise(cfg.store, listing, processed, time.monotonic() - began)


def _run_groups(cfg: ExtractConfig, settings: StoreSettings, listing: VideoList, groups: list[int],
                encode: _GroupEncoder, writer: StoreWriter, recipe: PrepareRecipe, split: WorkSplit) -> int:
    """Decode, encode and write `groups`; returns the number of videos processed."""
    tasks = [Task(i, listing.root / listing.entries[i].path)
             for g in groups for i in range(*settings.group_range(g))]
    if not tasks:
        return 0
    buffers: dict[int, dict[int, Outcome]] = {}
    pending_write: Future | None = None
    bar = tqdm(total=len(tasks), unit="video", desc=f"extract[{split.rank}]" if split.world > 1 else "extract",
               disable=cfg.quiet or not split.is_main, dynamic_ncols=True, file=sys.stderr)
    pool = DecodePool(recipe, workers=min(cfg.workers or default_workers(), len(tasks)), timeout=cfg.timeout,
                      prefetch=2 * settings.shard_videos)
    with ThreadPoolExecutor(max_workers=1) as write_thread:
        for outcome in pool.run(tasks):
            bar.update(1)
            if outcome.error is not None:
                _report(bar, f"{outcome.task.path}: {outcome.error}")
            group = outcome.task.index // settings.shard_videos
            buffer = buffers.setdefault(group, {})
            buffer[outcome.task.index] = outcome
            start, stop = settings.group_range(group)
            if len(buffer) == stop - start:
                result = encode(group, buffers.pop(group))
                if pending_write is not None:
                    pending_write.result()  # at most one group waits for the disk
                pending_write = write_thread.submit(writer.write_group, result)
        if pending_write is not None:
            pending_write.result()
    bar.close()
    return len(tasks)


def _report(bar: tqdm, line: str) -> None:
    """One line on stderr per failed video, without breaking the progress bar."""
    bar.write(line, file=sys.stderr)


def _summarise(store: Path, listing: VideoList, processed: int, seconds: float) -> ExtractSummary:
    return ExtractSummary(store_info(store), list(listing.missing), processed, seconds)
