"""Training the proposal head (`train-head --head proposals`) as one more `Task` of the one loop: windows of a
dense store's frame embeddings in, class-agnostic proposals out.

Loss: the head's focal actionness and DIoU distance loss (`pipeline.localize.targets`) against the segments
each window holds. Validation, every epoch: the validation videos' proposals (windows every half window,
merged per video with soft-NMS) scored as ActivityNet's proposal evaluation scores them; the best epoch is
the one with the highest average recall at 10 proposals per video over tIoU 0.5:0.05:0.95, ties going to
the higher area under the AR-AN curve.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.cache.segments import SegmentTable
from clipcache.heads.base import Batch, Head
from clipcache.pipeline.common import autocast
from clipcache.pipeline.evaluate.detection import AR_AT, Segments, proposal_recall
from clipcache.pipeline.localize.class_splits import class_split
from clipcache.pipeline.localize.decode import video_proposals, window_proposals
from clipcache.pipeline.localize.ground_truth import VideoTruth, seconds, segment_table, video_truth
from clipcache.pipeline.localize.open_set import restricted
from clipcache.pipeline.localize.targets import assign, proposal_loss
from clipcache.pipeline.localize.windows import FeatureWindows
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loader import batch_loader
from clipcache.pipeline.train.splits import split_videos, stratified_holdout
from clipcache.pipeline.train.task import Task

WINDOW = 256  # frames per window (25.6 s at 10 fps; the pyramid's coarsest level sees 32 of them per step)


class LocalisationTask(Task):
    name = "localisation"
    selected_by: ClassVar[dict[str, str]] = {"field": "val_ar@10", "label": "val AR@10"}

    def __init__(self, cfg: TrainConfig, reader: CacheReader) -> None:
        self.cfg, self.reader = cfg, reader
        self.table = segment_table(reader)
        if cfg.class_split:  # open-set: only the seen classes' segments are targets (pipeline.localize.open_set)
            seen = class_split(cfg.class_split, cfg.class_split_index, tuple(reader.classes)).seen
            self.table = restricted(self.table, seen, relabel=False)

    def splits(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        return localisation_splits(self.reader, self.table, cfg.train_split, cfg.val_split, cfg.test_split, cfg.seed)

    def datasets(self, head: Head, splits: dict[str, np.ndarray], frames: int, cfg: TrainConfig,
                 device: torch.device) -> tuple[FeatureWindows, FeatureWindows]:
        truth = video_truth(self.table, np.concatenate([splits["train"], splits["val"]]))
        return (FeatureWindows(self.reader, splits["train"], truth, WINDOW, train=True, seed=self.cfg.seed),
                FeatureWindows(self.reader, splits["val"], truth, WINDOW, train=False))

    def loss(self, head: Head, batch: Batch) -> torch.Tensor:
        outputs = head(batch)
        real = batch["segment_label"] >= 0
        segments = [batch["segments"][b][real[b]] for b in range(len(real))]
        loss, _ = proposal_loss(outputs, assign(outputs, segments))
        return loss

    def validate(self, head: Head, val_set: FeatureWindows, device: torch.device, batch_size: int, workers: int,
                 quiet: bool) -> dict[str, Any]:
        proposals = video_level_proposals(head, val_set, self.reader, device, batch_size)
        if not len(proposals):  # nothing scored above the decoder's floor: nothing recalled
            return {**{f"val_ar@{n}": 0.0 for n in AR_AT}, "val_auc": 0.0}
        truth = video_truth(self.table, val_set.videos)
        recall = proposal_recall(truth_segments(truth), proposals)
        return {f"val_{name}": value for name, value in recall.metrics().items()}

    def score(self, row: dict[str, Any]) -> tuple[float, ...]:
        return row["val_ar@10"], row["val_auc"]

    def describe(self, row: dict[str, Any]) -> str:
        return f"val AR@10 {row['val_ar@10']:.4f}  AR@100 {row['val_ar@100']:.4f}"


def localisation_splits(reader: CacheReader, table: SegmentTable, train_split: str, val_split: str, test_split: str,
                        seed: int) -> dict[str, np.ndarray]:
    """The training split's done videos that have segments; the validation split's, else a seeded 10% of them
    held out (untrimmed videos carry no video label to stratify by); the test split's."""
    with_truth = np.unique(table.video[~table.ambiguous])
    train = np.intersect1d(split_videos(reader, train_split), with_truth)
    if len(train) == 0:
        raise InputError(f"{reader.path}: no done video of training split {train_split!r} has a segment; name "
                         "the split that has them with --train-split (THUMOS14: val)")
    val = np.intersect1d(split_videos(reader, val_split), with_truth)
    if len(val) == 0:
        keep, held = stratified_holdout(np.zeros(len(train), np.int64), 0.1, seed)
        train, val = train[keep], train[held]
    if len(val) == 0 or len(train) == 0:
        raise InputError(f"{reader.path}: too few videos with segments to hold some out for validation; name a "
                         "validation split with --val-split")
    return {"train": train, "val": val, "test": split_videos(reader, test_split)}


@torch.no_grad()
def video_level_proposals(head: Head, windows: FeatureWindows, reader: CacheReader, device: torch.device,
                          batch_size: int) -> Segments:
    """Every video's proposals in seconds (best first), from its evaluation windows merged."""
    head.eval()
    found: dict[int, list[tuple[float, np.ndarray]]] = {int(v): [] for v in windows.videos}
    for batch in batch_loader(windows, batch_size):
        with autocast(device):
            outputs = head({key: value.to(device) for key, value in batch.items()})
        for video, offset, rows in zip(batch["video"].tolist(), batch["offset"].tolist(), window_proposals(outputs)):
            found[video].append((float(offset), rows))
    columns: dict[str, list[float]] = {"video": [], "start": [], "end": [], "score": []}
    for row, video in enumerate(windows.videos.tolist()):
        merged = video_proposals(found[video], rate=1.0)  # frame positions, converted below
        times = windows.times[row]
        columns["video"] += [video] * len(merged)
        columns["start"] += seconds(merged[:, 0], times, reader.settings.fps).tolist()
        columns["end"] += seconds(merged[:, 1], times, reader.settings.fps).tolist()
        columns["score"] += merged[:, 2].tolist()
    return Segments.of(columns["video"], columns["start"], columns["end"], score=columns["score"])


def truth_segments(truth: dict[int, VideoTruth], ambiguous: bool = False) -> Segments:
    """The labelled segments of `truth`'s videos as one table, or (`ambiguous`) their ambiguous regions."""
    spans = [(t.ambiguous_start, t.ambiguous_end) if ambiguous else (t.start, t.end) for t in truth.values()]
    videos = np.asarray([v for v, (start, _) in zip(truth, spans) for _ in start], np.int64)
    labels = None if ambiguous else np.concatenate([t.label for t in truth.values()] + [np.zeros(0, np.int64)])
    return Segments.of(videos, np.concatenate([s for s, _ in spans] + [np.zeros(0)]),
                       np.concatenate([e for _, e in spans] + [np.zeros(0)]), label=labels)
