"""`clipcache search`: moments and videos ranked by a sentence through the store's own text tower."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipcache.pipeline.search.run import best_spans
from conftest import TINY_CONFIG, run_cli
from untrimmed_videos import write_cfr


def test_the_best_span_is_the_planted_moment() -> None:
    """Frames 40-59 of 200 (at 2 fps: 20-30 s) match; the rest is noise around 0."""
    rng = np.random.default_rng(0)
    similarity = rng.normal(0, 0.02, 200)
    similarity[40:60] += 0.3
    spans = best_spans(similarity, step=0.5, count=5)
    start, stop, contrast, inside = spans[0]
    assert abs(start - 40) + abs(stop - 60) <= 2, spans
    assert inside == pytest.approx(similarity[start:stop].mean()) and contrast > 0.2
    assert [c for _, _, c, _ in spans] == sorted((c for _, _, c, _ in spans), reverse=True)
    for i, (a, b, _, _) in enumerate(spans):  # none overlaps a better one by more than half
        for c, d, _, _ in spans[:i]:
            assert max(0, min(b, d) - max(a, c)) / (max(b, d) - min(a, c)) <= 0.5


def test_search_lists_moments_of_a_dense_store_and_videos_of_a_clip_store(appearance_store: Path,
                                                                          tmp_path: Path) -> None:
    write_cfr(tmp_path / "v" / "long.mp4", 12)
    store = tmp_path / "dense.zarr"
    assert run_cli("extract", tmp_path / "v", store, "--model-config", TINY_CONFIG, "--fps", "2", "--workers", "1",
                   "--quiet").code == 0
    found = run_cli("search", store, "a red square", "--top", "3", "--json", "--quiet")
    assert found.code == 0, found
    moments = json.loads(found.stdout)
    assert len(moments) == 3 and all(m["path"] == "long.mp4" and 0 <= m["start"] < m["end"] <= 12 for m in moments)
    assert [m["score"] for m in moments] == sorted((m["score"] for m in moments), reverse=True)
    videos = run_cli("search", appearance_store, "a green circle", "-k", "2", "--quiet")
    assert videos.code == 0 and len(videos.stdout.strip().splitlines()) == 2, videos
    empty = run_cli("search", store, "  ")
    assert empty.code == 2 and "the query is empty" in empty.stderr, empty
