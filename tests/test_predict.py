"""clipcache predict: a trained head on videos given as files, decoded, sampled and encoded as its store recorded
(the tiny model with random weights saved to a checkpoint file, as a user's own weights would be)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.head import evaluate_checkpoint
from conftest import TINY_CONFIG, run_cli, tiny_extract_args


@pytest.fixture(scope="module")
def trained(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(store, linear run, attnpool run) on the demo videos, the store made from a checkpoint file with two clips
    per video (views to average) and the last two blocks' tokens."""
    tmp = tmp_path_factory.mktemp("predict")
    open_clip.add_model_config(TINY_CONFIG)
    torch.manual_seed(1)
    checkpoint = tmp / "tiny.pt"
    torch.save(open_clip.create_model("tiny-vit").state_dict(), checkpoint)
    store = tmp / "features.zarr"
    made = run_cli(*tiny_extract_args(demo_videos, store, "--pretrained", checkpoint, "--clips", "2"))
    assert made.code == 0, made
    runs = []
    for head, extra in (("linear", ("--epochs", "4", "--min-steps", "400")), ("attnpool", ("--epochs", "1",
                                                                                          "--min-steps", "2"))):
        out = tmp / head
        done = run_cli("train-head", store, "--head", head, "--out", out, "--device", "cpu", "--quiet",
                       "--frames", "3", *extra)
        assert done.code == 0, done
        runs.append(out)
    return store, runs[0], runs[1]


def _training_videos(demo_videos: Path) -> list[Path]:
    return sorted((demo_videos / "train").glob("*/*.mp4"))


def _predicted(*args: str | Path) -> list[dict]:
    result = run_cli("predict", *args, "--device", "cpu", "--quiet", "--json")
    assert result.code == 0, result
    return json.loads(result.stdout)


def test_a_head_that_fits_its_training_videos_predicts_their_labels(trained: tuple[Path, Path, Path],
                                                                    demo_videos: Path) -> None:
    store, linear, _ = trained
    videos = _training_videos(demo_videos)
    fit = evaluate_checkpoint(store, linear, "train", "cpu", "last.safetensors").record
    assert fit["top1"] == 1.0, fit  # the head fits them: predict must then give every label
    predicted = _predicted(*videos, "--checkpoint", linear, "--weights", "last", "--top-k", "2")
    assert [Path(p["video"]) for p in predicted] == videos
    for video, prediction in zip(videos, predicted):
        assert prediction["top"][0]["class"] == video.parent.name
        assert len(prediction["top"]) == 2 and prediction["top"][0]["score"] >= prediction["top"][1]["score"]
    table = run_cli("predict", videos[0], "--checkpoint", linear, "--weights", "last", "--top-k", "1",
                    "--device", "cpu", "--quiet")
    assert table.code == 0 and table.stdout.split("\n")[0].split() == ["video", "rank", "class", "score"], table
    assert table.stdout.split("\n")[1].split()[:3] == [str(videos[0]), "1", videos[0].parent.name]


@pytest.mark.parametrize("head", ["linear", "attnpool"])
def test_scores_equal_evaluation_of_the_same_videos_from_the_store(trained: tuple[Path, Path, Path],
                                                                   demo_videos: Path, head: str) -> None:
    """Decoding, views, the encoder, the frame subset (3 of 4) and the view average are the store's and eval's:
    pooled embeddings (linear) and block tokens (attnpool) alike."""
    store, linear, attnpool = trained
    run = linear if head == "linear" else attnpool
    scores = evaluate_checkpoint(store, run, "train", "cpu", "last.safetensors").scores[0]
    reader = CacheReader(store)
    root = demo_videos
    videos = [root / p for p in reader.column("path")[scores.videos]]
    predicted = _predicted(*videos, "--checkpoint", run, "--weights", "last", "--top-k", "3")
    for row, prediction in zip(scores.probs, predicted):
        got = {top["class"]: top["score"] for top in prediction["top"]}
        expected = dict(zip(scores.classes, row))
        assert got.keys() == expected.keys()
        np.testing.assert_allclose([got[c] for c in expected], list(expected.values()), atol=1e-3)


def test_bad_inputs_are_one_line(trained: tuple[Path, Path, Path], demo_videos: Path, tmp_path: Path) -> None:
    _, linear, _ = trained
    video = _training_videos(demo_videos)[0]
    missing = run_cli("predict", video, tmp_path / "gone.mp4", "--checkpoint", linear, "--device", "cpu")
    assert missing.code == 2 and f"{tmp_path / 'gone.mp4'}: file not found" in missing.stderr, missing
    (tmp_path / "text.mp4").write_text("not a video")
    broken = run_cli("predict", tmp_path / "text.mp4", "--checkpoint", linear, "--device", "cpu", "--quiet")
    assert broken.code == 2 and str(tmp_path / "text.mp4") in broken.stderr, broken
    assert len(broken.stderr.strip().splitlines()) == 1, broken
    moved = run_cli("predict", video, "--checkpoint", linear, "--store", tmp_path / "elsewhere.zarr")
    assert moved.code == 2 and "elsewhere.zarr" in moved.stderr and "--store" in moved.stderr, moved
    assert run_cli("predict", video, "--checkpoint", linear, "--top-k", "0").code == 2
