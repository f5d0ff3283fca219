"""Retrieval metrics on hand-made similarity matrices whose ranks are known: both directions, several captions
per video, ties (the mean position over the tie), blocks of captions, and the rank file."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata

from clipcache.pipeline.evaluate.retrieval import (
    RANK_COLUMNS,
    Retrieval,
    ranks_from_embeddings,
    ranks_from_similarity,
    write_ranks,
)


def test_one_caption_per_video() -> None:
    # captions (rows) x videos (columns); caption i describes video i
    similarity = np.array([[0.9, 0.1, 0.2, 0.0],    # its video first: rank 1
                           [0.8, 0.5, 0.6, 0.1],    # two videos above its own: rank 3
                           [0.1, 0.2, 0.3, 0.0],    # rank 1
                           [0.4, 0.7, 0.2, 0.1]])   # every video above: rank 4
    ranks = ranks_from_similarity(similarity, np.arange(4))
    np.testing.assert_array_equal(ranks.t2v, [1, 3, 1, 4])
    np.testing.assert_array_equal(ranks.t2v_first, [0, 0, 2, 1])
    # video columns: v0 [.9 .8 .1 .4] own .9 -> 1; v1 [.1 .5 .2 .7] own .5 -> 2; v2 [.2 .6 .3 .2] own .3 -> 2;
    # v3 [0 .1 0 .1] own .1 (caption 3) with caption 1 tied at .1 -> positions 1 and 2: 1.5
    np.testing.assert_array_equal(ranks.v2t, [1, 2, 2, 1.5])
    np.testing.assert_array_equal(ranks.v2t_ties, [0, 0, 0, 1])
    np.testing.assert_array_equal(ranks.v2t_first, [0, 3, 1, 1])  # a tie for first: the earlier caption
    assert ranks.metrics() == {
        "t2v_r1": 0.5, "t2v_r5": 1.0, "t2v_r10": 1.0, "t2v_median_rank": 2.0, "t2v_mean_rank": 2.25,
        "v2t_r1": 0.25, "v2t_r5": 1.0, "v2t_r10": 1.0, "v2t_median_rank": 1.75, "v2t_mean_rank": 1.625,
        "t2v_tied_queries": 0, "v2t_tied_queries": 1,
    }


def test_several_captions_per_video() -> None:
    caption_video = np.array([0, 0, 1, 1, 1, 2])
    similarity = np.array([[0.2, 0.9, 0.1],    # caption 0 of v0: v1 above it -> rank 2
                           [0.8, 0.3, 0.7],    # caption 1 of v0: rank 1
                           [0.5, 0.4, 0.6],    # caption 2 of v1: rank 3
                           [0.1, 0.2, 0.3],    # caption 3 of v1: rank 2
                           [0.0, 0.95, 0.2],   # caption 4 of v1: rank 1
                           [0.3, 0.1, 0.05]])  # caption 5 of v2: rank 3
    ranks = ranks_from_similarity(similarity, caption_video)
    np.testing.assert_array_equal(ranks.t2v, [2, 1, 3, 2, 1, 3])
    # a video's rank is its best-ranked caption's: v0's best own is caption 1 (.8), no caption above -> 1;
    # v1's is caption 4 (.95), none above -> 1; v2's only caption scores .05, all five others above -> 6
    np.testing.assert_array_equal(ranks.v2t, [1, 1, 6])
    np.testing.assert_array_equal(ranks.v2t_best, [1, 4, 5])
    metrics = ranks.metrics()
    assert metrics["t2v_r1"] == pytest.approx(2 / 6) and metrics["t2v_median_rank"] == 2.0
    assert metrics["v2t_r1"] == pytest.approx(2 / 3) and metrics["v2t_r5"] == pytest.approx(2 / 3)
    assert metrics["v2t_r10"] == 1.0 and metrics["v2t_mean_rank"] == pytest.approx(8 / 3)


def test_ties_take_the_mean_position_over_the_tie() -> None:
    """rank = 1 + the other items scored higher + half those scored the same: a constant matrix is chance,
    never perfect, and every query counts as tied."""
    flat = ranks_from_similarity(np.full((3, 3), 0.5), np.arange(3))
    np.testing.assert_array_equal(flat.t2v, [2, 2, 2])
    np.testing.assert_array_equal(flat.v2t, [2, 2, 2])
    assert flat.metrics()["t2v_r1"] == 0 and flat.metrics()["v2t_r1"] == 0
    assert flat.metrics()["t2v_tied_queries"] == 3 and flat.metrics()["v2t_tied_queries"] == 3
    similarity = np.array([[0.5, 0.5, 0.7],   # own .5 tied with v1, v2 above -> 1 + 1 + 0.5
                           [0.2, 0.2, 0.2],   # tied with both others -> 1 + 0 + 1
                           [0.5, 0.9, 0.5]])  # own .5 tied with v0, v1 above -> 2.5
    ranks = ranks_from_similarity(similarity, np.arange(3))
    np.testing.assert_array_equal(ranks.t2v, [2.5, 2, 2.5])
    np.testing.assert_array_equal(ranks.t2v_ties, [1, 2, 1])
    # v0's own .5 tied with caption 2's -> 1.5; v1's own .2 below .5 and .9 -> 3; v2's own .5 below caption 0's .7 -> 2
    np.testing.assert_array_equal(ranks.v2t, [1.5, 3, 2])
    # two own captions tied at the best score: no rivals of each other; the earlier is named, the rank is the same
    tied = ranks_from_similarity(np.array([[0.4, 0.1], [0.4, 0.3], [0.6, 0.2]]), np.array([0, 0, 1]))
    np.testing.assert_array_equal(tied.v2t, [2, 2])
    np.testing.assert_array_equal(tied.v2t_best, [0, 2])
    np.testing.assert_array_equal(tied.v2t_ties, [0, 0])


def test_blocks_give_the_ranks_of_the_whole_matrix() -> None:
    """Embeddings scored a few captions at a time rank as the whole matrix does, and as scipy's rankdata
    (method "average": the mean position over tied items) does independently, a video's own other captions
    left out of its column."""
    rng = np.random.default_rng(0)
    videos, captions = 23, 61
    caption_video = np.concatenate([np.arange(videos), rng.integers(0, videos, captions - videos)])
    video = rng.normal(size=(videos, 8)).astype(np.float32)
    text = video[caption_video] + rng.normal(scale=1.5, size=(captions, 8)).astype(np.float32)
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text[5] = text[4]  # two identical captions: exact ties between them in every column
    whole = ranks_from_similarity(text @ video.T, caption_video)
    blocked = ranks_from_embeddings(text, video, caption_video, block=7)
    for name in ("t2v", "t2v_first", "v2t", "v2t_best", "v2t_first", "t2v_ties", "v2t_ties"):
        np.testing.assert_array_equal(getattr(blocked, name), getattr(whole, name), err_msg=name)
    similarity = text @ video.T
    expected_t2v = [rankdata(-row, method="average")[v] for row, v in zip(similarity, caption_video)]
    np.testing.assert_array_equal(whole.t2v, expected_t2v)
    expected_v2t = []
    for v in range(videos):
        own = np.flatnonzero(caption_video == v)
        best = own[np.argmax(similarity[own, v])]
        keep = np.flatnonzero((caption_video != v) | (np.arange(captions) == best))
        expected_v2t.append(rankdata(-similarity[keep, v], method="average")[np.searchsorted(keep, best)])
    np.testing.assert_array_equal(whole.v2t, expected_v2t)
    assert whole.metrics()["v2t_tied_queries"] >= 1  # a video whose best caption is one of the identical two
    assert 0 < whole.metrics()["t2v_r1"] < 1 and whole.metrics()["v2t_r10"] > whole.metrics()["v2t_r1"]


def test_a_video_without_a_caption_is_a_bug_of_the_caller() -> None:
    with pytest.raises(ValueError, match="every video needs a caption"):
        ranks_from_similarity(np.ones((2, 3)), np.array([0, 1]))


def test_the_rank_file_lists_every_query_of_both_directions(tmp_path: Path) -> None:
    similarity = np.array([[0.2, 0.9], [0.8, 0.3], [0.1, 0.7]])
    ranks = ranks_from_similarity(similarity, np.array([0, 0, 1]))
    paths = np.array(["a.mp4", "b.mp4", "c.mp4", "d.mp4"], dtype=object)
    scored = Retrieval(np.array([3, 1]), np.array([10, 11, 14]), ("a dog", "a dog, running", "a cat"), ranks)
    write_ranks(tmp_path / "ranks.csv", scored, paths)
    with (tmp_path / "ranks.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == RANK_COLUMNS
    assert rows[1:] == [
        ["t2v", "10", "a dog", "3", "d.mp4", "2", "b.mp4", "0"],
        ["t2v", "11", "a dog, running", "3", "d.mp4", "1", "d.mp4", "0"],
        ["t2v", "14", "a cat", "1", "b.mp4", "1", "b.mp4", "0"],
        ["v2t", "11", "a dog, running", "3", "d.mp4", "1", "a dog, running", "0"],
        ["v2t", "14", "a cat", "1", "b.mp4", "2", "a dog", "0"],
    ]
