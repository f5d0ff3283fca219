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

Through a trained prompt head (`--checkpoint RUN`), the head scores as it was trained to: the query through its
learned prompt vectors and the frozen text tower, a video (clip stores: its test views averaged, as `eval`
scores retrieval) or a span through its temporal transformer, as a clip of the frames it reads spread over the
span (as it names proposals in localisation). A span's score is that cosine similarity; the candidates are the
windows alone (the runs above a threshold need a similarity per frame, which the head does not give), kept by
the same overlap rule.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.heads.base import Head
from clipcache.pipeline.common import note, resolve_device
from clipcache.pipeline.evaluate.detection import Segments, segment_iou
from clipcache.pipeline.evaluate.zero_shot import frame_mean_embeddings
from clipcache.pipeline.localize.segment_clips import span_clips
from clipcache.pipeline.search.config import SearchConfig
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import BEST, check_compatible, load_weights, read_run
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.splits import split_videos
from clipcache.pipeline.train.task import retrieval_embeddings
from clipcache.pipeline.train.text_embeddings import encode_sentences, load_text_tower

SPAN_SECONDS = (1, 2, 4, 8, 16, 32)
OVERLAP = 0.5  # spans of one video overlapping a better one by more than this (tIoU) are dropped


@dataclass(frozen=True)
class Match:
    path: str
    score: float  # what ranks: a video's cosine similarity, a moment's outer-inner contrast (through a head: its
    # cosine similarity)
    similarity: float | None = None  # zero-shot: a moment's mean cosine similarity inside
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
    if cfg.checkpoint is not None:
        head, frames = prompt_head(reader, cfg.checkpoint, device, cfg.pretrained)
        return through_head(reader, videos, head, frames, cfg.query, cfg.top, device, cfg.quiet)
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
        step = _step(reader, times)
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

    spans = window_spans(total, step)
    centre, spread = float(similarity.mean()), float(similarity.std())
    for k in np.arange(0.0, 3.01, 0.5):
        above = np.concatenate([[False], similarity > centre + k * spread, [False]])
        edges = np.flatnonzero(np.diff(above.astype(np.int8)))
        spans.update(zip(edges[::2].tolist(), edges[1::2].tolist()))
    ranked = sorted(spans, key=lambda span: (-contrast(*span), span))
    return non_overlapping(((a, b, contrast(a, b), mean(a, b)) for a, b in ranked), count)


def window_spans(total: int, step: float) -> set[tuple[int, int]]:
    """(first frame, frame after the last) of the windows of SPAN_SECONDS over `total` frames `step` seconds apart,
    every quarter of their length."""
    spans = set()
    for seconds in SPAN_SECONDS:
        length = min(max(1, round(seconds / step)), total)
        spans.update((int(s), int(s) + length) for s in range(0, total - length + 1, max(1, length // 4)))
    return spans


def non_overlapping(ranked: Iterable[tuple[int, int, float, float]], count: int) -> list[tuple[int, int, float, float]]:
    """The first `count` of `ranked` spans (best first; first two fields the frame bounds) that overlap no span
    kept before them by more than OVERLAP (tIoU)."""
    kept: list[tuple[int, int, float, float]] = []
    for span in ranked:
        taken = np.array([k[:2] for k in kept], dtype=np.float64).reshape(-1, 2)
        if not len(taken) or segment_iou(np.array([span[:2]], dtype=np.float64), taken).max() <= OVERLAP:
            kept.append(span)
            if len(kept) == count:
                break
    return kept


def prompt_head(reader: CacheReader, run_dir: Path, device: torch.device, pretrained: Path | None
                ) -> tuple[Head, int]:
    """The best weights of a prompt run made on this store's model, and the frames it reads per video."""
    run = read_run(run_dir)
    if run["head"] != "prompt":
        raise InputError(f"{run_dir}: a {run['head']} run; search ranks through a prompt head only (train-head "
                         f"{reader.path} --head prompt), or zero-shot without --checkpoint")
    check_compatible(run, reader.settings, reader.path)
    head = build_for_store(reader, run["head"], run["options"], run["frames"], run["templates"], None, device,
                           pretrained=pretrained)
    load_weights(head, run_dir / BEST)
    return head, int(run["frames"])


def through_head(reader: CacheReader, videos: np.ndarray, head: Head, frames: int, query: str, top: int,
                 device: torch.device, quiet: bool) -> list[Match]:
    """Videos (clip stores) or spans (dense stores) ranked by the head's cosine similarity to the query."""
    layout = head.sentences([query])
    if layout.truncated:
        note(f"the query is longer than the {layout.room} tokens the text context leaves beside the prompt "
             "vectors; cut to fit", quiet)
    paths = reader.column("path")
    if not reader.settings.dense:
        embedded, text = retrieval_embeddings(head, CacheDataset(reader, head.request, videos, frames, train=False,
                                                                 device=device), layout, device)
        scores = embedded @ text[0]
        best = np.argsort(-scores, kind="stable")[:top]
        return [Match(str(paths[videos[i]]), float(scores[i])) for i in best]
    found: list[Match] = []
    for video in videos.tolist():
        times = reader.dense(video, "time")
        step = _step(reader, times)
        bounds = np.array(sorted(window_spans(len(times), step)), dtype=np.int64).reshape(-1, 2)
        starts, ends = times[bounds[:, 0]], times[bounds[:, 1] - 1] + step
        clips, order = span_clips(reader, Segments.of(np.full(len(bounds), video), starts, ends), frames)
        embedded, text = retrieval_embeddings(head, clips, layout, device)
        scores = np.empty(len(bounds))
        scores[order] = embedded @ text[0]
        ranked = sorted(range(len(bounds)), key=lambda i: (-scores[i], tuple(bounds[i])))
        for start, stop, score, _ in non_overlapping(((*bounds[i], scores[i], 0.0) for i in ranked), top):
            found.append(Match(str(paths[video]), float(score), None, float(times[start]),
                               float(times[stop - 1] + step)))
    return sorted(found, key=lambda m: -m.score)[:top]


def _step(reader: CacheReader, times: np.ndarray) -> float:
    """Seconds between stored frames: 1/F, or (a store of every frame) the median gap of the video's own frames."""
    if reader.settings.fps:
        return 1 / reader.settings.fps
    return float(np.median(np.diff(times))) if len(times) > 1 else 1.0


def format_matches(matches: list[Match]) -> str:
    lines = []
    for rank, match in enumerate(matches, 1):
        span = f"  {match.start:9.2f}-{match.end:.2f} s" if match.start is not None else ""
        if match.similarity is not None:
            span += f"  similarity {match.similarity:7.4f}"
        lines.append(f"{rank:4d}  {match.score:7.4f}{span}  {match.path}")
    return os.linesep.join(lines)


def matches_json(matches: list[Match]) -> list[dict[str, object]]:
    return [{k: v for k, v in asdict(match).items() if v is not None} for match in matches]

