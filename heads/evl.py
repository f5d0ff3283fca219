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
need M+1 consecutive stored blocks. The relative-position map is h dense GEMMs over windows of its weight
table (CrossFrameAttention), never an (N, N, C) gathered weight.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clipcache import InputError
from clipcache.heads.base import FeatureRequest, Head, HeadContext
from clipcache.heads.layers import LayerNormFp32, QuickGELU, attend


def consecutive_tail(layers: tuple[int, ...]) -> tuple[int, ...]:
    """The longest run of consecutive blocks at the end of the stored ones."""
    run = [layers[-1]]
    for layer in reversed(layers[:-1]):
        if layer != run[0] - 1:
            break
        run.insert(0, layer)
    return tuple(run)


class FrozenQK(nn.Module):
    """Block j's attention queries and keys from its input: ln_1 and the q/k rows of its qkv projection,
    with the attention's 1/sqrt(d) folded into the q rows once."""

    def __init__(self, ctx: HeadContext, block: int) -> None:
        super().__init__()
        prefix = f"blocks.{block}."
        parts = {"ln_weight": "ln_1.weight", "ln_bias": "ln_1.bias", "qk_weight": "attn.in_proj_weight",
                 "qk_bias": "attn.in_proj_bias"}
        missing = [prefix + name for name in parts.values() if prefix + name not in ctx.frozen]
        if missing:
            raise InputError(f"the store lacks frozen parameters {missing}")
        self.heads = ctx.heads
        width = ctx.width
        # ln_1 whole, the first 2D (q and k) rows of the qkv projection; not persistent: the store
        # provides them again, the head's weights hold only what was trained
        frozen = {buffer: ctx.frozen[prefix + name][: 2 * width].float() for buffer, name in parts.items()}
        scale = torch.ones(2 * width)
        scale[:width] = (width // ctx.heads) ** -0.5
        frozen["qk_weight"], frozen["qk_bias"] = frozen["qk_weight"] * scale[:, None], frozen["qk_bias"] * scale
        for buffer, value in frozen.items():
            self.register_buffer(buffer, value, persistent=False)

    def forward(self, block_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, N, D) patch tokens -> q / sqrt(d), k, each (B, T, heads, N, d) with d = D/heads."""
        h = F.layer_norm(block_input.float(), (block_input.shape[-1],), self.ln_weight, self.ln_bias)
        b, t, n, d = h.shape
        qk = F.linear(h, self.qk_weight, self.qk_bias).view(b, t, n, 2, self.heads, d // self.heads)
        q, k = qk.permute(3, 0, 1, 4, 2, 5).unbind(0)
        return q, k


SCORES_IN_CACHE = 24 * 2**20  # bytes of float32 attention scores computed at once: a CPU's last-level cache


def _head_mean_attention(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(..., heads, N, d) scaled queries and keys -> (..., N, N) softmax attention averaged over heads."""
    return (q @ k.transpose(-1, -2)).softmax(dim=-1).mean(dim=-3)


class FrozenAffinity(nn.Module):
    """Block j's own attention between adjacent frames: for every patch of frame t, the softmax over the
    patches of frame t-1 (and of t+1) of q·k/sqrt(d), averaged over heads. It depends on cached tokens and
    frozen parameters only, so training records no graph here. The two directions are different products
    (q_t k_{t-1}ᵀ and q_{t-1} k_tᵀ): no frame pair's map serves both."""

    def __init__(self, ctx: HeadContext, block: int) -> None:
        super().__init__()
        self.qk = FrozenQK(ctx, block)

    def forward(self, block_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, N, D) patch tokens -> affinities of frames 1.. to their previous frame and of frames ..T-2
        to their next, each (B, T-1, N, N) (rows: the frame's patches, columns: its neighbour's)."""
        q, k = self.qk(block_input)
        _, t, heads, n, _ = q.shape
        videos = max(1, SCORES_IN_CACHE // (2 * max(t - 1, 1) * heads * n * n * 4))
        maps = [(_head_mean_attention(qc[:, 1:], kc[:, :-1]), _head_mean_attention(qc[:, :-1], kc[:, 1:]))
                for qc, kc in zip(q.split(videos), k.split(videos))]  # a few videos at a time: scores stay in cache
        prev, next_ = (torch.cat(direction) for direction in zip(*maps))
        return prev, next_


def window_index(grid: tuple[int, int]) -> torch.Tensor:
    """(w, N): where the weight of the offset between query column x and key patch (y', x') sits in the
    window that every query of row y reads (table rows y..y+h-1 of both directions, see CrossFrameAttention);
    it does not depend on y. Add 2w-1 for the next-frame direction."""
    h, w = grid
    key_y, key_x = torch.arange(h * w) // w, torch.arange(h * w) % w
    query_x = torch.arange(w)[:, None]
    return (h - 1 - key_y) * 2 * (2 * w - 1) + query_x - key_x + w - 1


class CrossFrameAttention(nn.Module):
    """XA: affinities to the previous and next frame mapped to C channels by a weight of the relative offset.

    out[p] = sum_q A[p, q] W[offset(p, q)] over the (2h-1) x (2w-1) offset table. The queries of one row y
    read only table rows y..y+h-1, a contiguous window of h(2w-1) offsets; so the map is h GEMMs, one per
    query row and both directions in one contraction, (B*T*w) x 2h(2w-1) affinities spread onto their
    offsets (half of them zero) by 2h(2w-1) x C windows of the table. That is (2w-1)/w ~ 2x the
    multiply-adds of the sparse sum, all in dense GEMMs, and neither pass materialises an (N, N, C)
    gathered weight (118 MB at ViT-B/16, fp32): the backward is the transposed GEMM into the windows,
    folded back onto the table. Measured 3.8x faster than the gather (fwd + bwd, ViT-B/16, 2 videos, 1 core).
    """

    def __init__(self, grid: tuple[int, int], width: int) -> None:
        super().__init__()
        self.grid = grid
        bins = (2 * grid[0] - 1) * (2 * grid[1] - 1)
        self.weight_prev = nn.Parameter(torch.zeros(bins, width))
        self.weight_next = nn.Parameter(torch.zeros(bins, width))
        self.register_buffer("index", window_index(grid), persistent=False)

    def forward(self, prev: torch.Tensor, next_: torch.Tensor) -> torch.Tensor:
        """Affinities as FrozenAffinity gives them -> (B, T, h, w, C), zero where a neighbour does not exist
        (a view of the GEMMs' output: adding it where it goes is the only pass over it)."""
        h, w = self.grid
        b, pairs, n, _ = prev.shape
        t, c, span = pairs + 1, self.weight_prev.shape[1], 2 * h * (2 * w - 1)
        table = torch.stack([self.weight_prev.view(2 * h - 1, 2 * w - 1, c),
                             self.weight_next.view(2 * h - 1, 2 * w - 1, c)], dim=1)  # (2h-1, 2, 2w-1, C)
        windows = table.unfold(0, h, 1).permute(0, 4, 1, 2, 3).reshape(h, span, c)  # rows y..y+h-1 for each y
        spread = prev.new_zeros(h, b, t, w, span)  # (query row, B, T, query column, window)
        index = self.index.expand(h, b, pairs, w, n)
        spread[:, :, 1:].scatter_(-1, index, prev.view(b, pairs, h, w, n).permute(2, 0, 1, 3, 4))
        spread[:, :, :-1].scatter_(-1, index + (2 * w - 1), next_.view(b, pairs, h, w, n).permute(2, 0, 1, 3, 4))
        out = torch.bmm(spread.view(h, b * t * w, span), windows)
        return out.view(h, b, t, w, c).permute(1, 2, 0, 3, 4)


class TemporalEnrichment(nn.Module):
    """Y = X + DWConv_t(X) + P + XA(A); the XA term on patch tokens only (CLS rows get nothing).

    X + DWConv_t(X) is one depthwise conv whose middle tap is the conv's plus one, run as a (3, 1) conv2d on
    (B, C, T, L) viewed channels-last: no copy of the tokens in or out (nn.Conv1d holds the parameters,
    initialised as EVL's)."""

    def __init__(self, ctx: HeadContext, block: int) -> None:
        super().__init__()
        width = ctx.width
        self.conv = nn.Conv1d(width, width, kernel_size=3, padding=1, groups=width)
        self.register_buffer("identity", torch.tensor([0.0, 1.0, 0.0]), persistent=False)
        self.position = nn.Parameter(torch.zeros(ctx.frames, width))
        self.affinity = FrozenAffinity(ctx, block)
        self.cross = CrossFrameAttention(ctx.grid, width)

    def forward(self, x: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        kernel = (self.conv.weight + self.identity).unsqueeze(-1)  # (C, 1, 3, 1)
        y = F.conv2d(x.permute(0, 3, 1, 2), kernel, self.conv.bias, padding=(1, 0), groups=x.shape[-1])
        y = y.permute(0, 2, 3, 1) + self.position[:, None, :]
        y[:, :, 1:].unflatten(2, self.cross.grid).add_(self.cross(*self.affinity(block_input[:, :, 1:])))
        return y


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
        # The key bias cancels in the softmax, so it never touches the output: kept for the reference's parameter
        # layout, not trained (a parameter without a gradient would also stall DistributedDataParallel)
        self.k_proj.bias.requires_grad_(False)

    def forward(self, z: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """z: (B, 1, C); memory: (B, T*L, C). The memory is never projected (heads.attention)."""
        attended = attend(self.q_proj(self.ln_query(z)), self.ln_memory(memory), self.k_proj.weight,
                          self.v_proj.weight, self.v_proj.bias, self.heads)
        z = z + self.out_proj(attended)
        return z + self.mlp(self.ln_mlp(z))


class EVLHead(Head):
    """`num_layers` decoder layers M (default 4, or fewer when fewer blocks are stored), `dropout` in the
    decoder MLPs and before the classifier (0.5 as in the paper)."""

    option_limits = {"num_layers": (1, None), "dropout": (0, 1)}

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
