"""Building a head for a store: what it may know about the store, gathered once (heads never open
files), plus class-name embeddings or the text tower for heads that read class names."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipcache.cache.reader import CacheReader
from clipcache.heads import build_head, head_class
from clipcache.heads.base import Head, HeadContext
from clipcache.pipeline.train.text_embeddings import class_names, load_text_tower, text_embeddings


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


def build_for_store(reader: CacheReader, head: str, options: dict[str, Any], frames: int, templates: str,
                    names_file: Path | None, device: torch.device,
                    classes: tuple[str, ...] | None = None, pretrained: Path | None = None) -> Head:
    """The head on this store's context (optionally a subset of its classes), with class-name
    embeddings or the text tower when it uses them."""
    kind = head_class(head)
    text = text_embeddings(reader, templates, names_file, device, pretrained=pretrained) \
        if kind.uses_text_embeddings else None
    ctx = head_context(reader, frames, text, classes)
    readable = dict(zip(reader.classes, class_names(reader, names_file)))
    ctx.class_names = tuple(readable[c] for c in ctx.classes)
    if kind.uses_text_tower:
        ctx.text_tower = load_text_tower(reader, device, pretrained)
    return build_head(head, ctx, **options).to(device)
