"""`prompt` (Efficient-Prompt): learned continuous prompt vectors around each class name (or, for text-video
retrieval, each sentence), run through CLIP's frozen text encoder (`heads.prompt_text`), against a temporal
transformer over the frame embeddings.

The video side is the reference's temporal module, h = Blocks(x + P) averaged over time (no outer residual).
Classification logits are cosine / 0.07, as the reference; retrieval compares videos and sentences with the
store's frozen CLIP logit scale (1/0.07 where the store records none).

One difference from the reference code, kept on purpose: its suffix vectors are rows of one table
indexed by sequence position, so the suffix a class gets shifts with the length of its name; here
the S suffix vectors are the same for every class, as the paper describes them.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from clipcache import InputError
from clipcache.heads.base import Batch, FeatureRequest, Head, HeadContext
from clipcache.heads.layers import TemporalTransformer
from clipcache.heads.prompt_text import PromptedText, PromptLayout

TEMPERATURE = 0.07  # fixed, as the reference
DEFAULT_PROMPTS = 16
NAME_ROOM = 8  # tokens of class name the default prompt counts leave room for


class PromptHead(Head):
    """`prefix`/`suffix` prompt vectors (default 16 each, as the reference's README run; fewer, equally on
    both sides, when the text context cannot hold them and an 8-token name), `depth` temporal
    transformer layers (default 2 as the reference's code; 0: the frame mean) with `heads` attention heads
    (default 8). Initialised as the reference: prompts and frame positions from N(0, 0.01^2), the rest
    PyTorch's defaults."""

    uses_text_tower = True
    option_limits = {"prefix": (0, None), "suffix": (0, None), "depth": (0, None), "heads": (1, None)}

    def __init__(self, ctx: HeadContext, prefix: int | None = None, suffix: int | None = None, depth: int = 2,
                 heads: int = 8) -> None:
        super().__init__()
        if ctx.text_tower is None:
            raise InputError("the prompt head needs the store's text encoder")
        model, tokenizer = ctx.text_tower
        prefix, suffix = _fitting(model.positional_embedding.shape[0], prefix, suffix)
        self.request = FeatureRequest(pooled=True)
        self.prompts = PromptedText(model, tokenizer, prefix, suffix)
        self.temporal = TemporalTransformer(ctx.embed_dim, ctx.frames, depth, heads, residual=False, eps=1e-5,
                                            position_std=0.01) if depth > 0 else None
        self.retrieval_scale = ctx.logit_scale if "logit_scale" in ctx.frozen else 1 / TEMPERATURE
        names = list(ctx.class_names or ctx.classes)
        if names:  # a store of captioned videos may have no classes
            self.set_classes(names)

    @property
    def prefix(self) -> nn.Parameter:
        return self.prompts.prefix

    @property
    def suffix(self) -> nn.Parameter:
        return self.prompts.suffix

    @property
    def context_length(self) -> int:
        return self.prompts.context_length

    def set_classes(self, names: list[str]) -> None:
        """Lay out the class names' prompted sequences once (buffers: they follow the head's device)."""
        self._classes = self.prompts.layout(names, truncate=False)
        for name in PromptLayout.TENSORS:
            self.register_buffer(name, getattr(self._classes, name), persistent=False)

    def class_embeddings(self) -> torch.Tensor:
        """(C, E): every class's prompted sequence through the frozen text tower, pooled at [EOT], projected."""
        return self.prompts(replace(self._classes, **{name: getattr(self, name) for name in PromptLayout.TENSORS}))

    def sentences(self, texts: list[str]) -> PromptLayout:
        """Sentences laid out for `encode_text`, cut to fit the context (`truncated` counts the cut ones)."""
        return self.prompts.layout(texts, truncate=True)

    def encode_text(self, layout: PromptLayout) -> torch.Tensor:
        """(N, E) sentence embeddings (not normalised)."""
        return self.prompts(layout)

    def encode_video(self, batch: Batch) -> torch.Tensor:
        """(B, E) video embeddings (not normalised): the temporal model over the frames, or their mean."""
        frames = batch["pooled"]
        return self.temporal(frames) if self.temporal is not None else frames.mean(dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        video = self.encode_video(batch)
        text = F.normalize(self.class_embeddings(), dim=-1)
        return F.normalize(video, dim=-1) @ text.t().to(video.dtype) / TEMPERATURE


def _fitting(context: int, prefix: int | None, suffix: int | None) -> tuple[int, int]:
    """The prompt counts asked for, else 16 each, or fewer where the text context is too short to hold
    them and a name of NAME_ROOM tokens (the tower alone decides: a checkpoint fits any class names)."""
    default = max(1, min(DEFAULT_PROMPTS, (context - 2 - NAME_ROOM) // 2))
    return (default if prefix is None else prefix), (default if suffix is None else suffix)
