"""From the proposal head's outputs to a video's proposals, (start, end, score) rows.

1. Per window (`window_proposals`): every valid step gives (p - d_start, p + d_end) clipped to the window's valid
   frames, scored sigmoid(actionness); steps scoring below `min_score` and segments of no length are dropped, the
   `pre_nms_top_k` best are kept and suppressed (below) down to `per_window`.
2. Per video (`video_proposals`), over the windows `window_starts` cuts: each window's rows shifted by its first
   frame's position in the video, all windows' rows suppressed once more (overlapping windows propose the same
   action twice), the best `max_proposals` kept and converted to seconds: t / rate, rate being the store's frames
   per second.

Suppression, greedy, highest score first:
- Gaussian soft-NMS (Bodla et al. 2017, the default): pick the highest-scoring row, decay every remaining row j by
  s_j <- s_j * exp(-IoU(picked, j)^2 / sigma); repeat until `keep` rows are picked or none scores `min_score`.
  A picked row's score never exceeds the one picked before it (scores only decay), so stopping after `keep`
  picks gives exactly the `keep` best of the full procedure, at O(keep * K) for K rows.
- Hard NMS: pick the highest, drop every remaining row whose IoU with it exceeds `iou_threshold`.
IoU is the temporal one: |a ∩ b| / |a ∪ b| of two intervals.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from clipcache.heads.proposals import ProposalOutputs
from clipcache.pipeline.evaluate.detection import segment_iou


class Suppression(StrEnum):
    soft = "soft"  # Gaussian soft-NMS
    hard = "hard"  # classic NMS


@dataclass(frozen=True)
class DecodeOptions:
    pre_nms_top_k: int = 1000  # best steps per window before suppression
    min_score: float = 0.001  # rows scoring less (also after a soft-NMS decay) are dropped
    suppression: Suppression = Suppression.soft
    sigma: float = 0.5  # soft-NMS: s_j *= exp(-IoU^2 / sigma)
    iou_threshold: float = 0.5  # hard NMS: drop rows overlapping a picked one more than this
    per_window: int = 100  # rows kept per window
    max_proposals: int = 100  # rows kept per video (AR@100 needs 100)


def window_starts(frames: int, window: int, stride: int) -> list[int]:
    """First frames of the windows that cover a video of `frames` steps: every `stride` steps, and the last one
    ending at the video's end, so no window is mostly padding and every frame is seen; one window (padded) when the
    video is not longer than `window`. A stride of half the window lets each action lie whole in some window when
    it is at most half a window long."""
    if frames <= window:
        return [0]
    return [*range(0, frames - window, stride), frames - window]


def suppress(rows: np.ndarray, keep: int, options: DecodeOptions) -> np.ndarray:
    """The (K', 3) rows (start, end, score) that survive `options`' suppression, best first, K' <= keep."""
    segments, scores = rows[:, :2].astype(np.float64), rows[:, 2].astype(np.float64).copy()
    picked: list[tuple[float, float, float]] = []
    while len(picked) < keep and scores.size:
        best = int(np.argmax(scores))
        if scores[best] < options.min_score:
            break
        picked.append((segments[best, 0], segments[best, 1], scores[best]))
        overlap = segment_iou(segments[best : best + 1], segments)[0]
        if options.suppression == Suppression.soft:
            scores *= np.exp(-overlap ** 2 / options.sigma)
        else:
            scores[overlap > options.iou_threshold] = -np.inf
        scores[best] = -np.inf
    return np.asarray(picked, dtype=np.float64).reshape(-1, 3)


@torch.no_grad()
def window_proposals(outputs: ProposalOutputs, options: DecodeOptions = DecodeOptions()) -> list[np.ndarray]:
    """Per window of the batch, its (K, 3) proposals (start, end, score) in feature steps from its first frame."""
    scores = torch.sigmoid(outputs.logits.float()).masked_fill(~outputs.mask, -1.0)
    starts = outputs.points - outputs.distances[..., 0].float()
    ends = outputs.points + outputs.distances[..., 1].float()
    frames = outputs.frames.float()[:, None]
    starts, ends = torch.minimum(starts.clamp_min(0), frames), torch.minimum(ends.clamp_min(0), frames)
    scores = scores.masked_fill(ends <= starts, -1.0)
    top = torch.topk(scores, min(options.pre_nms_top_k, scores.shape[1]), dim=1)
    rows = torch.stack([starts.gather(1, top.indices), ends.gather(1, top.indices), top.values], dim=-1).cpu().numpy()
    return [suppress(window[window[:, 2] >= options.min_score], options.per_window, options) for window in rows]


def video_proposals(windows: Iterable[tuple[float, np.ndarray]], rate: float,
                    options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """One video's (K, 3) proposals in seconds, best first, from its windows' (offset, rows): offset the position
    (feature steps) of the window's first frame in the video, rows as `window_proposals` gives them."""
    shifted = [rows + np.array([offset, offset, 0.0]) for offset, rows in windows]
    rows = np.concatenate(shifted) if shifted else np.zeros((0, 3))
    merged = suppress(rows, options.max_proposals, options)
    return merged / np.array([rate, rate, 1.0])
