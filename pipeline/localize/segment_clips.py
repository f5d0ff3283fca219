"""A dense store's labelled segments as clips of T frames, so the classification heads that read pooled frame
embeddings (`text`, `prompt`, `linear`) train on them as on trimmed videos: Efficient-Prompt's second stage
learns its prompts and temporal transformer on the ground-truth segments of the training videos, and
classifies proposals the same way (each proposal a segment, its label unknown).

Each clip takes T frames spread over its segment: training draws a point in each of T equal parts from
(seed, pass), as TSN does; evaluation takes the parts' centres. A frame is the stored frame at that
position (a segment shorter than T frames repeats frames).
"""
from __future__ import annotations

import numpy as np
import torch

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.detection import Segments
from clipcache.pipeline.localize.ground_truth import VideoTruth, positions
from clipcache.pipeline.train.dataset import Batch, HeldInMemory, PendingBatch


class SegmentClips(HeldInMemory):
    """Items are segments: a batch holds `pooled` (B, T, E) float32, `label` (B,), `video` (B,) the item's row
    (as `CacheDataset` rows index its videos), `view` (B,) zeros."""

    def __init__(self, reader: CacheReader, truth: dict[int, VideoTruth], frames: int, train: bool,
                 seed: int = 0) -> None:
        self.path, self.frames, self.train, self.seed = reader.path, frames, train, seed
        owners = sorted(v for v, t in truth.items() if len(t.start))
        self.features = {v: torch.from_numpy(reader.dense(v)) for v in owners}
        rows = []
        for video in owners:
            times = reader.dense(video, "time")
            start, end = positions(truth[video].start, times, reader.settings.fps), \
                positions(truth[video].end, times, reader.settings.fps)
            rows += [(video, s, e, label) for s, e, label in zip(start, end, truth[video].label)]
        self.owner = np.array([r[0] for r in rows], np.int64)
        self.bounds = np.array([(r[1], r[2]) for r in rows], np.float64).reshape(-1, 2)
        self.labels = np.array([r[3] for r in rows], np.int64)
        self.videos = np.arange(len(rows), dtype=np.int64)  # one row per segment
        self.offsets = np.full((len(rows), frames), 0.5)

    def __len__(self) -> int:
        return len(self.videos)

    def feature_bytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self.features.values())

    def set_epoch(self, epoch: int) -> None:
        if self.train:
            self.offsets = np.random.default_rng([self.seed, epoch]).random((len(self.videos), self.frames))

    def start(self, items: np.ndarray) -> PendingBatch:
        width = next(iter(self.features.values())).shape[1]
        pooled = torch.empty((len(items), self.frames, width), dtype=torch.float32)
        for b, item in enumerate(items.tolist()):
            features = self.features[int(self.owner[item])]
            start, end = self.bounds[item]
            points = start + (np.arange(self.frames) + self.offsets[item]) * (end - start) / self.frames
            pooled[b] = features[np.clip(points.astype(np.int64), 0, len(features) - 1)].float()
        batch: Batch = {"pooled": pooled, "label": torch.from_numpy(self.labels[items]),
                        "video": torch.from_numpy(np.asarray(items, np.int64)),
                        "view": torch.zeros(len(items), dtype=torch.int64)}
        return PendingBatch(batch, [])

    def __getitem__(self, items: np.ndarray) -> Batch:
        return self.start(np.asarray(items, dtype=np.int64)).result()


def span_clips(reader: CacheReader, spans: Segments, frames: int) -> tuple[SegmentClips, np.ndarray]:
    """Unlabelled spans (proposals, search's candidate moments) as evaluation clips of `frames` frames, and the
    row of `spans` each clip stands for (clips come grouped by video)."""
    truth = {}
    empty = np.zeros(0)
    for video in np.unique(spans.video).tolist():
        mine = spans.video == video
        truth[int(video)] = VideoTruth(spans.start[mine], spans.end[mine], np.full(int(mine.sum()), -1), empty, empty)
    order = np.concatenate([np.flatnonzero(spans.video == v) for v in sorted(truth)] + [np.zeros(0, np.int64)])
    return SegmentClips(reader, truth, frames, train=False), order
