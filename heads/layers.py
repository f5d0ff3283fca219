"""Layers shared by the heads.

- `attend`: multi-head attention of a few learned queries over a long memory (EVL's decoder, CoCa's
  pooler) with the projections moved to the query side. With Q queries, H heads and S memory tokens of
  width D, projecting the memory to keys and values costs 2·S·D² multiply-adds, while the attention
  itself costs 2·H·Q·S·D once the projections are moved: q_h·(W_k,h m + b_k,h) = (W_k,hᵀ q_h)·m + const,
  and the constant drops out of the softmax; Σ_s a_s (W_v,h m_s + b_v,h) = W_v,h (Σ_s a_s m_s) + b_v,h
  since the weights sum to one. For one query and 64-wide heads that is D/64 times fewer operations
  (12x for ViT-B, 16x for ViT-L), the same function.
- `TemporalTransformer`: CLIP-style pre-LN blocks (QuickGELU) over per-frame embeddings with learned frame
  positions, then the mean over time. The text head (Text4Vis: LayerNorm eps 1e-12, N(0, 0.02) init, the
  input frames added back around the blocks) and the prompt head (Efficient-Prompt: eps 1e-5, PyTorch's
  init, no outer residual) share it with their references' settings.
- `LayerNormFp32` and `QuickGELU` are open_clip's own (EVL and CLIP use them).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from open_clip.transformer import LayerNormFp32, QuickGELU
from torch import nn
from torch.nn import functional as F

from clipcache import InputError

__all__ = ["LayerNormFp32", "QuickGELU", "ResidualAttentionBlock", "TemporalTransformer", "attend"]


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


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-LN block: x + MHA(LN1(x)), then x + c_proj(QuickGELU(c_fc(LN2(x)))) with a 4x MLP; no mask,
    no dropout. The parameter names are CLIP's, as in both references' temporal modules."""

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = LayerNormFp32(dim, eps=eps), LayerNormFp32(dim, eps=eps)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(dim, 4 * dim), gelu=QuickGELU(),
                                             c_proj=nn.Linear(4 * dim, dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    """h = x + P[:T]; h = Blocks(h); h = h + x when `residual`; the mean of h over time: (B, T, E) -> (B, E).

    `linear_std`: Linear weights (the MLP's and the attention's output projection) from N(0, std^2) with
    zero biases (Text4Vis); None keeps PyTorch's initialisation (Efficient-Prompt). The packed q/k/v
    projection keeps nn.MultiheadAttention's Xavier initialisation in both references.
    """

    def __init__(self, dim: int, frames: int, depth: int, heads: int, *, residual: bool, eps: float,
                 position_std: float, linear_std: float | None = None) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise InputError(f"temporal transformer: {heads} heads do not divide the width {dim}")
        self.residual = residual
        self.position = nn.Parameter(torch.randn(frames, dim) * position_std)
        self.blocks = nn.Sequential(*(ResidualAttentionBlock(dim, heads, eps) for _ in range(depth)))
        if linear_std is not None:
            for module in self.blocks.modules():
                if isinstance(module, nn.Linear):  # out_proj is one too
                    nn.init.normal_(module.weight, std=linear_std)
                    nn.init.zeros_(module.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        encoded = self.blocks(frames + self.position[: frames.shape[1]].to(frames.dtype))
        return (encoded + frames if self.residual else encoded).mean(dim=1)
