"""One video to model-ready uint8 views: sample frame indices, decode each frame once, crop.

This is the work a decode worker does per video; it imports no torch so workers start fast.
"""
from __future__ import annotations

from collections.abc import Iterator
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

    def prepare(self, path: Path, index: int) -> Iterator["PreparedVideo"]:
        """A clip store's video arrives whole: its views are a few frames (see decode_pool.Recipe)."""
        yield prepare_video(path, index, self)


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

    views = _Views(recipe, [recipe.seed, video_index, 1])
    notes = decode_frames(path, choose, views)
    num_frames = views.info.num_frames
    if needs_repetition(num_frames, recipe.plan):
        notes.append(f"only {num_frames} frames for {recipe.plan.frames} per clip: frames repeated")
    return PreparedVideo(views.out, choose(num_frames).astype(np.int32), views.info, notes)


class _Views:
    """Crops each decoded frame into every (view, time) slot that uses it as the frame arrives (a FrameSink),
    so no more than the decoder's batch of full-size frames is ever held. Each frame is resized once for
    all its eval crops; an augmented view's crop is drawn once per view, so its frames move coherently."""

    def __init__(self, recipe: PrepareRecipe, seed: list[int]) -> None:
        self.recipe, self.seed = recipe, seed  # the augmented crops' draws: the same on every (re)start

    def start(self, info: VideoInfo, index: np.ndarray) -> None:
        recipe = self.recipe
        size, self.eval_count = recipe.views.image_size, recipe.plan.clips * recipe.views.crops
        self.info, self.out = info, np.empty((*index.shape, size, size, 3), dtype=np.uint8)
        rng = np.random.default_rng(self.seed)
        self.params = [draw_augment(info.width, info.height, rng) for _ in range(index.shape[0] - self.eval_count)]
        self.slots: dict[int, list[tuple[int, int]]] = {}
        for (v, t), k in np.ndenumerate(index):
            self.slots.setdefault(int(k), []).append((v, t))

    def frame(self, k: int, rgb: np.ndarray) -> None:
        image = Image.fromarray(rgb)
        slots = self.slots[k]
        crops = eval_views(image, self.recipe.views) if any(v < self.eval_count for v, _ in slots) else []
        for v, t in slots:
            if v < self.eval_count:
                self.out[v, t] = crops[v % self.recipe.views.crops]
            else:
                self.out[v, t] = augmented_view(image, self.params[v - self.eval_count], self.recipe.views)
