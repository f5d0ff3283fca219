"""A store of random features with a real model's shapes, written through the cache writer: the
stage-two benchmarks measure reading and training without spending minutes extracting first."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clipcache.cache.dense import DENSE_CHUNK, DenseVideoWriter
from clipcache.cache.schema import DONE, StoreSettings
from clipcache.cache.segments import SegmentTable, write_segments
from clipcache.cache.store import open_root
from clipcache.cache.writer import GroupResult, StoreWriter, create_store
from clipcache.pipeline.extract.encoder import frozen_parameters, resolve_layers, vision_blocks
from clipcache.pipeline.models import LoadedModel, load_model


def _settings(loaded: LoadedModel, videos: int, frames: int, layers: str, classes: int, dtype: str, views: int,
              **layout: object) -> StoreSettings:
    blocks = vision_blocks(loaded.model)
    grid = tuple(int(g) for g in loaded.model.visual.grid_size)
    return StoreSettings(
        model=loaded.name, pretrained="", model_config=loaded.config, image_size=loaded.preprocess["image_size"],
        mean=loaded.preprocess["mean"], std=loaded.preprocess["std"], interpolation="bicubic",
        resize_mode="shortest", frames=frames, stride=1, clips=views, crops=1, augment=0, seed=0,
        layers=resolve_layers(layers, len(blocks)) if layers != "none" else (), num_blocks=len(blocks),
        width=int(blocks[0].ln_1.normalized_shape[0]), heads=int(blocks[0].attn.num_heads),
        embed_dim=int(loaded.model.visual.output_dim), tokens=1 + grid[0] * grid[1], grid=grid, dtype=dtype,
        compression="none", shard_videos=16, num_videos=videos, classes=tuple(f"class{c:03d}" for c in range(classes)),
        inputs_digest="synthetic", **{"sampling": "uniform", **layout},
    )


def make_store(path: Path, model: str, videos: int, frames: int, layers: str, classes: int = 10,
               dtype: str = "float16", views: int = 1) -> StoreSettings:
    loaded = load_model(model)
    settings = _settings(loaded, videos, frames, layers, classes, dtype, views)
    labels = [i % classes for i in range(videos)]
    splits = ["train" if i % 5 else "val" for i in range(videos)]
    create_store(path, settings, [f"v{i}.mp4" for i in range(videos)], labels, splits,
                 frozen_parameters(loaded.model, settings.layers))
    writer = StoreWriter(path, settings)
    rng = np.random.default_rng(0)
    for group in range(settings.num_groups):
        start, stop = settings.group_range(group)
        n, shape = stop - start, (stop - start, views, frames)
        centres = rng.standard_normal((classes, settings.embed_dim)).astype(np.float32)
        writer.write_group(GroupResult(
            group=group, status=np.full(n, DONE, np.uint8), error=[""] * n, note=[""] * n,
            frame_index=np.zeros((*shape,), np.int32), fps=np.full(n, 30, np.float32),
            num_frames=np.full(n, 300, np.int32), width=np.full(n, 340, np.int32),
            height=np.full(n, 256, np.int32), duration=np.full(n, 10, np.float32),
            tokens={layer: rng.standard_normal((*shape, settings.tokens, settings.width)).astype(np.float16)
                    for layer in settings.layers},
            pooled=(centres[np.array(labels[start:stop])][:, None, None, :]
                    + rng.standard_normal((*shape, settings.embed_dim))).astype(np.float16),
        ))
    return settings


def make_dense_store(path: Path, model: str, videos: int, seconds: float, fps: float, instances: int,
                     classes: int = 20) -> StoreSettings:
    """A dense store of `videos` untrimmed videos of `seconds` (each 0.5-1.5 x that) at `fps`, with `instances`
    labelled segments of 2-20 s each, whose frames carry their class's direction over the noise: a THUMOS14-sized
    store is 413 videos of ~210 s at 10 fps with ~15 instances each. Every 5th video is in the test split."""
    loaded = load_model(model)
    settings = _settings(loaded, videos, 0, "none", classes, "float16", 1, layout="dense", fps=fps, sampling="fps")
    splits = ["test" if i % 5 == 0 else "train" for i in range(videos)]
    create_store(path, settings, [f"v{i}.mp4" for i in range(videos)], [-1] * videos, splits,
                 frozen_parameters(loaded.model, settings.layers))
    writer, root = StoreWriter(path, settings), open_root(path, mode="r+")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((classes, settings.embed_dim)).astype(np.float32)
    table: dict[str, list] = {"video": [], "start": [], "end": [], "label": []}
    for group in range(settings.num_groups):
        start, stop = settings.group_range(group)
        lengths = np.round(rng.uniform(0.5, 1.5, stop - start) * seconds * fps).astype(int)
        for video, length in zip(range(start, stop), lengths):
            pooled = rng.standard_normal((length, settings.embed_dim)).astype(np.float32)
            for _ in range(instances):
                duration = rng.uniform(2, 20) * fps
                first = int(rng.uniform(0, max(length - duration, 1)))
                label = int(rng.integers(classes))
                pooled[first:first + int(duration)] += 2 * centres[label]
                table["video"].append(video)
                table["start"].append(first / fps)
                table["end"].append(min(first + int(duration), length) / fps)
                table["label"].append(label)
            dense = DenseVideoWriter(root, settings, video)
            for piece in range(0, length, DENSE_CHUNK):
                rows = np.arange(piece, min(piece + DENSE_CHUNK, length))
                dense.append(rows / fps, rows.astype(np.int32), pooled[rows], {})
        n = stop - start
        writer.write_group(GroupResult(
            group=group, status=np.full(n, DONE, np.uint8), error=[""] * n, note=[""] * n,
            fps=np.full(n, 30, np.float32), num_frames=(lengths * 30 / fps).astype(np.int32),
            width=np.full(n, 340, np.int32), height=np.full(n, 256, np.int32),
            duration=(lengths / fps).astype(np.float32), samples=lengths.astype(np.int32)))
    order = np.lexsort((table["start"], table["video"]))
    write_segments(path, SegmentTable(
        np.asarray(table["video"], np.int32)[order], np.asarray(table["start"])[order],
        np.asarray(table["end"])[order], np.asarray(table["label"], np.int32)[order],
        np.zeros(len(order), bool), settings.classes, "synthetic"))
    return settings
