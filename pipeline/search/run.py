"""`clipcache search`: the store's videos, or moments within them, ranked by how well they match a sentence.

The query goes through the store's own frozen text tower; frames are compared as CLIP compares them (unit
image embeddings against the unit sentence embedding). A clip store ranks videos by the mean of their
test views' unit frame embeddings (zero-shot retrieval's video embedding). A dense store ranks moments of
each video. Candidates are the runs of frames whose similarity stays above the video's mean plus k of its
standard deviations (k = 0, 0.5, ... 3; grouping as in TAG), and windows of 1, 2, 4, ... 32 seconds. Each
is scored by its outer-inner contrast (AutoLoc): the mean similarity inside minus the mean over flanks a
quarter of its length on either side, so a moment scores by how much it stands out from its surroundings
and its extent follows the data (a part of a moment has a matching flank; a span beyond it dilutes its
inside). Within a video a span overlapping a better one by more than half (tIoU) is dropped; the best spans
of all videos are listed by contrast, each with its inside mean.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.common import resolve_device
from clipcache.pipeline.evaluate.detection import segment_iou
from clipcache.pipeline.evaluate.zero_shot import frame_mean_embeddings
from clipcache.pipeline.search.config import SearchConfig
from clipcache.pipeline.train.splits import split_videos
from clipcache.pipeline.train.text_embeddings import encode_sentences, load_text_tower

SPAN_SECONDS = (1, 2, 4, 8, 16, 32)
OVERLAP = 0.5  # spans of one video overlapping a better one by more than this (tIoU) are dropped


@dataclass(frozen=True)
class Match:
    path: str
    score: float  # what ranks: a video's cosine similarity, a moment's outer-inner contrast
    similarity: float | None = None  # a moment's mean cosine similarity inside
    start: float | None = None  # seconds, dense stores
    end: float | None = None


def search(cfg: SearchConfig) -> list[Match]:
    reader = CacheReader(cfg.store)
    if not cfg.query.strip():
        raise InputError("the query is empty: say what to look for, e.g. 'a person diving'")
    videos = reader.done if cfg.split is None else split_videos(reader, cfg.split)
    if len(videos) == 0:
        where = f"split {cfg.split!r}" if cfg.split is not None else "the store"
        raise InputError(f"{cfg.store}: no done videos in {where} to search")
    device = resolve_device(cfg.device)
    model, tokenizer = load_text_tower(reader, device, cfg.pretrained)
    query = encode_sentences(model, tokenizer, [cfg.query], device)[0]
    paths = reader.column("path")
    if not reader.settings.dense:
        scores = frame_mean_embeddings(reader, videos) @ query
        best = np.argsort(-scores, kind="stable")[:cfg.top]
        return [Match(str(paths[videos[i]]), float(scores[i])) for i in best]
    found: list[Match] = []
    for video in videos:
        frames = reader.dense(int(video)).astype(np.float32)
        similarity = frames @ query / np.linalg.norm(frames, axis=1)
        times = reader.dense(int(video), "time")
        step = 1 / reader.settings.fps if reader.settings.fps else _median_step(times)
        for start, stop, contrast, inside in best_spans(similarity, step, cfg.top):
            found.append(Match(str(paths[video]), contrast, inside, float(times[start]), float(times[stop - 1] + step)))
    return sorted(found, key=lambda m: -m.score)[:cfg.top]


def best_spans(similarity: np.ndarray, step: float, count: int) -> list[tuple[int, int, float, float]]:
    """(first frame, frame after the last, outer-inner contrast, mean similarity inside) of up to `count` spans
    of one video, best first, none overlapping a better one by more than OVERLAP. `step`: seconds between
    stored frames."""
    total = len(similarity)
    sums = np.concatenate([[0.0], np.cumsum(similarity, dtype=np.float64)])

    def mean(start: int, stop: int) -> float:
        return float((sums[stop] - sums[start]) / (stop - start)) if stop > start else 0.0

    def contrast(start: int, stop: int) -> float:
        flank = max(1, (stop - start) // 4)
        left, right = (max(0, start - flank), start), (stop, min(total, stop + flank))
        sides = [mean(*side) for side in (left, right) if side[1] > side[0]]
        return mean(start, stop) - (float(np.mean(sides)) if sides else 0.0)

    spans = set()
    for seconds in SPAN_SECONDS:
        length = min(max(1, round(seconds / step)), total)
        spans.update((int(s), int(s) + length) for s in range(0, total - length + 1, max(1, length // 4)))
    centre, spread = float(similarity.mean()), float(similarity.std())
    for k in np.arange(0.0, 3.01, 0.5):
        above = np.concatenate([[False], similarity > centre + k * spread, [False]])
        edges = np.flatnonzero(np.diff(above.astype(np.int8)))
        spans.update(zip(edges[::2].tolist(), edges[1::2].tolist()))
    ranked = sorted(spans, key=lambda span: (-contrast(*span), span))
    kept: list[tuple[int, int, float, float]] = []
    for start, stop in ranked:
        taken = np.array([(a, b) for a, b, _, _ in kept], dtype=np.float64).reshape(-1, 2)
        if not len(taken) or segment_iou(np.array([[start, stop]], dtype=np.float64), taken).max() <= OVERLAP:
            kept.append((start, stop, contrast(start, stop), mean(start, stop)))
            if len(kept) == count:
                break
    return kept


def _median_step(times: np.ndarray) -> float:
    """Seconds between stored frames of a store of every frame (its videos' own rates)."""
    return float(np.median(np.diff(times))) if len(times) > 1 else 1.0


def format_matches(matches: list[Match]) -> str:
    lines = []
    for rank, match in enumerate(matches, 1):
        span = f"  {match.start:9.2f}-{match.end:.2f} s  similarity {match.similarity:7.4f}" \
            if match.start is not None else ""
        lines.append(f"{rank:4d}  {match.score:7.4f}{span}  {match.path}")
    return os.linesep.join(lines)


def matches_json(matches: list[Match]) -> list[dict[str, object]]:
    return [{k: v for k, v in asdict(match).items() if v is not None} for match in matches]

