"""`attnpool` (CoCa): learned queries attend over every spatio-temporal token of one block, then a
softmax classifier. As open_clip's AttentionalPooler: LayerNorm on queries and on context, 8 heads,
queries drawn from N(0, 1), projections initialised as nn.MultiheadAttention does.

The context's LayerNorm scale g and shift b are folded into the projections, an exact rewrite:
keys W_k(g*n + b) + b_k differ from (W_k g) n by a constant that cancels in the softmax, and values
give (W_v g) n + (W_v b + b_v). The context is then only normalised: nothing in it is trained, so the
backward pass never touches the (B, T*L, D) tokens, only the few queries."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clipcache import InputError
from clipcache.heads.base import FeatureRequest, Head, HeadContext
from clipcache.heads.layers import attend


class AttentionalPoolerHead(Head):
    """`queries` learned queries (default 1), `layer` which stored block (index into the stored ones,
    default the last), `heads` attention heads (default 8)."""

    option_limits = {"queries": (1, None), "heads": (1, None)}

    def __init__(self, ctx: HeadContext, queries: int = 1, layer: int = -1, heads: int = 8) -> None:
        super().__init__()
        if not -len(ctx.layers) <= layer < len(ctx.layers):
            raise InputError(f"attnpool layer={layer}: the store holds {len(ctx.layers)} blocks {list(ctx.layers)}")
        width = ctx.width
        if heads < 1 or width % heads:
            raise InputError(f"attnpool heads={heads} must divide the width {width}")
        self.request = FeatureRequest(layers=(ctx.layers[layer],))
        self.heads = heads
        self.query = nn.Parameter(torch.randn(queries, width))
        self.ln_query, self.ln_context = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q_proj, self.kv_proj = nn.Linear(width, width), nn.Linear(width, 2 * width)
        self.out_proj = nn.Linear(width, width)
        for linear in (self.q_proj, self.kv_proj):
            nn.init.xavier_uniform_(linear.weight)
        for linear in (self.q_proj, self.kv_proj, self.out_proj):
            nn.init.zeros_(linear.bias)
        self.fc = nn.Linear(width, ctx.num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = batch["tokens"][:, 0].flatten(1, 2)  # (B, T*L, D): normalised, never projected
        context = F.layer_norm(tokens, tokens.shape[-1:], eps=self.ln_context.eps)
        scale, shift = self.ln_context.weight, self.ln_context.bias
        queries = self.q_proj(self.ln_query(self.query)).expand(len(context), -1, -1)
        key_weight, value_weight = self.kv_proj.weight.chunk(2)
        value_bias = self.kv_proj.bias.chunk(2)[1] + value_weight @ shift
        pooled = attend(queries, context, key_weight * scale, value_weight * scale, value_bias, self.heads)
        return self.fc(self.out_proj(pooled).mean(dim=1))
