"""`clipcache search STORE "text" --checkpoint RUN`: moments (dense stores) and videos (clip stores) ranked through a
trained prompt head. The expected scores are computed here from the head's public parts along another path than
search takes: the query as the head's own class embedding of that name (`class_embeddings`, where search lays out a
sentence), the frames picked and averaged in this file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from clipcache.cache.reader import CacheReader
from clipcache.heads.base import Head
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import BEST, load_weights, read_run
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loader import batch_loader
from conftest import run_cli, synthetic_store
from untrimmed_videos import annotated_store

RATE = 4  # frames per second of the dense store
PROMPT = ("--head", "prompt", "--device", "cpu", "--quiet", "--epochs", "2", "--min-steps", "8",
          "--option", "prefix=2", "--option", "suffix=2", "--option", "depth=1")


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dense store of 5 videos of 16 s (3 train, 1 val, 1 test) and a prompt head trained on its segments."""
    instances = [[(2, 6, "red_square"), (9, 13, "green_circle")], [(1, 5, "green_circle"), (8, 14, "red_square")],
                 [(3, 9, "red_square")], [(4, 10, "green_circle"), (11, 15, "red_square")], [(6, 11, "red_square")]]
    splits = ["train", "train", "train", "val", "test"]
    root = tmp_path_factory.mktemp("search_prompt")
    store = annotated_store(root, [(f"v{i}", spans, split) for i, (spans, split) in enumerate(zip(instances, splits))],
                            16, RATE)
    trained = run_cli("train-head", store, "--out", root / "prompt", *PROMPT)
    assert trained.code == 0, trained
    return store, root / "prompt"


def _head(store: Path, run_dir: Path) -> tuple[Head, int]:
    run = read_run(run_dir)
    head = build_for_store(CacheReader(store), "prompt", run["options"], run["frames"], run["templates"], None,
                           torch.device("cpu"))
    load_weights(head, run_dir / BEST)
    return head.eval(), int(run["frames"])


def _class_text(head: Head, store: Path, label: str) -> torch.Tensor:
    return F.normalize(head.class_embeddings()[CacheReader(store).classes.index(label)], dim=-1)


def _search(store: Path, query: str, *extra: str | Path) -> list[dict]:
    found = run_cli("search", store, query, "--json", "--quiet", "--device", "cpu", *extra)
    assert found.code == 0, found
    return json.loads(found.stdout)


@torch.no_grad()
def test_moments_are_ranked_by_the_heads_similarity(dense: tuple[Path, Path]) -> None:
    store, run_dir = dense
    head, frames = _head(store, run_dir)
    text = _class_text(head, store, "red_square")
    reader = CacheReader(store)
    names = {str(p): v for v, p in enumerate(reader.column("path"))}

    def span_score(video: int, start: float, end: float) -> float:
        """The head's cosine similarity of the span: `frames` frames at the centres of equal parts of it."""
        features = torch.from_numpy(reader.dense(video)).float()
        first, last = start * RATE, end * RATE
        picks = (first + (np.arange(frames) + 0.5) * (last - first) / frames).astype(np.int64)
        video_embedding = head.encode_video({"pooled": features[np.clip(picks, 0, len(features) - 1)][None]})
        return float(F.normalize(video_embedding[0], dim=-1) @ text)

    moments = _search(store, "red square", "--checkpoint", run_dir, "--top", "6")
    assert len(moments) == 6 and all("similarity" not in m for m in moments)
    assert [m["score"] for m in moments] == sorted((m["score"] for m in moments), reverse=True)
    for m in moments:
        assert 0 <= m["start"] < m["end"] <= 16
        assert m["score"] == pytest.approx(span_score(names[m["path"]], m["start"], m["end"]), abs=1e-5), m
    # every 1 s window (4 frames, at each frame) and 2 s window (at every other frame) is a candidate: none beats
    # the first match
    windows = [span_score(v, s / RATE, (s + n) / RATE) for v in reader.done.tolist() for n, step in ((4, 1), (8, 2))
               for s in range(0, len(reader.dense(v)) - n + 1, step)]
    assert moments[0]["score"] == pytest.approx(max(windows), abs=1e-5) or moments[0]["score"] > max(windows)
    test_only = _search(store, "red square", "--checkpoint", run_dir, "--split", "test")
    assert {m["path"] for m in test_only} == {"v4.mp4"}
    zero_shot = _search(store, "red square", "--top", "6")  # without --checkpoint: the frozen tower, other scores
    assert all("similarity" in m for m in zero_shot) and [m["score"] for m in zero_shot] != \
        [m["score"] for m in moments]


def test_videos_of_a_clip_store_are_ranked_by_the_heads_similarity(appearance_store: Path, tmp_path: Path) -> None:
    trained = run_cli("train-head", appearance_store, "--out", tmp_path / "prompt", *PROMPT)
    assert trained.code == 0, trained
    head, frames = _head(appearance_store, tmp_path / "prompt")
    reader = CacheReader(appearance_store)
    test = np.flatnonzero(reader.column("split") == "test")
    dataset = CacheDataset(reader, head.request, test, frames, train=False)
    sums = {}
    with torch.no_grad():
        for batch in batch_loader(dataset, 8):  # each test view's unit embedding, summed per video
            pooled = {"pooled": batch["pooled"].float()}
            for row, embedding in zip(batch["video"].tolist(), F.normalize(head.encode_video(pooled), dim=-1)):
                sums[row] = sums.get(row, 0) + embedding
        text = _class_text(head, appearance_store, "green_circle")
    expected = {str(reader.column("path")[test[row]]): float(F.normalize(total, dim=-1) @ text)
                for row, total in sums.items()}
    found = _search(appearance_store, "green circle", "--checkpoint", tmp_path / "prompt", "--split", "test",
                    "--top", "5")
    best = sorted(expected, key=lambda path: -expected[path])[:5]
    assert [m["path"] for m in found] == best
    assert [m["score"] for m in found] == pytest.approx([expected[path] for path in best], abs=1e-5)


def test_a_run_search_cannot_rank_through_is_one_line(dense: tuple[Path, Path], tmp_path: Path) -> None:
    store, prompt = dense
    linear = tmp_path / "linear"
    assert run_cli("train-head", store, "--head", "linear", "--out", linear, "--epochs", "1", "--device", "cpu",
                   "--quiet").code == 0
    other_kind = run_cli("search", store, "red square", "--checkpoint", linear, "--device", "cpu")
    assert other_kind.code == 2 and "a linear run; search ranks through a prompt head only" in other_kind.stderr
    other_model = run_cli("search", synthetic_store(tmp_path / "other.zarr"), "red square", "--checkpoint", prompt)
    assert other_model.code == 2 and "other.zarr: made with model='synthetic'" in other_model.stderr, other_model
    not_a_run = run_cli("search", store, "red square", "--checkpoint", tmp_path)
    assert not_a_run.code == 2 and "not a training run" in not_a_run.stderr, not_a_run
    for refused in (other_kind, other_model, not_a_run):
        assert refused.stderr.startswith("clipcache: error: ") and refused.stderr.count("\n") == 1, refused
