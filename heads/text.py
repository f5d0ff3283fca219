"""`text` (Text4Vis): the classifier is the frozen, normalised class-name text embeddings.

The video embedding is the frame mean, or a temporal transformer over the frame embeddings; logits
are scale x cosine. Any class with a text embedding can be scored, seen in training or not.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from clipcache import InputError
from clipcache.heads.base import FeatureRequest, Head, HeadContext
from clipcache.heads.layers import TemporalTransformer


class TextHead(Head):
    uses_text_embeddings = True

    def __init__(self, ctx: HeadContext, depth: int = 1, learn_scale: bool = True) -> None:
        super().__init__()
        if ctx.text_embeddings is None:
            raise InputError("the text head needs class-name text embeddings (--templates)")
        self.request = FeatureRequest(pooled=True)
        self.temporal = TemporalTransformer(ctx.embed_dim, ctx.frames, depth) if depth > 0 else None
        self.register_buffer("classifier", nn.functional.normalize(ctx.text_embeddings.float(), dim=-1),
                             persistent=False)  # rebuilt from the store: checkpoints fit any class set
        log_scale = torch.tensor(math.log(ctx.logit_scale))
        self.log_scale = nn.Parameter(log_scale) if learn_scale else nn.Parameter(log_scale, requires_grad=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        frames = batch["pooled"]
        video = self.temporal(frames) if self.temporal is not None else frames.mean(dim=1)
        video = nn.functional.normalize(video, dim=-1)
        return self.log_scale.exp() * video @ self.classifier.t()
