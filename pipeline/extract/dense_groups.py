"""Dense stores: each piece of a video is encoded as it arrives and appended to the video's time series;
a shard group's table (status last) is written once every video of the group has ended.

Appends and table writes go through one write thread in the order they were submitted, at most one
waiting, so the encoder overlaps the disk and memory holds about two pieces whatever a video's length.
A crash leaves the group's status pending: the next run writes its videos again from the start.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from clipcache.cache.dense import DenseVideoWriter, dense_group
from clipcache.cache.schema import StoreSettings
from clipcache.cache.writer import GroupResult, StoreWriter
from clipcache.pipeline.extract.decode_pool import Outcome
from clipcache.pipeline.extract.dense_frames import DensePiece
from clipcache.pipeline.extract.dense_recipe import DenseDone
from clipcache.pipeline.extract.encoder import FrozenImageEncoder
from clipcache.pipeline.extract.groups import encode_frames, fail, new_result, record
from clipcache.pipeline.extract.plan import GroupWork
from clipcache.pipeline.extract.sources import VideoEntry


class DenseGroups:
    """Takes the pool's outcomes (pieces and ends, videos interleaved) for the planned groups."""

    def __init__(self, encoder: FrozenImageEncoder, settings: StoreSettings, batch_size: int,
                 entries: tuple[VideoEntry, ...], writer: StoreWriter, work: list[GroupWork],
                 thread: ThreadPoolExecutor) -> None:
        self.encoder, self.settings, self.batch_size, self.writer = encoder, settings, batch_size, writer
        paths = [entry.path for entry in entries]
        self.notes = [[entry.note] if entry.note else [] for entry in entries]
        self.results = {item.group: new_result(settings, item, paths) for item in work}
        self.left = {item.group: set(item.redo) for item in work}
        self.videos: dict[int, DenseVideoWriter] = {}  # used on the write thread only
        self.thread = thread
        self.pending: Future | None = None
        for item in work:
            if not item.redo:  # every video of a new group is missing: nothing to decode, still written whole
                self._submit(self._finish, self.results.pop(item.group))

    def take(self, outcome: Outcome) -> None:
        video = outcome.task.index
        if not outcome.final:
            self._piece(video, outcome.video)
            return
        group = video // self.settings.shard_videos
        result, row = self.results[group], video - self.settings.group_range(group)[0]
        done: DenseDone | None = outcome.video
        if done is None:
            fail(result, row, outcome.error)
            self._submit(self._drop, video)
        else:
            record(result, row, done.info, self.notes[video] + done.notes)
            result.samples[row] = done.samples
            self._submit(self.videos.pop, video)
        self.left[group].discard(video)
        if not self.left[group]:
            self._submit(self._finish, self.results.pop(group))

    def wait(self) -> None:
        """Block until everything submitted is on disk (raising what the write thread raised)."""
        if self.pending is not None:
            self.pending.result()

    def _piece(self, video: int, piece: DensePiece) -> None:
        frames = torch.from_numpy(np.ascontiguousarray(piece.pixels[:, 0]))
        tokens, pooled = encode_frames(self.encoder, frames, self.batch_size)
        self._submit(self._append, video, piece, pooled.numpy(), {layer: t.numpy() for layer, t in tokens.items()})

    def _submit(self, work: Callable[..., None], *args: Any) -> None:
        self.wait()  # at most one write waits for the disk
        self.pending = self.thread.submit(work, *args)

    def _append(self, video: int, piece: DensePiece, pooled: np.ndarray, tokens: dict[int, np.ndarray]) -> None:
        self.writer.check_lock()
        if video not in self.videos:
            self.videos[video] = DenseVideoWriter(self.writer.root, self.settings, video)
        self.videos[video].append(piece.time, piece.frame_index, pooled, tokens)

    def _drop(self, video: int) -> None:
        """A video that failed keeps no time series: what an earlier attempt or its first pieces wrote goes."""
        self.videos.pop(video, None)
        if dense_group(video) in self.writer.root:
            del self.writer.root[dense_group(video)]

    def _finish(self, result: GroupResult) -> None:
        self.writer.write_group(result)
