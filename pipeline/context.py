"""What a head may know about a store, gathered once (heads never open files)."""
from __future__ import annotations

import math

import numpy as np
import torch

from cache.reader import CacheReader
from heads.base import HeadContext


def head_context(reader: CacheReader, frames: int, text_embeddings: np.ndarray | None = None,
                 classes: tuple[str, ...] | None = None) -> HeadContext:
    """`classes` restricts (and orders) the classes the head scores; text embeddings follow them."""
    s = reader.settings
    classes = classes or s.classes
    if text_embeddings is not None:
        text_embeddings = text_embeddings[[s.classes.index(c) for c in classes]]
    frozen = {name: torch.from_numpy(value) for name, value in reader.frozen().items()}
    log_scale = frozen.get("logit_scale")
    return HeadContext(
        classes=tuple(classes), frames=frames, embed_dim=s.embed_dim, width=s.width, heads=s.heads, tokens=s.tokens,
        grid=tuple(s.grid), layers=s.layers, num_blocks=s.num_blocks, frozen=frozen,
        text_embeddings=None if text_embeddings is None else torch.from_numpy(text_embeddings),
        logit_scale=math.exp(float(log_scale)) if log_scale is not None else 100.0,
        model={"name": s.model, "pretrained": s.pretrained, "config": s.model_config},
    )
