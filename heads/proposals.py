"""`proposals`: a class-agnostic, anchor-free temporal proposal network over the dense frame embeddings of an
untrimmed video, in the spirit of ActionFormer and AFSD but smaller: each time step of each pyramid level says
whether an action covers it (actionness) and how far that action's start and end lie.

    x_t = (n(f_t) - mu) / s                      frame t's embedding f_t, L2-normalised (n), centred and scaled with
                                                 the training set's statistics (`prepare`, as heads/linear.py does)
    h^0 = Enc(P x)                               P: E -> D; Enc: `depth` residual conv blocks h + B(h)
    h^l = B_2(h^(l-1)),  l = 1 .. L-1            a conv block of stride 2: level l has stride s_l = 2^l
    a^l_i = C(h^l)_i                             actionness logit of the step at position p = i * s_l
    (d_start, d_end)^l_i = s_l * relu(g_l * R(h^l)_i)   distances to the start and the end, in feature steps
    proposal (p - d_start, p + d_end), score sigmoid(a)

A conv block B is conv (kernel 3) -> LayerNorm over channels -> ReLU, its output multiplied by the mask, so that
padding stays zero and never reaches a valid step (a padded window gives the same outputs on its valid steps as
the window alone). C and R are shared by all levels (`head_depth` conv blocks, then a kernel-3 conv to 1 or 2
channels); g_l is a learned scale per level, so one shared R serves distances of every size. The actionness bias
starts at the prior -log(99) (sigmoid 0.01), so the focal loss is not swamped by background at the first steps.

Level l is responsible for the actions whose farther boundary lies [4 * 2^(l-1), 4 * 2^l) steps from the step
(level 0: [0, 4), the last level: up to infinity); with L = 6 these are ActionFormer's ranges for THUMOS14
(`RANGE_BASE`), which pipeline/localize/targets.py uses to assign the ground truth.

Cost per window of W steps, width D, embedding E: P costs W*E*D multiply-adds and a conv 3*D^2 per output step;
the levels hold W + W/2 + ... < 2W steps, so forward ~ W*E*D + 3*D^2*W*(depth + 1 + 4*head_depth): 154 M
multiply-adds per window at W=256, E=512, D=128, depth 2, head_depth 2 (counted by torch's FlopCounterMode), and
0.61 M parameters, nearly all in the eleven D x D x 3 convs.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from clipcache.heads.base import Batch, FeatureRequest, Head, HeadContext

RANGE_BASE = 4.0  # level 0 regresses farther-boundary distances below 4 steps, each level above twice as far
PRIOR = 0.01  # actionness probability everywhere at initialisation


@dataclass
class ProposalOutputs:
    """Per window, every level's steps concatenated (level 0 first): N = sum over levels of ceil(W' / s_l), W' the
    window length padded to a multiple of the coarsest stride."""

    logits: torch.Tensor  # (B, N) actionness logits
    distances: torch.Tensor  # (B, N, 2) distances to the start and the end, feature steps, >= 0
    mask: torch.Tensor  # (B, N) bool: the step lies on a valid (not padded) frame
    points: torch.Tensor  # (N,) position of each step, feature steps from the window's first frame
    strides: torch.Tensor  # (N,) stride of each step's level
    ranges: torch.Tensor  # (N, 2) [low, high) farther-boundary distance each step's level regresses
    frames: torch.Tensor  # (B,) valid frames of each window (padding comes last)


def regression_ranges(levels: int) -> list[tuple[float, float]]:
    """[low, high) of the farther-boundary distance each level is responsible for, in feature steps."""
    bounds = [0.0] + [RANGE_BASE * 2 ** level for level in range(levels - 1)] + [math.inf]
    return list(zip(bounds[:-1], bounds[1:]))


class _ConvBlock(nn.Module):
    """conv (kernel 3, `stride`) -> LayerNorm over channels -> ReLU -> times the (already strided) mask."""

    def __init__(self, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, stride=stride, padding=1)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x).transpose(1, 2)).transpose(1, 2)
        return F.relu(y) * mask[:, None]


class _Branch(nn.Module):
    """`depth` conv blocks, then a kernel-3 conv to `out` channels: (B, D, T) -> (B, out, T)."""

    def __init__(self, width: int, depth: int, out: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_ConvBlock(width) for _ in range(depth))
        self.out = nn.Conv1d(width, out, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.out(x)


class ProposalHead(Head):
    """`width` channels D (default 128), `levels` pyramid levels L (default 6: strides 1 to 32), `depth` residual
    conv blocks before the pyramid (default 2), `head_depth` conv blocks in the actionness and distance branches
    (default 2).

    Reads batch["pooled"] (B, W, E) and batch["mask"] (B, W) bool (False: padding, which must come last; absent:
    all valid); returns `ProposalOutputs` instead of class logits (pipeline/localize trains and decodes them)."""

    option_limits = {"width": (1, None), "levels": (1, 12), "depth": (0, None), "head_depth": (0, None)}

    def __init__(self, ctx: HeadContext, width: int = 128, levels: int = 6, depth: int = 2,
                 head_depth: int = 2) -> None:
        super().__init__()
        self.request = FeatureRequest(pooled=True)
        self.levels = levels
        self.register_buffer("mean", torch.zeros(ctx.embed_dim))
        self.register_buffer("scale", torch.ones(()))
        self.project = nn.Linear(ctx.embed_dim, width)
        self.encoder = nn.ModuleList(_ConvBlock(width) for _ in range(depth))
        self.downsample = nn.ModuleList(_ConvBlock(width, stride=2) for _ in range(levels - 1))
        self.actionness = _Branch(width, head_depth, 1)
        self.distance = _Branch(width, head_depth, 2)
        self.level_scale = nn.Parameter(torch.ones(levels))
        nn.init.constant_(self.actionness.out.bias, -math.log((1 - PRIOR) / PRIOR))

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W, E) L2-normalised frames and the (B, W) bool mask."""
        frames = batch["pooled"]
        mask = batch.get("mask")
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        return F.normalize(frames.float(), dim=-1), mask.bool()

    @torch.no_grad()
    def prepare(self, batches: Iterable[Batch]) -> None:
        """mu: the mean of the training set's valid frames; s: the root-mean-square deviation of a channel. Summed
        batch by batch (in float64), so a long training set is never held at once."""
        count, total, squares = 0, torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        for x, mask in map(self._inputs, batches):
            frames = x[mask].double()
            count += len(frames)
            total, squares = total + frames.sum(dim=0), squares + frames.pow(2).sum(dim=0)
        if count:
            mean = total / count
            self.mean.copy_(mean)
            self.scale.copy_((squares / count - mean.pow(2)).mean().clamp_min(1e-12).sqrt())

    def forward(self, batch: Batch) -> ProposalOutputs:
        x, mask = self._inputs(batch)
        coarsest = 2 ** (self.levels - 1)
        pad = -x.shape[1] % coarsest
        x, mask = F.pad(x, (0, 0, 0, pad)), F.pad(mask, (0, pad))
        weight = mask.to(x.dtype)
        h = (self.project((x - self.mean.to(x.dtype)) / self.scale.to(x.dtype)) * weight[..., None]).transpose(1, 2)
        for block in self.encoder:
            h = h + block(h, weight)
        logits, distances, masks, points, strides, ranges = [], [], [], [], [], []
        for level, (low, high) in enumerate(regression_ranges(self.levels)):
            stride = 2 ** level
            if level:
                weight = weight[:, ::2]
                h = self.downsample[level - 1](h, weight)
            logits.append(self.actionness(h, weight)[:, 0].float())
            raw = self.distance(h, weight).transpose(1, 2).float()  # (B, T_l, 2)
            distances.append(F.relu(self.level_scale[level] * raw) * stride)
            masks.append(weight.bool())
            steps = h.shape[-1]
            points.append(torch.arange(steps, device=h.device, dtype=torch.float32) * stride)
            strides.append(torch.full((steps,), float(stride), device=h.device))
            ranges.append(torch.tensor([low, high], device=h.device).expand(steps, 2))
        return ProposalOutputs(logits=torch.cat(logits, 1), distances=torch.cat(distances, 1),
                               mask=torch.cat(masks, 1), points=torch.cat(points), strides=torch.cat(strides),
                               ranges=torch.cat(ranges), frames=mask.sum(dim=1))
