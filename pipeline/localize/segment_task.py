"""Classification heads on a dense store (`train-head STORE --head text|prompt|linear` on untrimmed videos): the
ground-truth segments of the training videos are the samples, as trimmed clips of T frames (`SegmentClips`),
and validation is the top-1 over the validation videos' segments. Splits are by video, as localisation's, so
no segment of a validation or test video ever trains the head."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.heads import head_class
from clipcache.heads.base import Head
from clipcache.pipeline.localize.class_splits import class_split
from clipcache.pipeline.localize.ground_truth import segment_table, video_truth
from clipcache.pipeline.localize.open_set import restricted
from clipcache.pipeline.localize.segment_clips import SegmentClips
from clipcache.pipeline.localize.task import localisation_splits
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.task import ClassificationTask

SEGMENT_FRAMES = 8  # frames per segment clip unless --frames says otherwise (Efficient-Prompt's recognition T)


class SegmentTask(ClassificationTask):
    def __init__(self, cfg: TrainConfig, reader: CacheReader) -> None:
        table = segment_table(reader)
        if cfg.class_split:  # open-set: the seen classes' segments are the samples, the head scores those classes
            if not head_class(cfg.head).scores_class_names():
                raise InputError(f"--head {cfg.head}: --class-split needs a head that scores class names (text, "
                                 "prompt), to name the unseen classes")
            seen = class_split(cfg.class_split, cfg.class_split_index, tuple(reader.classes)).seen
            cfg = replace(cfg, classes=seen)  # the loop takes the task's config: the head scores these classes
            table = restricted(table, seen, relabel=True)
        super().__init__(cfg, reader)
        self.table = table

    def frames(self) -> int:
        return self.cfg.frames or SEGMENT_FRAMES

    def splits(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        return localisation_splits(self.reader, self.table, cfg.train_split, cfg.val_split, cfg.test_split, cfg.seed)

    def datasets(self, head: Head, splits: dict[str, np.ndarray], frames: int, cfg: TrainConfig,
                 device: torch.device) -> tuple[SegmentClips, SegmentClips]:
        if head.request.layers:
            raise InputError(f"--head {cfg.head} reads tokens; on a dense store the heads read the pooled frame "
                             "embeddings of each segment: text, prompt or linear")
        truth = video_truth(self.table, np.concatenate([splits["train"], splits["val"]]))
        train = {v: truth[v] for v in splits["train"].tolist()}
        val = {v: truth[v] for v in splits["val"].tolist()}
        return (SegmentClips(self.reader, train, frames, train=True, seed=cfg.seed),
                SegmentClips(self.reader, val, frames, train=False))
