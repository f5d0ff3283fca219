"""One video to model-ready uint8 views: sample frame indices, decode each frame once, crop.

This is the work a decode worker does per video; it imports no torch so workers start fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipcache.pipeline.extract.sampling import SamplingPlan, jitter_clip, needs_repetition, sample_clips
from clipcache.pipeline.extract.video import VideoInfo, decode_frames
from clipcache.pipeline.extract.views import ViewRecipe, augmented_view, draw_augment, eval_views


@dataclass(frozen=True)
class PrepareRecipe:
    """Everything a worker needs to prepare any video of a run (picklable, sent once per worker)."""

    plan: SamplingPlan
    views: ViewRecipe
    augment: int
    seed: int


@dataclass
class PreparedVideo:
    pixels: np.ndarray  # (V, T, S, S, 3) uint8
    frame_index: np.ndarray  # (V, T) int32, indices into the decoded video
    info: VideoInfo
    notes: list[str]


def _view_indices(num_frames: int, recipe: PrepareRecipe, rng: np.random.Generator) -> np.ndarray:
    """(V, T) frame indices: each clip repeated for its crops, then one jittered clip per augmented view."""
    clips = np.repeat(sample_clips(num_frames, recipe.plan), recipe.views.crops, axis=0)
    jittered = [jitter_clip(num_frames, recipe.plan, rng) for _ in range(recipe.augment)]
    return np.concatenate([clips, np.asarray(jittered, dtype=clips.dtype).reshape(-1, recipe.plan.frames)])


def prepare_video(path: Path, video_index: int, recipe: PrepareRecipe) -> PreparedVideo:
    """Decode and crop one video; raises VideoDecodeError with a one-line reason on bad input.

    Random draws come from generators seeded by (seed, video index), so a resumed or multi-rank
    run makes the same views as a single uninterrupted one, and asking twice gives the same indices.
    """
    def choose(num_frames: int) -> np.ndarray:
        return _view_indices(num_frames, recipe, np.random.default_rng([recipe.seed, video_index, 0]))

    decoded, remapped = decode_frames(path, choose)
    num_frames = decoded.info.num_frames
    notes = list(decoded.notes)
    if needs_repetition(num_frames, recipe.plan):
        notes.append(f"only {num_frames} frames for {recipe.plan.frames} per clip: frames repeated")
    spatial_rng = np.random.default_rng([recipe.seed, video_index, 1])
    pixels = _crop_all(decoded.frames, remapped, recipe, spatial_rng)
    return PreparedVideo(pixels, choose(num_frames).astype(np.int32), decoded.info, notes)


def _crop_all(frames: np.ndarray, remapped: np.ndarray, recipe: PrepareRecipe,
              rng: np.random.Generator) -> np.ndarray:
    """Crop every (view, time) slot; each decoded frame is resized once for all its eval crops."""
    crops = recipe.views.crops
    eval_count = recipe.plan.clips * crops
    size = recipe.views.image_size
    out = np.empty((remapped.shape[0], remapped.shape[1], size, size, 3), dtype=np.uint8)
    images = [Image.fromarray(frame) for frame in frames]
    eval_cache: dict[int, list[np.ndarray]] = {}
    for v in range(eval_count):
        for t, k in enumerate(remapped[v]):
            if k not in eval_cache:
                eval_cache[k] = eval_views(images[k], recipe.views)
            out[v, t] = eval_cache[k][v % crops]
    height, width = frames.shape[1:3]
    for v in range(eval_count, remapped.shape[0]):
        params = draw_augment(width, height, rng)
        for t, k in enumerate(remapped[v]):
            out[v, t] = augmented_view(images[k], params, recipe.views)
    return out
