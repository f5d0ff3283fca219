"""`evl`: the EVL decoder (Frozen CLIP Models are Efficient Video Learners) on cached tokens.

Decoder layer i reads the residual stream X after backbone block j = B-M+i and enriches it with
temporal information before a learned query attends to it:

    Y = X + DWConv_t(X) + P_i + XA_i(q_j, k_j)

DWConv_t is a depthwise convolution over frames (kernel 3) for every token, P_i a temporal position
embedding, and XA_i the cross-frame term: the softmax affinity of each patch of frame t to the patches
of frame t-1 (and t+1), from block j's own attention queries and keys (heads averaged), is mapped to C
channels by a weight indexed by the relative position of the two patches. The cache holds no q/k:
they are recomputed from block j's input (the stored output of block j-1) with block j's frozen ln_1
and qkv projection, one small matmul per layer instead of 5x the bytes on disk. So M decoder layers
need M+1 consecutive stored blocks. The relative-position map is one gather of the weight and one
batched matmul over query patches.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clipcache import InputError
from clipcache.heads.base import FeatureRequest, Head, HeadContext
from clipcache.heads.layers import LayerNormFp32, QuickGELU, attend


def relative_index(grid: tuple[int, int]) -> torch.Tensor:
    """(N, N) index of the offset between query patch p and key patch q into (2h-1)(2w-1) bins."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :] + h - 1) * (2 * w - 1) + (xs[:, None] - xs[None, :] + w - 1)


def consecutive_tail(layers: tuple[int, ...]) -> tuple[int, ...]:
    """The longest run of consecutive blocks at the end of the stored ones."""
    run = [layers[-1]]
    for layer in reversed(layers[:-1]):
        if layer != run[0] - 1:
            break
        run.insert(0, layer)
    return tuple(run)


