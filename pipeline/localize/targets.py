"""Ground truth for the proposal head (heads/proposals.py) and its loss.

Assignment, per window: a valid step at position p of a level with stride s and range [low, high) is positive for
a segment [start, end] (feature steps) when

    max(start, c - r*s) <= p <= min(end, c + r*s)     c = (start + end) / 2: centre sampling, radius r = 1.5 strides
    low <= max(p - start, end - p) < high              the level is the one responsible for that size

and its targets are the distances (p - start, end - p). A step that several segments claim takes the shortest (the
harder to find). These are ActionFormer's rules, except that the centre region is closed, so a step on a boundary
counts. Segments are clipped to the window's valid frames first; one shorter than a step may claim no step at all.

Loss, normalised by the number of positive steps P (at least 1) of the batch:

    loss = (sum over valid steps of focal(a, y) + w * sum over positives of DIoU(d, d*)) / P
    focal(a, y) = -alpha_y * (1 - q)^gamma * log q,  q = sigmoid(a) if y else 1 - sigmoid(a); alpha_1 = alpha,
                  alpha_0 = 1 - alpha  (alpha 0.25, gamma 2: RetinaNet's, as ActionFormer)
    DIoU(d, d*) = 1 - IoU + (rho / C)^2   in 1-D, both segments around the same step p: the intersection is
                  min(d_s, d*_s) + min(d_e, d*_e), the hull C = max(d_s, d*_s) + max(d_e, d*_e), rho the distance
                  between the centres, |(d_e - d_s) - (d*_e - d*_s)| / 2.

DIoU rather than plain IoU: it still has a gradient when the prediction and the truth do not overlap. The per-batch
P (ActionFormer smooths it with a moving average) keeps the loss a function of the batch alone, so a resumed run
computes what an uninterrupted one does.

Under torchrun each rank holds a slice of the global batch (pipeline/train/distributed.py). P is then the positives
of the whole batch (summed over the ranks), not of the rank's slice, and a rank's loss is multiplied by N / n (n
windows of its slice, N of the batch): the loop weights each rank's loss by n / N before DDP averages the gradients,
which is right for a mean over samples but not for this sum over steps. So the step is the one-process step however
unevenly the positives fall (tested with two ranks in tests/test_proposals_ddp.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn import functional as F

from clipcache.heads.proposals import ProposalOutputs

CENTRE_RADIUS = 1.5  # strides either side of a segment's centre that may be positive
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
REGRESSION_WEIGHT = 1.0


@dataclass
class ProposalTargets:
    positive: torch.Tensor  # (B, N) bool
    distances: torch.Tensor  # (B, N, 2) distances to the assigned segment's start and end (0 where not positive)


def pad_segments(segments: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows' (K_i, 2) segments -> (B, K, 2) padded and the (B, K) bool of the real ones."""
    count = max((len(s) for s in segments), default=0)
    padded = torch.zeros(len(segments), max(count, 1), 2, device=device)
    real = torch.zeros(len(segments), max(count, 1), dtype=torch.bool, device=device)
    for row, window in enumerate(segments):
        padded[row, : len(window)] = torch.as_tensor(window, dtype=torch.float32, device=device).reshape(-1, 2)
        real[row, : len(window)] = True
    return padded, real


@torch.no_grad()
def assign(outputs: ProposalOutputs, segments: Sequence[torch.Tensor], radius: float = CENTRE_RADIUS
           ) -> ProposalTargets:
    """The targets of each step; `segments[b]` holds window b's (start, end) in feature steps from its first frame."""
    boxes, real = pad_segments(segments, outputs.logits.device)  # (B, K, 2), (B, K)
    length = outputs.frames.to(boxes.dtype)[:, None, None]
    boxes = torch.minimum(boxes.clamp_min(0), length)
    real = real & (boxes[..., 1] > boxes[..., 0])
    start, end = boxes[:, None, :, 0], boxes[:, None, :, 1]  # (B, 1, K)
    points, reach = outputs.points[None, :, None], (radius * outputs.strides)[None, :, None]  # (1, N, 1)
    centre = (start + end) / 2
    near_centre = (points >= torch.maximum(start, centre - reach)) & (points <= torch.minimum(end, centre + reach))
    farther = torch.maximum(points - start, end - points)  # (B, N, K)
    low, high = outputs.ranges[None, :, None, 0], outputs.ranges[None, :, None, 1]
    claims = near_centre & (farther >= low) & (farther < high) & real[:, None, :] & outputs.mask[..., None]
    size = torch.where(claims, (end - start).expand_as(claims), torch.full_like(farther, torch.inf))
    shortest, chosen = size.min(dim=2)  # (B, N)
    positive = torch.isfinite(shortest)
    picked = boxes.gather(1, chosen[..., None].expand(-1, -1, 2))  # (B, N, 2)
    distances = torch.stack([outputs.points - picked[..., 0], picked[..., 1] - outputs.points], dim=-1)
    return ProposalTargets(positive=positive, distances=distances * positive[..., None])


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA,
               gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Elementwise sigmoid focal loss (formula in the module docstring); `targets` 0 or 1."""
    probability = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    miss = probability * (1 - targets) + (1 - probability) * targets  # 1 - q
    return (alpha * targets + (1 - alpha) * (1 - targets)) * miss.pow(gamma) * cross_entropy


def diou_loss(predicted: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1-D DIoU loss of (..., 2) distances to the start and the end measured from the same step."""
    inter = torch.minimum(predicted, target).sum(-1)
    union = predicted.sum(-1) + target.sum(-1) - inter
    hull = torch.maximum(predicted, target).sum(-1)
    rho = ((predicted[..., 1] - predicted[..., 0]) - (target[..., 1] - target[..., 0])) / 2
    return 1 - inter / union.clamp_min(eps) + (rho / hull.clamp_min(eps)).pow(2)


def batch_totals(positives: torch.Tensor, windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """P and N of the global batch: this slice's counts summed over the ranks when a process group is
    initialised, else the counts themselves."""
    totals = torch.stack([positives.to(torch.float64), torch.tensor(windows, dtype=torch.float64,
                                                                    device=positives.device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    return totals[0], totals[1]


def proposal_loss(outputs: ProposalOutputs, targets: ProposalTargets,
                  regression_weight: float = REGRESSION_WEIGHT) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss to minimise and its detached parts: "actionness" and "regression" (each already divided by P) and
    "positives" (P). Under a process group P counts the whole batch and the loss is scaled by N / n (module
    docstring); in one process N = n."""
    windows = len(outputs.logits)
    positives, total_windows = batch_totals(targets.positive.sum(), windows)
    dtype = outputs.logits.dtype
    norm = positives.clamp_min(1).to(dtype)
    valid = outputs.mask
    actionness = focal_loss(outputs.logits[valid], targets.positive[valid].to(dtype)).sum() / norm
    chosen = targets.positive
    regression = diou_loss(outputs.distances[chosen], targets.distances[chosen]).sum() / norm
    loss = (actionness + regression_weight * regression) * (total_windows / windows).to(dtype)
    return loss, {"actionness": actionness.detach(), "regression": regression.detach(), "positives": positives}
