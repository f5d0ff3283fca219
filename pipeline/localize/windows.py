"""A dense store's videos as fixed-length windows of frame embeddings, the items localisation trains and evaluates on
(the loop reads them as it reads a `CacheDataset`: `start(items)`, `set_epoch`, `len`).

Training: each video gives ceil(T / W) windows per pass (`decode.window_starts`: every W frames, the last ending at
the video's end), each shifted by a draw from (seed, pass) of up to half a window either way (kept inside the
video), so every frame is seen, windows differ between passes and a resumed run repeats them. Evaluation: windows
every W/2 frames, so an action of up to half a window lies whole in one; overlapping windows' proposals are merged
per video (`pipeline.localize.decode`). A segment a window cuts is kept, clipped to the window, when at least half
of it is inside (ActionFormer's truncation rule). Frames past a video's end are padding: zeros, with `mask` False.
A video's pooled embeddings are read once, checked, and kept (float16): a THUMOS14-sized store at 10 fps holds ~0.9
GB of ViT-B/16 embeddings.
"""
from __future__ import annotations

import numpy as np
import torch

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.localize.decode import window_starts
from clipcache.pipeline.localize.ground_truth import VideoTruth, positions
from clipcache.pipeline.train.dataset import Batch, HeldInMemory, PendingBatch

CUT_KEEP = 0.5  # a segment a window cuts stays a target, clipped to the window, when this much of it is inside


class FeatureWindows(HeldInMemory):
    """Windows of `window` frames over `videos`; a batch holds `pooled` (B, W, E) float32, `mask` (B, W),
    `segments` (B, S, 2) start and end in the window's frame positions with `segment_label` (B, S) (-1:
    padding; S the most any window of the batch holds), and `video`, `offset` (B,) to place it back."""

    def __init__(self, reader: CacheReader, videos: np.ndarray, truth: dict[int, VideoTruth], window: int,
                 train: bool, seed: int = 0) -> None:
        self.videos, self.window, self.train, self.seed = np.asarray(videos, np.int64), window, train, seed
        self.features = [torch.from_numpy(reader.dense(int(v))) for v in self.videos]
        self.times = [reader.dense(int(v), "time") for v in self.videos]
        fps = reader.settings.fps
        self.truth = [(positions(truth[v].start, t, fps), positions(truth[v].end, t, fps), truth[v].label)
                      for v, t in zip(self.videos.tolist(), self.times)]
        step = window if train else max(1, window // 2)
        self.items = np.array([(i, start) for i, f in enumerate(self.features)
                               for start in window_starts(len(f), window, step)], dtype=np.int64).reshape(-1, 2)
        self.shift = np.zeros(len(self.items), np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def feature_bytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self.features)

    def set_epoch(self, epoch: int) -> None:
        if self.train:
            rng = np.random.default_rng([self.seed, epoch])
            self.shift = rng.integers(-(self.window // 2), self.window // 2 + 1, size=len(self.items))

    def offsets(self, items: np.ndarray) -> np.ndarray:
        """Each item's first frame: its place plus this pass's shift, kept inside its video."""
        rows, starts = self.items[items, 0], self.items[items, 1] + self.shift[items]
        lengths = np.array([len(self.features[r]) for r in rows])
        return np.clip(starts, 0, np.maximum(lengths - self.window, 0))

    def start(self, items: np.ndarray) -> PendingBatch:
        rows, offsets = self.items[items, 0], self.offsets(items)
        width = self.features[0].shape[1]
        pooled = torch.zeros((len(items), self.window, width), dtype=torch.float32)
        mask = torch.zeros((len(items), self.window), dtype=torch.bool)
        inside = []
        for b, (row, offset) in enumerate(zip(rows.tolist(), offsets.tolist())):
            part = self.features[row][offset:offset + self.window]
            pooled[b, :len(part)] = part.float()
            mask[b, :len(part)] = True
            start, end, label = self.truth[row]
            clipped_start, clipped_end = np.clip(start - offset, 0, self.window), np.clip(end - offset, 0, self.window)
            keep = (clipped_end - clipped_start) >= CUT_KEEP * (end - start)
            inside.append((clipped_start[keep], clipped_end[keep], label[keep]))
        most = max([len(s) for s, _, _ in inside] + [1])
        segments = torch.zeros((len(items), most, 2), dtype=torch.float32)
        labels = torch.full((len(items), most), -1, dtype=torch.int64)
        for b, (start, end, label) in enumerate(inside):
            segments[b, :len(start), 0], segments[b, :len(start), 1] = torch.from_numpy(start), torch.from_numpy(end)
            labels[b, :len(start)] = torch.from_numpy(label)
        batch: Batch = {"pooled": pooled, "mask": mask, "segments": segments, "segment_label": labels,
                        "video": torch.from_numpy(self.videos[rows]), "offset": torch.from_numpy(offsets)}
        return PendingBatch(batch, [])

    def __getitem__(self, items: np.ndarray) -> Batch:
        return self.start(np.asarray(items, dtype=np.int64)).result()