class FrozenQK(nn.Module):
    """Block j's attention queries and keys from its input: ln_1 and the q/k rows of its qkv projection."""

    def __init__(self, ctx: HeadContext, block: int) -> None:
        super().__init__()
        prefix = f"blocks.{block}."
        parts = {"ln_weight": "ln_1.weight", "ln_bias": "ln_1.bias", "qk_weight": "attn.in_proj_weight",
                 "qk_bias": "attn.in_proj_bias"}
        missing = [prefix + name for name in parts.values() if prefix + name not in ctx.frozen]
        if missing:
            raise InputError(f"the store lacks frozen parameters {missing}")
        self.heads = ctx.heads
        for buffer, name in parts.items():
            # ln_1 whole, the first 2D (q and k) rows of the qkv projection; not persistent: the store
            # provides them again, the head's weights hold only what was trained
            self.register_buffer(buffer, ctx.frozen[prefix + name][: 2 * ctx.width].float(), persistent=False)

    def forward(self, block_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, N, D) patch tokens -> q, k of shape (B, T, heads, N, D/heads)."""
        h = F.layer_norm(block_input.float(), (block_input.shape[-1],), self.ln_weight, self.ln_bias)
        q, k = F.linear(h, self.qk_weight, self.qk_bias).chunk(2, dim=-1)
        b, t, n, d = q.shape
        split = (b, t, n, self.heads, d // self.heads)
        return q.reshape(split).transpose(2, 3), k.reshape(split).transpose(2, 3)


class CrossFrameAttention(nn.Module):
    """XA: patch affinities to the previous and next frame, mapped to channels by relative position."""

    def __init__(self, grid: tuple[int, int], width: int) -> None:
        super().__init__()
        bins = (2 * grid[0] - 1) * (2 * grid[1] - 1)
        self.weight_prev = nn.Parameter(torch.zeros(bins, width))
        self.weight_next = nn.Parameter(torch.zeros(bins, width))
        self.register_buffer("index", relative_index(grid), persistent=False)

    def _mapped(self, q: torch.Tensor, k: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """q of frames t, k of frames t±1: (B, T', H, N, dh) -> (B, T', N, C).

        out[p] = sum_q A[p, q] W[rel(p, q)]: the weight is gathered once per call to (N, N, C) and the
        sum is one batched matmul over query patches (B*T' rows each), N*N*C multiply-adds per frame.
        The gather is an embedding lookup: its backward sums rows ~10x faster than indexing's index_put.
        """
        affinity = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1).mean(dim=2)  # (B,T',N,N)
        b, t, n, _ = affinity.shape
        per_query = affinity.permute(2, 0, 1, 3).reshape(n, b * t, n)
        mapped = torch.bmm(per_query, F.embedding(self.index, weight).to(affinity.dtype))  # (N, B*T', C)
        return mapped.reshape(n, b, t, -1).permute(1, 2, 0, 3)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """(B, T, N, C): frame t's term from t-1 and from t+1 (zero where that frame does not exist)."""
        b, t, _, n, _ = q.shape
        out = q.new_zeros(b, t, n, self.weight_prev.shape[1])
        if t > 1:
            out[:, 1:] += self._mapped(q[:, 1:], k[:, :-1], self.weight_prev)
            out[:, :-1] += self._mapped(q[:, :-1], k[:, 1:], self.weight_next)
        return out


class TemporalEnrichment(nn.Module):
    """Y = X + DWConv_t(X) + P + XA(q, k); the XA term on patch tokens only (CLS rows get nothing)."""

    def __init__(self, ctx: HeadContext, block: int) -> None:
        super().__init__()
        width = ctx.width
        self.conv = nn.Conv1d(width, width, kernel_size=3, padding=1, groups=width)
        self.position = nn.Parameter(torch.zeros(ctx.frames, width))
        self.qk = FrozenQK(ctx, block)
        self.cross = CrossFrameAttention(ctx.grid, width)

    def forward(self, x: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        b, t, length, c = x.shape
        conv = self.conv(x.permute(0, 2, 3, 1).reshape(b * length, c, t)).reshape(b, length, c, t)
        y = x + conv.permute(0, 3, 1, 2) + self.position[:, None, :].to(x.dtype)
        q, k = self.qk(block_input[:, :, 1:])
        patches = y[:, :, 1:] + self.cross(q, k).to(y.dtype)
        return torch.cat([y[:, :, :1], patches], dim=2)


class DecoderBlock(nn.Module):
    """z <- z + MHA(LN(z), LN(Y), LN(Y)); z <- z + MLP(LN(z)) with QuickGELU and dropout.

    Initialised as EVL's reference: Xavier-uniform weights, zero attention biases, ~0 MLP biases.
    """

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.heads = max(1, width // 64)
        self.ln_query, self.ln_memory, self.ln_mlp = LayerNormFp32(width), LayerNormFp32(width), LayerNormFp32(width)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.out_proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width))
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        for linear in (self.mlp[0], self.mlp[3]):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.normal_(linear.bias, std=1e-6)

    def forward(self, z: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """z: (B, 1, C); memory: (B, T*L, C). The memory is never projected (heads.attention)."""
        attended = attend(self.q_proj(self.ln_query(z)), self.ln_memory(memory), self.k_proj.weight,
                          self.v_proj.weight, self.v_proj.bias, self.heads)
        z = z + self.out_proj(attended)
        return z + self.mlp(self.ln_mlp(z))


class EVLHead(Head):
    """`num_layers` decoder layers M (default 4, or fewer when fewer blocks are stored), `dropout` in the
    decoder MLPs and before the classifier (0.5 as in the paper)."""

    def __init__(self, ctx: HeadContext, num_layers: int | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        tail = consecutive_tail(ctx.layers)
        available = len(tail) - 1
        num_layers = num_layers if num_layers is not None else min(4, available)
        if num_layers < 1 or num_layers > available:
            wanted = num_layers if num_layers >= 1 else 4
            fewer = f" or pass --option num_layers={available}" if available >= 1 else ""
            raise InputError(
                f"evl with {wanted} decoder layers needs the last {wanted + 1} blocks stored consecutively "
                f"(M layers read blocks B-M..B-1 and recompute their q/k from the block before each); the store's "
                f"consecutive tail is {list(tail)}: extract with --layers -{wanted + 1}:{fewer}")
        blocks = tail[-(num_layers + 1):]
        self.request = FeatureRequest(layers=blocks)
        width = ctx.width
        self.enrich = nn.ModuleList(TemporalEnrichment(ctx, block) for block in blocks[1:])
        self.decoder = nn.ModuleList(DecoderBlock(width, dropout) for _ in blocks[1:])
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.norm = LayerNormFp32(width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, ctx.num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = batch["tokens"]  # (B, M+1, T, L, D)
        b = tokens.shape[0]
        z = self.query.expand(b, -1, -1).to(tokens.dtype)
        for i, (enrich, block) in enumerate(zip(self.enrich, self.decoder)):
            y = enrich(tokens[:, i + 1], tokens[:, i])
            z = block(z, y.flatten(1, 2))
        return self.fc(self.dropout(self.norm(z[:, 0])))
