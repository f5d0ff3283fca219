"""Stage one: videos -> frozen CLIP tokens in a Zarr store, resumable, shardable across processes.

Decoding runs in worker processes (the bottleneck on GPU machines), the encoder batches the frames of
a whole shard group, and the write of one group overlaps the encoding of the next. Work is divided in
whole shard groups, which is also the unit of resuming: a group is redone unless its status is written.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cache.reader import CacheReader
from cache.schema import COMPRESSIONS, DONE, DTYPES, FAILED, PENDING, StoreSettings, inputs_digest
from cache.writer import GroupResult, StoreWriter, check_settings, create_store
from pipeline.decode_pool import DecodePool, Outcome, Task
from pipeline.distributed import WorkSplit, work_split
from pipeline.encoder import FrozenImageEncoder, LoadedModel, frozen_parameters, load_model, resolve_device, \
    resolve_layers, vision_blocks
from pipeline.prepare import PrepareRecipe
from pipeline.sampling import SamplingPlan
from pipeline.sources import VIDEO_EXTENSIONS, VideoList, discover_videos
from pipeline.views import ViewRecipe


@dataclass
class ExtractConfig:
    """Every option of `clipcache extract` (the CLI documents each one)."""

    videos: Path
    store: Path
    list_file: Path | None = None
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    model: str = ""  # empty: the --model-config file's name, else DEFAULT_MODEL
    pretrained: str | None = None
    model_config: Path | None = None
    layers: str = "-4,-3,-2,-1"
    frames: int = 8
    sampling: str = "uniform"
    stride: int = 4
    clips: int = 1
    crops: int = 1
    augment: int = 0
    seed: int = 0
    dtype: str = "float16"
    compression: str = "none"
    shard_videos: int = 16
    batch_size: int = 64
    workers: int = field(default_factory=lambda: max(1, min(8, (os.cpu_count() or 2) - 1)))
    timeout: float = 120.0
    device: str = "auto"
    overwrite: bool = False
    shard: str | None = None
    quiet: bool = False


@dataclass
class ExtractSummary:
    """What a run did and what the store holds now (counts over the whole store)."""

    store: Path
    done: int
    failed: int
    pending: int
    failures: list[tuple[str, str]]
    notes: list[tuple[str, str]]
    missing: list[str]
    processed: int
    seconds: float

    @property
    def videos_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


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
    if cfg.dtype not in DTYPES:
        raise ValueError(f"--dtype {cfg.dtype}: choose one of {', '.join(DTYPES)}")
    if cfg.compression not in COMPRESSIONS:
        raise ValueError(f"--compression {cfg.compression}: choose one of {', '.join(COMPRESSIONS)}")
    for name in ("frames", "clips", "shard_videos", "batch_size", "workers"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.augment < 0:
        raise ValueError(f"--augment must be 0 or more, got {cfg.augment}")
    if cfg.timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {cfg.timeout}")


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
        frames=cfg.frames, sampling=cfg.sampling, stride=cfg.stride if cfg.sampling == "dense" else 1,
        clips=cfg.clips, crops=cfg.crops, augment=cfg.augment, seed=cfg.seed,
        layers=resolve_layers(cfg.layers, len(blocks)), num_blocks=len(blocks),
        width=int(blocks[0].ln_1.normalized_shape[0]), heads=int(blocks[0].attn.num_heads),
        embed_dim=int(loaded.model.visual.output_dim), tokens=1 + grid[0] * grid[1], grid=grid,
        dtype=cfg.dtype, compression=cfg.compression, shard_videos=cfg.shard_videos,
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
                   frozen: dict[str, np.ndarray], split: WorkSplit) -> None:
    """Create the store, or check that an existing one was made with the same settings."""
    if cfg.overwrite and split.world > 1 and not split.torchrun:
        raise ValueError("--overwrite with --shard would let shards delete each other's work; "
                         "delete the store once before starting the shards")
    if split.is_main:
        if cfg.overwrite and cfg.store.exists():
            shutil.rmtree(cfg.store)
        if not cfg.store.exists():
            create_store(cfg.store, settings, *_columns(listing), frozen)
    split.barrier()
    if not split.is_main and not cfg.store.exists():
        create_store(cfg.store, settings, *_columns(listing), frozen)  # job-array shards race safely
    check_settings(cfg.store, settings)


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
    listing = discover_videos(cfg.videos, cfg.list_file, cfg.extensions)
    device = resolve_device(cfg.device)
    loaded = load_model(cfg.model, cfg.pretrained, cfg.model_config, device="cpu")
    settings = build_settings(cfg, loaded, listing)
    recipe = PrepareRecipe(
        plan=SamplingPlan(cfg.frames, cfg.sampling, settings.stride, cfg.clips),
        views=ViewRecipe(settings.image_size, settings.interpolation, settings.resize_mode, cfg.crops),
        augment=cfg.augment, seed=cfg.seed,
    )
    _prepare_store(cfg, settings, listing, frozen_parameters(loaded.model, settings.layers), split)
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
    pool = DecodePool(recipe, workers=min(cfg.workers, len(tasks)), timeout=cfg.timeout,
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
    reader = CacheReader(store)
    status = reader.status
    paths = reader.column("path")
    errors, notes = reader.column("error"), reader.column("note")
    return ExtractSummary(
        store=store,
        done=int((status == DONE).sum()), failed=int((status == FAILED).sum()),
        pending=int((status == PENDING).sum()),
        failures=[(str(paths[i]), str(errors[i])) for i in np.flatnonzero(status == FAILED)],
        notes=[(str(paths[i]), str(notes[i])) for i in np.flatnonzero((status == DONE) & (notes != ""))],
        missing=list(listing.missing), processed=processed, seconds=seconds,
    )
