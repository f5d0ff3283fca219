"""Which frames each temporal view uses: TSN-style uniform segments or dense strided windows."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipcache import InputError

SAMPLING_MODES = ("uniform", "dense")


@dataclass(frozen=True)
class SamplingPlan:
    """T frames per clip, C clips per video; `stride` only matters for dense sampling."""

    frames: int
    mode: str = "uniform"
    stride: int = 1
    clips: int = 1

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise InputError(f"--sampling {self.mode!r}: choose uniform or dense")
        for name in ("frames", "stride", "clips"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be at least 1, got {getattr(self, name)}")

    @property
    def span(self) -> int:
        """Frames one clip covers: T for uniform segments, (T - 1) * stride + 1 for a dense window."""
        return self.frames if self.mode == "uniform" else (self.frames - 1) * self.stride + 1


def needs_repetition(num_frames: int, plan: SamplingPlan) -> bool:
    """True when the video is too short for distinct frames, so indices repeat."""
    return num_frames < plan.span


def _check(num_frames: int) -> None:
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")


def _uniform(num_frames: int, frames: int, offsets: np.ndarray) -> np.ndarray:
    """Frame at position `offsets` (0..1) inside each of `frames` equal segments."""
    segment = num_frames / frames
    return np.floor((np.arange(frames) + offsets) * segment).astype(np.int64)


def _dense(num_frames: int, plan: SamplingPlan, start: float) -> np.ndarray:
    """A window of T frames `stride` apart starting at `start`; shrinks its stride if the video is short."""
    stride = plan.stride if num_frames >= plan.span else num_frames / plan.frames
    return np.floor(start + np.arange(plan.frames) * stride).astype(np.int64)


def sample_clips(num_frames: int, plan: SamplingPlan) -> np.ndarray:
    """(C, T) sorted frame indices in [0, num_frames), deterministic.

    Uniform: clip c takes the point (c + 0.5) / C inside every segment (C = 1: segment centres).
    Dense: C windows whose starts spread evenly over the video, each centred in its share.
    """
    _check(num_frames)
    if plan.mode == "uniform":
        clips = [_uniform(num_frames, plan.frames, np.full(plan.frames, (c + 0.5) / plan.clips))
                 for c in range(plan.clips)]
    else:
        room = max(num_frames - plan.span, 0)
        clips = [_dense(num_frames, plan, room * (c + 0.5) / plan.clips) for c in range(plan.clips)]
    return np.clip(np.stack(clips), 0, num_frames - 1)


def jitter_clip(num_frames: int, plan: SamplingPlan, rng: np.random.Generator) -> np.ndarray:
    """(T,) indices for an augmented training view: a random frame in each segment, or a random start."""
    _check(num_frames)
    if plan.mode == "uniform":
        clip = _uniform(num_frames, plan.frames, rng.random(plan.frames))
    else:
        clip = _dense(num_frames, plan, rng.uniform(0, max(num_frames - plan.span, 0)))
    return np.clip(clip, 0, num_frames - 1)
