"""`text` (Text4Vis): the classifier is the frozen, normalised class-name text embeddings.

The video embedding is Text4Vis's "Transf" video header over the frame embeddings, h = Blocks(x + P) + x
averaged over time (depth 0: the frame mean); logits are exp(s) x cosine with s initialised at CLIP's
logit scale and learned at a tenth of the learning rate, as Text4Vis learns CLIP's own. Any class with a
text embedding can be scored, seen in training or not.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from clipcache import InputError
from clipcache.heads.base import FeatureRequest, Head, HeadContext
from clipcache.heads.layers import TemporalTransformer


def text_width(ctx: HeadContext) -> int:
    """Width of the model's text transformer (Text4Vis sizes its heads by it), else the embedding width."""
    return int(ctx.model.get("config", {}).get("text_cfg", {}).get("width", ctx.embed_dim))


class TextHead(Head):
    """`depth` temporal transformer layers (default 6 as Text4Vis; 0: the frame mean), `learn_scale` the
    logit scale (default true)."""

    uses_text_embeddings = True
    lr_scales: ClassVar[dict[str, float]] = {"log_scale": 0.1}  # Text4Vis: CLIP's parameters at 0.1x lr
    option_limits = {"depth": (0, None)}

    def __init__(self, ctx: HeadContext, depth: int = 6, learn_scale: bool = True) -> None:
        super().__init__()
        if ctx.text_embeddings is None:
            raise InputError("the text head needs class-name text embeddings (--templates)")
        self.request = FeatureRequest(pooled=True)
        heads = max(1, text_width(ctx) // 64)
        self.temporal = TemporalTransformer(ctx.embed_dim, ctx.frames, depth, heads, residual=True, eps=1e-12,
                                            position_std=0.02, linear_std=0.02) if depth > 0 else None
        self.register_buffer("classifier", nn.functional.normalize(ctx.text_embeddings.float(), dim=-1),
                             persistent=False)  # rebuilt from the store: checkpoints fit any class set
        self.log_scale = nn.Parameter(torch.tensor(math.log(ctx.logit_scale)), requires_grad=learn_scale)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        frames = batch["pooled"]
        video = self.temporal(frames) if self.temporal is not None else frames.mean(dim=1)
        video = nn.functional.normalize(video, dim=-1)
        return self.log_scale.exp() * video @ self.classifier.t()
