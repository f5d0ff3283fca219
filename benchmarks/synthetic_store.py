"""A store of random features with a real model's shapes, written through the cache writer: the
stage-two benchmarks measure reading and training without spending minutes extracting first."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clipcache.cache.schema import DONE, StoreSettings
from clipcache.cache.writer import GroupResult, StoreWriter, create_store
from clipcache.pipeline.extract.encoder import frozen_parameters, resolve_layers, vision_blocks
from clipcache.pipeline.models import load_model


def make_store(path: Path, model: str, videos: int, frames: int, layers: str, classes: int = 10,
               dtype: str = "float16", views: int = 1) -> StoreSettings:
    loaded = load_model(model)
    blocks = vision_blocks(loaded.model)
    grid = tuple(int(g) for g in loaded.model.visual.grid_size)
    names = tuple(f"class{c:03d}" for c in range(classes))
    settings = StoreSettings(
        model=loaded.name, pretrained="", model_config=loaded.config, image_size=loaded.preprocess["image_size"],
        mean=loaded.preprocess["mean"], std=loaded.preprocess["std"], interpolation="bicubic",
        resize_mode="shortest", frames=frames, sampling="uniform", stride=1, clips=views, crops=1, augment=0, seed=0,
        layers=resolve_layers(layers, len(blocks)), num_blocks=len(blocks),
        width=int(blocks[0].ln_1.normalized_shape[0]), heads=int(blocks[0].attn.num_heads),
        embed_dim=int(loaded.model.visual.output_dim), tokens=1 + grid[0] * grid[1], grid=grid, dtype=dtype,
        compression="none", shard_videos=16, num_videos=videos, classes=names, inputs_digest="synthetic",
    )
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
