"""Text-video retrieval metrics in both directions, from a similarity matrix of captions x videos.

Text to video: each caption queries the videos; its correct answer is its own video. Video to text: each video
queries the captions; it may have several, and its rank is that of its best-ranked one. A rank is 1 + the
number of items scored strictly higher than the correct one, so ties count in the correct item's favour (as
CLIP4Clip's compute_metrics, which most published MSR-VTT numbers come from). Recall at K is the fraction of
queries with rank <= K; the median and mean rank are over the queries.

The matrix is never held whole: it is computed a block of captions at a time (MSR-VTT's full test split is
59,800 x 2,990), and each rank is taken from the same block's numbers as the scores it is compared with, so a
caption never outranks itself through rounding.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RECALLS = (1, 5, 10)
DIRECTIONS = {"t2v": "text to video", "v2t": "video to text"}
RANKING = ("rank = 1 + the number of items scored strictly higher than the correct one (ties in its favour, "
           "as CLIP4Clip's compute_metrics); a video query's rank is that of its best-ranked caption")
METRICS = tuple(f"{d}_{m}" for d in DIRECTIONS for m in (*(f"r{k}" for k in RECALLS), "median_rank", "mean_rank"))
BLOCK = 4096  # captions per block of the similarity matrix


@dataclass(frozen=True)
class Ranks:
    """Per query, the rank of its correct answer and what was ranked first. Captions and videos are positions
    in the evaluation's lists (`caption_video[c]` is caption c's video)."""

    caption_video: np.ndarray  # (C,)
    t2v: np.ndarray  # (C,) rank of each caption's video among the videos
    t2v_first: np.ndarray  # (C,) the video ranked first for each caption
    v2t: np.ndarray  # (V,) rank of each video's best-ranked caption among the captions
    v2t_best: np.ndarray  # (V,) that caption
    v2t_first: np.ndarray  # (V,) the caption ranked first for each video

    def metrics(self) -> dict[str, float]:
        """R@1, R@5, R@10, median and mean rank of both directions, as `<direction>_<metric>`."""
        out = {}
        for name, ranks in (("t2v", self.t2v), ("v2t", self.v2t)):
            out.update({f"{name}_r{k}": float(np.mean(ranks <= k)) for k in RECALLS})
            out[f"{name}_median_rank"] = float(np.median(ranks))
            out[f"{name}_mean_rank"] = float(np.mean(ranks))
        return out


@dataclass(frozen=True)
class Retrieval:
    """What one retrieval evaluation scored: the videos (rows in the store), the captions (positions in the
    caption file and their text), and the ranks between them."""

    videos: np.ndarray
    caption_ids: np.ndarray
    captions: tuple[str, ...]
    ranks: Ranks


def ranks_from_similarity(similarity: np.ndarray, caption_video: np.ndarray) -> Ranks:
    """Ranks of a whole (captions, videos) similarity matrix."""
    return _ranks(lambda start, stop: similarity[start:stop], *similarity.shape, caption_video)


def ranks_from_embeddings(text: np.ndarray, video: np.ndarray, caption_video: np.ndarray, block: int = BLOCK
                          ) -> Ranks:
    """Ranks of the similarity text @ video.T (unit embeddings: cosine), computed `block` captions at a time."""
    text, video = text.astype(np.float32), video.astype(np.float32)
    return _ranks(lambda start, stop: text[start:stop] @ video.T, len(text), len(video), caption_video, block)


def _ranks(rows: Callable[[int, int], np.ndarray], captions: int, videos: int, caption_video: np.ndarray,
           block: int = BLOCK) -> Ranks:
    """Two passes over the blocks of rows: the first ranks each caption's video and finds each video's best
    own score (and caption); the second counts, per video, the captions scored strictly above it."""
    caption_video = np.asarray(caption_video, np.int64)
    if len(caption_video) != captions or captions == 0 or not np.isin(np.arange(videos), caption_video).all():
        raise ValueError("every video needs a caption and every caption a video")
    t2v, t2v_first = np.empty(captions, np.int64), np.empty(captions, np.int64)
    own = np.empty(captions)
    first_score, v2t_first = np.full(videos, -np.inf), np.zeros(videos, np.int64)
    for start in range(0, captions, block):
        scores = rows(start, min(start + block, captions))
        span = np.arange(start, start + len(scores))
        own[span] = scores[np.arange(len(scores)), caption_video[span]]
        t2v[span] = 1 + (scores > own[span, None]).sum(axis=1)
        t2v_first[span] = scores.argmax(axis=1)
        top = scores.argmax(axis=0)
        top_score = scores[top, np.arange(videos)]
        better = top_score > first_score  # strictly: the earliest caption wins a tie
        first_score[better], v2t_first[better] = top_score[better], start + top[better]
    best = np.full(videos, -np.inf)
    np.maximum.at(best, caption_video, own)
    at_best = np.flatnonzero(own == best[caption_video])
    v2t_best = np.full(videos, captions, np.int64)
    np.minimum.at(v2t_best, caption_video[at_best], at_best)  # the earliest own caption at the best score
    above = np.zeros(videos, np.int64)
    for start in range(0, captions, block):
        above += (rows(start, min(start + block, captions)) > best).sum(axis=0)
    return Ranks(caption_video, t2v, t2v_first, 1 + above, v2t_best, v2t_first)


RANK_COLUMNS = ["direction", "caption_id", "caption", "video", "path", "rank", "first"]


def write_ranks(path: Path, scored: Retrieval, paths: np.ndarray) -> None:
    """ranks.csv: one row per query. `t2v` rows: a caption (`caption_id`: its position among the caption
    file's captions, from 0; `caption`: its text), its video (`video`: row in the store; `path`: as the store
    records it), the video's `rank`, and the path of the video ranked `first`. `v2t` rows: a video, its
    best-ranked caption, that caption's `rank`, and the caption ranked `first`."""
    ranks, videos, ids, captions = scored.ranks, scored.videos, scored.caption_ids, scored.captions
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(RANK_COLUMNS)
        for c, v in enumerate(ranks.caption_video):
            writer.writerow(["t2v", int(ids[c]), captions[c], int(videos[v]), paths[videos[v]], int(ranks.t2v[c]),
                             paths[videos[ranks.t2v_first[c]]]])
        for v, c in enumerate(ranks.v2t_best):
            writer.writerow(["v2t", int(ids[c]), captions[c], int(videos[v]), paths[videos[v]], int(ranks.v2t[v]),
                             captions[ranks.v2t_first[v]]])


def format_ranks(record: dict[str, Any]) -> str:
    """The retrieval numbers of a record in a few words: `t2v R@1 0.4300 R@5 ... MdR 2.0 MnR 9.3`."""
    parts = []
    for name in DIRECTIONS:
        recalls = " ".join(f"R@{k} {record[f'{name}_r{k}']:.4f}" for k in RECALLS)
        parts.append(f"{name} {recalls} MdR {record[f'{name}_median_rank']:.1f} "
                     f"MnR {record[f'{name}_mean_rank']:.1f}")
    return "  ".join(parts)
