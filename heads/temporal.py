"""A small pre-LN transformer over per-frame embeddings with learned frame positions, built from CLIP's
blocks (QuickGELU, 64-wide heads), then the mean over time. Shared by the text head (Text4Vis adds the
input frames back around the transformer: `residual`) and the prompt head (Efficient-Prompt does not)."""
from __future__ import annotations

import torch
from open_clip.transformer import QuickGELU
from torch import nn


class TemporalTransformer(nn.Module):
    def __init__(self, dim: int, frames: int, depth: int, residual: bool = True, position_std: float = 0.02) -> None:
        super().__init__()
        heads = dim // 64 if dim % 64 == 0 else 1  # CLIP's 64-wide attention heads
        self.residual = residual
        self.position = nn.Parameter(torch.zeros(frames, dim))
        nn.init.normal_(self.position, std=position_std)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation=QuickGELU(),
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, E)."""
        encoded = self.layers(frames + self.position)
        return (frames + encoded if self.residual else encoded).mean(dim=1)
