"""What a head may know about a store, gathered once (heads never open files)."""
from __future__ import annotations

import math

import numpy as np
import torch

from cache.reader import CacheReader
from heads.base import HeadContext


def head_context(reader: CacheReader, frames: int, text_embeddings: np.ndarray | None = None) -> HeadContext:
    s = reader.settings
    frozen = {name: torch.from_numpy(value) for name, value in reader.frozen().items()}
    log_scale = frozen.get("logit_scale")
    return HeadContext(
        classes=s.classes, frames=frames, embed_dim=s.embed_dim, width=s.width, heads=s.heads, tokens=s.tokens,
        grid=tuple(s.grid), layers=s.layers, num_blocks=s.num_blocks, frozen=frozen,
        text_embeddings=None if text_embeddings is None else torch.from_numpy(text_embeddings),
        logit_scale=math.exp(float(log_scale)) if log_scale is not None else 100.0,
        model={"name": s.model, "pretrained": s.pretrained, "config": s.model_config},
    )
