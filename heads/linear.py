"""`linear`: the frame-mean of the pooled embeddings, optionally L2-normalised, then one linear layer."""
from __future__ import annotations

import torch
from torch import nn

from clipcache.heads.base import FeatureRequest, Head, HeadContext


class LinearHead(Head):
    def __init__(self, ctx: HeadContext, normalize: bool = True) -> None:
        super().__init__()
        self.request = FeatureRequest(pooled=True)
        self.normalize = normalize
        self.fc = nn.Linear(ctx.embed_dim, ctx.num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        video = batch["pooled"].mean(dim=1)
        if self.normalize:
            video = nn.functional.normalize(video, dim=-1)
        return self.fc(video)
