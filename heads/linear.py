"""`linear`: the frame-mean of the pooled embeddings, L2-normalised, standardised with the training set's
statistics, then one linear layer.

Why standardise: CLIP embeddings share a large common direction (a random encoder's are pairwise
cosine > 0.99), so the classes differ in small deviations from it. A linear layer trained by AdamW from
small weights moves those logits so slowly that a short run stays at chance, while logistic regression
on the same features, solved exactly, does well. Subtracting the training set's mean removes the shared
direction; dividing by one number, the root-mean-square deviation of a channel, gives the channels unit
variance on average (as a StandardScaler would one by one) and keeps the geometry the probe sees.
Per-channel deviations would be estimated from a handful of videos in few-shot runs, and would weight
noise channels as much as informative ones. The statistics are buffers: checkpoints carry them, so
evaluation uses the training set's.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from clipcache.heads.base import Batch, FeatureRequest, Head, HeadContext


class LinearHead(Head):
    """`normalize` L2-normalises the frame mean (default true), `standardize` centres it and scales it with
    the training set's statistics (default true)."""

    def __init__(self, ctx: HeadContext, normalize: bool = True, standardize: bool = True) -> None:
        super().__init__()
        self.request = FeatureRequest(pooled=True)
        self.normalize, self.standardize = normalize, standardize
        self.register_buffer("mean", torch.zeros(ctx.embed_dim))
        self.register_buffer("scale", torch.ones(()))
        self.fc = nn.Linear(ctx.embed_dim, ctx.num_classes)

    def video(self, batch: Batch) -> torch.Tensor:
        """(B, E): the frame mean, normalised when asked."""
        video = batch["pooled"].mean(dim=1)
        return nn.functional.normalize(video, dim=-1) if self.normalize else video

    @torch.no_grad()
    def prepare(self, batches: Iterable[Batch]) -> None:
        if not self.standardize:
            return
        videos = torch.cat([self.video(batch).double() for batch in batches])
        deviations = videos - videos.mean(dim=0)
        self.mean.copy_(videos.mean(dim=0))
        self.scale.copy_(deviations.pow(2).mean().sqrt().clamp_min(1e-6))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.fc((self.video(batch) - self.mean) / self.scale)
