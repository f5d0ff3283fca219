"""Text-video retrieval metrics in both directions, from a similarity matrix of captions x videos.

Text to video: each caption queries the videos; its correct answer is its own video. Video to text: each video
queries the captions; it may have several, and its rank is that of its best-ranked one. Recall at K is the
fraction of queries with rank <= K; the median and mean rank are over the queries.

Ties: a rank is 1 + the number of other items scored strictly higher + half the number of other items scored
exactly the same, i.e. the mean of the positions the correct item could take among the items it ties with (its
expected rank when a tie is broken at random). So identical scores never make a method look perfect: a constant
matrix ranks every query (N + 1) / 2, chance, and when every video shares one sentence no video finds "its"
caption first. For a video query, its own other captions are not rivals (only captions of other videos count).
Why not the protocols' own code: CLIP4Clip's compute_metrics (behind most published MSR-VTT numbers) finds the
correct score in the sorted row by equality, so a query tied with others yields one rank per tied position,
counted as that many queries (its author calls it a potential bug in ArrowLuo/CLIP4Clip#80), and its
multi-sentence variant takes whatever order a double argsort gives ties. Scores of real embeddings rarely tie
exactly, so the rule changes nothing there; identical sentences and degenerate models are where it matters.
The result counts the queries that had ties (`t2v_tied_queries`, `v2t_tied_queries`).

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
RANKING = ("rank = 1 + the number of other items scored strictly higher + half the number scored the same (the "
           "mean position over a tie); a video query's rank is that of its best-ranked caption, its own other "
           "captions not counted as ties")
METRICS = tuple(f"{d}_{m}" for d in DIRECTIONS for m in (*(f"r{k}" for k in RECALLS), "median_rank", "mean_rank"))
TIED = tuple(f"{d}_tied_queries" for d in DIRECTIONS)
BLOCK = 4096  # captions per block of the similarity matrix


@dataclass(frozen=True)
class Ranks:
    """Per query, the rank of its correct answer and what was ranked first. Captions and videos are positions
    in the evaluation's lists (`caption_video[c]` is caption c's video)."""

    caption_video: np.ndarray  # (C,)
    t2v: np.ndarray  # (C,) rank of each caption's video among the videos (float: x.5 within a tie)
    t2v_first: np.ndarray  # (C,) the video ranked first for each caption
    v2t: np.ndarray  # (V,) rank of each video's best-ranked caption among the captions
    v2t_best: np.ndarray  # (V,) that caption
    v2t_first: np.ndarray  # (V,) the caption ranked first for each video
    t2v_ties: np.ndarray  # (C,) other videos scored exactly as the caption's own
    v2t_ties: np.ndarray  # (V,) captions of other videos scored exactly as the video's best own caption

    def metrics(self) -> dict[str, float]:
        """R@1, R@5, R@10, median and mean rank of both directions, as `<direction>_<metric>`, and how many
        queries of each direction had ties (`<direction>_tied_queries`)."""
        out: dict[str, float] = {}
        for name, ranks in (("t2v", self.t2v), ("v2t", self.v2t)):
            out.update({f"{name}_r{k}": float(np.mean(ranks <= k)) for k in RECALLS})
            out[f"{name}_median_rank"] = float(np.median(ranks))
            out[f"{name}_mean_rank"] = float(np.mean(ranks))
        out.update({key: int(np.count_nonzero(ties)) for key, ties in zip(TIED, (self.t2v_ties, self.v2t_ties))})
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
    own score (and caption); the second counts, per video, the captions scored above it and those tied with it."""
    caption_video = np.asarray(caption_video, np.int64)
    if len(caption_video) != captions or captions == 0 or not np.isin(np.arange(videos), caption_video).all():
        raise ValueError("every video needs a caption and every caption a video")
    t2v, t2v_first = np.empty(captions), np.empty(captions, np.int64)
    t2v_ties = np.empty(captions, np.int64)
    own = np.empty(captions)
    first_score, v2t_first = np.full(videos, -np.inf), np.zeros(videos, np.int64)
    for start in range(0, captions, block):
        scores = rows(start, min(start + block, captions))
        span = np.arange(start, start + len(scores))
        own[span] = scores[np.arange(len(scores)), caption_video[span]]
        t2v_ties[span] = (scores == own[span, None]).sum(axis=1) - 1  # not the own video
        t2v[span] = 1 + (scores > own[span, None]).sum(axis=1) + t2v_ties[span] / 2
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
    above, level = np.zeros(videos, np.int64), np.zeros(videos, np.int64)
    for start in range(0, captions, block):
        scores = rows(start, min(start + block, captions))
        above += (scores > best).sum(axis=0)
        level += (scores == best).sum(axis=0)
    v2t_ties = level - np.bincount(caption_video[at_best], minlength=videos)  # own captions are no rivals
    return Ranks(caption_video, t2v, t2v_first, 1 + above + v2t_ties / 2, v2t_best, v2t_first, t2v_ties, v2t_ties)


RANK_COLUMNS = ["direction", "caption_id", "caption", "video", "path", "rank", "first", "tied"]


def write_ranks(path: Path, scored: Retrieval, paths: np.ndarray) -> None:
    """ranks.csv: one row per query. `t2v` rows: a caption (`caption_id`: its position among the caption
    file's captions, from 0; `caption`: its text), its video (`video`: row in the store; `path`: as the store
    records it), the video's `rank`, and the path of the video ranked `first`. `v2t` rows: a video, its
    best-ranked caption, that caption's `rank`, and the caption ranked `first`. `tied`: the other items scored
    exactly as the correct one (the rank is the mean position over them: 2.5 is possible)."""
    ranks, videos, ids, captions = scored.ranks, scored.videos, scored.caption_ids, scored.captions
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(RANK_COLUMNS)
        for c, v in enumerate(ranks.caption_video):
            writer.writerow(["t2v", int(ids[c]), captions[c], int(videos[v]), paths[videos[v]], f"{ranks.t2v[c]:g}",
                             paths[videos[ranks.t2v_first[c]]], int(ranks.t2v_ties[c])])
        for v, c in enumerate(ranks.v2t_best):
            writer.writerow(["v2t", int(ids[c]), captions[c], int(videos[v]), paths[videos[v]], f"{ranks.v2t[v]:g}",
                             captions[ranks.v2t_first[v]], int(ranks.v2t_ties[v])])


def format_ranks(record: dict[str, Any]) -> str:
    """The retrieval numbers of a record in a few words: `t2v R@1 0.4300 R@5 ... MdR 2.0 MnR 9.3`, and the
    queries with tied scores when there were any (their ranks are the mean position over the tie)."""
    parts = []
    for name in DIRECTIONS:
        recalls = " ".join(f"R@{k} {record[f'{name}_r{k}']:.4f}" for k in RECALLS)
        tied = record.get(f"{name}_tied_queries")
        parts.append(f"{name} {recalls} MdR {record[f'{name}_median_rank']:.1f} "
                     f"MnR {record[f'{name}_mean_rank']:.1f}" + (f" ({tied} queries tied)" if tied else ""))
    return "  ".join(parts)
