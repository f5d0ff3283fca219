"""The one interface every head has: what it reads from the cache, what it needs from the store, what it
learns from the training set before the first step, and logits from a batch. How each head is trained
by default is the table in `heads.recipes`.

Heads never open files: the dataset loads exactly the features a head's `FeatureRequest` names, and
whatever a head needs from the store (class text embeddings, the text tower, frozen encoder parameters,
sizes) arrives in a `HeadContext` built once from the store.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from clipcache.heads.options import Limits

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FeatureRequest:
    """Which bytes a head needs. The batch then holds:

    - "pooled": (B, T, E) per-frame image embeddings, when `pooled` is set;
    - "tokens": (B, M, T, L', D) residual-stream tokens of `layers` (absolute block indices, in this
      order), L' = 1 when `cls_only` else all tokens (CLS first);
    - "label": (B,) int64 class indices (-1 when unknown).
    """

    pooled: bool = False
    layers: tuple[int, ...] = ()
    cls_only: bool = False


@dataclass
class HeadContext:
    """Facts from the store that a head may build itself from (no file access inside heads)."""

    classes: tuple[str, ...]
    frames: int  # T the head sees per sample
    embed_dim: int  # E
    width: int  # D of the image tower's residual stream
    heads: int  # attention heads of the image tower
    tokens: int  # L = 1 + grid_h * grid_w
    grid: tuple[int, int]
    layers: tuple[int, ...]  # absolute block indices stored
    num_blocks: int
    frozen: dict[str, torch.Tensor] = field(default_factory=dict)  # see cache.reader.CacheReader.frozen
    text_embeddings: torch.Tensor | None = None  # (C, E) normalised class-name embeddings
    logit_scale: float = 100.0  # CLIP's learned temperature (exp of the stored log scale)
    model: dict[str, Any] = field(default_factory=dict)  # model name, pretrained, config
    class_names: tuple[str, ...] = ()  # readable names of `classes` (for prompts)
    text_tower: Any = None  # (frozen open_clip model, tokenizer), given to heads that set uses_text_tower

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class Head(nn.Module):
    """Base of every head: `Head(ctx, **options)` builds it for a store, `head(batch)` gives (B, C) logits (the
    heads of `heads.LOCALISATION_HEADS` give their own outputs, which their task reads: heads/proposals.py).

    Subclasses set `request` in `__init__` and may override the class attributes and `prepare` below; the
    training loop and evaluation read nothing else about a head, except that the heads named in
    `heads.RETRIEVAL_HEADS` also offer `sentences`, `encode_text`, `encode_video` and `retrieval_scale` for
    text-video retrieval (`pipeline.train.task.RetrievalTask`).
    """

    uses_text_embeddings: ClassVar[bool] = False  # the context carries class-name text embeddings
    uses_text_tower: ClassVar[bool] = False  # the context carries the store's frozen text encoder
    lr_scales: ClassVar[dict[str, float]] = {}  # parameter name -> multiple of the learning rate
    # option name -> (lowest, highest) value `__init__` accepts (both included, None: unbounded); with the types
    # of `__init__`'s annotations, checked by `heads.build_head` before the head is built (`heads.options`)
    option_limits: ClassVar[dict[str, Limits]] = {}
    request: FeatureRequest

    def prepare(self, batches: Iterable[Batch]) -> None:
        """Called once before the first training step with the training set's batches (on the head's
        device), for what a head takes from the data rather than learns (e.g. input statistics, kept as
        buffers so checkpoints carry them). Default: nothing."""

    @classmethod
    def scores_class_names(cls) -> bool:
        """Whether the head can score classes it was not trained on (base-to-novel, zero-shot transfer)."""
        return cls.uses_text_embeddings or cls.uses_text_tower

    def forward(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError
