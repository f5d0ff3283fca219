"""Layers shared by the heads.

- `attend`: multi-head attention of a few learned queries over a long memory (EVL's decoder, CoCa's
  pooler) with the projections moved to the query side. With Q queries, H heads and S memory tokens of
  width D, projecting the memory to keys and values costs 2·S·D² multiply-adds, while the attention
  itself costs 2·H·Q·S·D once the projections are moved: q_h·(W_k,h m + b_k,h) = (W_k,hᵀ q_h)·m + const,
  and the constant drops out of the softmax; Σ_s a_s (W_v,h m_s + b_v,h) = W_v,h (Σ_s a_s m_s) + b_v,h
  since the weights sum to one. For one query and 64-wide heads that is D/64 times fewer operations
  (12x for ViT-B, 16x for ViT-L), the same function.
- `TemporalTransformer`: a small pre-LN transformer over per-frame embeddings with learned frame
  positions, built like CLIP's blocks (QuickGELU, 64-wide heads), then the mean over time. The text head
  (Text4Vis adds the input frames back around the transformer: `residual`) and the prompt head
  (Efficient-Prompt does not) share it.
- `LayerNormFp32` and `QuickGELU` are open_clip's own (EVL and CLIP use them).
"""
from __future__ import annotations

import torch
from open_clip.transformer import LayerNormFp32, QuickGELU
from torch import nn
from torch.nn import functional as F

__all__ = ["LayerNormFp32", "QuickGELU", "TemporalTransformer", "attend"]


def attend(queries: torch.Tensor, memory: torch.Tensor, key_weight: torch.Tensor, value_weight: torch.Tensor,
           value_bias: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q_h k_hᵀ / sqrt(D/H)) v_h per head, concatenated over heads.

    queries: (B, Q, D) already projected; memory: (B, S, D); key_weight, value_weight: (D, D) as in
    nn.Linear (the key bias is not needed); value_bias: (D,). Returns (B, Q, D), before the output projection.
    """
    b, q, d = queries.shape
    dh = d // heads
    per_head = queries.reshape(b, q, heads, 1, dh)
    lifted = (per_head @ key_weight.reshape(heads, dh, d)).reshape(b, 1, q * heads, d)  # W_k,hᵀ q_h
    pooled = F.scaled_dot_product_attention(lifted, memory[:, None], memory[:, None], scale=dh ** -0.5)
    out = pooled.reshape(b, q, heads, 1, d) @ value_weight.reshape(heads, dh, d).transpose(-1, -2)
    return out.reshape(b, q, d) + value_bias


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
