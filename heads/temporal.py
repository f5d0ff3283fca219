"""A small pre-LN transformer over per-frame embeddings with learned frame positions (shared by the
text and prompt heads, as in Text4Vis and Efficient-Prompt): residual, then mean over time."""
from __future__ import annotations

import torch
from torch import nn


class TemporalTransformer(nn.Module):
    def __init__(self, dim: int, frames: int, depth: int) -> None:
        super().__init__()
        heads = dim // 64 if dim % 64 == 0 else 1  # CLIP's 64-wide attention heads
        self.position = nn.Parameter(torch.zeros(frames, dim))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, E)."""
        return (frames + self.layers(frames + self.position)).mean(dim=1)
