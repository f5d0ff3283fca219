"""`attnpool` (CoCa): learned queries attend over every spatio-temporal token of one block, then a
softmax classifier. LayerNorm on queries and context as in CoCa's attentional pooler."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from heads.base import FeatureRequest, HeadContext


class AttentionalPoolerHead(nn.Module):
    # CoCa's frozen-feature video recipe; the training loop applies it where the user set nothing
    recipe = {"lr": 5e-4, "batch_size": 128, "label_smoothing": 0.1, "grad_clip": 1.0}

    def __init__(self, ctx: HeadContext, queries: int = 1, layer: int = -1, heads: int | None = None) -> None:
        super().__init__()
        block = ctx.layers[layer] if -len(ctx.layers) <= layer < len(ctx.layers) else None
        if block is None:
            raise ValueError(f"attnpool layer={layer}: the store holds {len(ctx.layers)} blocks {list(ctx.layers)}")
        self.request = FeatureRequest(layers=(block,))
        width = ctx.width
        self.heads = heads or max(1, width // 64)
        if width % self.heads:
            raise ValueError(f"attnpool heads={self.heads} must divide the width {width}")
        self.query = nn.Parameter(torch.randn(queries, width) * width ** -0.5)
        self.ln_query, self.ln_context = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q_proj, self.kv_proj = nn.Linear(width, width), nn.Linear(width, 2 * width)
        self.out_proj = nn.Linear(width, width)
        self.fc = nn.Linear(width, ctx.num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        context = self.ln_context(batch["tokens"][:, 0].flatten(1, 2))  # (B, T*L, D)
        b, s, d = context.shape
        q = self.q_proj(self.ln_query(self.query)).expand(b, -1, -1)
        k, v = self.kv_proj(context).chunk(2, dim=-1)
        split = (b, -1, self.heads, d // self.heads)
        pooled = F.scaled_dot_product_attention(q.reshape(split).transpose(1, 2), k.reshape(split).transpose(1, 2),
                                                v.reshape(split).transpose(1, 2))
        pooled = self.out_proj(pooled.transpose(1, 2).reshape(b, -1, d))
        return self.fc(pooled.mean(dim=1))
