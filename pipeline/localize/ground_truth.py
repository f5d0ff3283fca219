"""A dense store's temporal ground truth, as localisation reads it: each done video's labelled segments in
seconds (past the video's end clipped to it, by the rule of `cache.segments.clip_segments`) and where they
fall on its stored frames."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.cache.segments import SegmentTable, clip_segments, read_segments


@dataclass(frozen=True)
class VideoTruth:
    start: np.ndarray  # (S,) seconds
    end: np.ndarray
    label: np.ndarray  # (S,) int, index into the segments' classes
    ambiguous_start: np.ndarray  # THUMOS14's Ambiguous regions, neither positive nor negative
    ambiguous_end: np.ndarray


def segment_table(reader: CacheReader) -> SegmentTable:
    """The store's segments, clipped to each done video's decoded length; a store without them is refused."""
    if not reader.settings.dense:
        raise InputError(f"{reader.path}: localisation needs a dense store (clipcache extract --fps F "
                         "--annotations FILE)")
    table = read_segments(reader.path)
    if table is None:
        raise InputError(f"{reader.path}: holds no temporal annotations; extract again with --annotations FILE "
                         "(the features are kept: only the segments table is written)")
    durations = reader.column("duration")
    table, _ = clip_segments(table, {int(v): float(durations[v]) for v in reader.done})
    return table


def video_truth(table: SegmentTable, videos: np.ndarray) -> dict[int, VideoTruth]:
    """Per video of `videos`, its segments and ambiguous regions (empty arrays where it has none)."""
    truth = {}
    for video in videos.tolist():
        rows = table.video == video
        real, vague = rows & ~table.ambiguous, rows & table.ambiguous
        truth[video] = VideoTruth(table.start[real], table.end[real], table.label[real].astype(np.int64),
                                  table.start[vague], table.end[vague])
    return truth


def positions(seconds: np.ndarray, times: np.ndarray, fps: float) -> np.ndarray:
    """Where times in seconds fall on a video's stored frames, as fractional frame positions: sample k stands
    for time k/F (a store of every frame: its frames' own times, interpolated)."""
    if fps:
        return np.asarray(seconds, np.float64) * fps
    return np.interp(seconds, times, np.arange(len(times), dtype=np.float64))


def seconds(position: np.ndarray, times: np.ndarray, fps: float) -> np.ndarray:
    """The inverse of `positions`: frame positions of a video as times in seconds."""
    if fps:
        return np.asarray(position, np.float64) / fps
    return np.interp(position, np.arange(len(times), dtype=np.float64), times)
