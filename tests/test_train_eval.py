"""Stage two on a real extracted store: heads learn, checkpoints round-trip, resume is exact,
zero-shot and the probe run end to end, and bad input is refused clearly."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cache.dataset import CacheDataset, frame_subset
from cache.reader import CacheReader
from cache.splits import k_shot, stratified_holdout, train_val_test
from conftest import REPO, run_cli, tiny_extract_args
from heads.base import FeatureRequest
from pipeline.checkpoint import LAST, load_weights, read_run
from pipeline.metrics import predict
from pipeline.probe import linear_probe
from pipeline.train import TrainConfig, build_for_store, train_head

FAST = dict(epochs=12, batch_size=6, lr=1e-2, device="cpu", quiet=True)


def _eval(store: Path, run: Path) -> dict:
    result = run_cli("eval", store, "--checkpoint", run, "--device", "cpu", "--json")
    assert result.code == 0, result
    return json.loads(result.stdout)


@pytest.mark.parametrize("head, options", [("linear", {}), ("text", {"depth": 1})])
def test_heads_reach_90_percent_on_held_out_videos(appearance_store: Path, tmp_path: Path, head: str,
                                                   options: dict) -> None:
    run = train_head(TrainConfig(store=appearance_store, head=head, out=tmp_path / head, head_options=options, **FAST))
    assert run["splits"] == {"train": 18, "val": 6, "test": 12}
    report = _eval(appearance_store, tmp_path / head)
    assert report["top1"] >= 0.9 and report["videos"] == 12
    assert (tmp_path / head / "confusion.png").stat().st_size > 0
    assert len((tmp_path / head / "metrics.jsonl").read_text().splitlines()) == FAST["epochs"]


def test_linear_probe_reaches_90_percent(appearance_store: Path) -> None:
    report = linear_probe(CacheReader(appearance_store))
    assert report["top1"] >= 0.9 and 1e-6 / 10 <= report["C"] <= 1e6 * 10
    few = linear_probe(CacheReader(appearance_store), shots=2, seeds=2)
    assert len(few["runs"]) == 2 and "top1_std" in few


def test_checkpoint_round_trips_to_identical_predictions(appearance_store: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(store=appearance_store, head="text", out=tmp_path / "r", **{**FAST, "epochs": 2})
    train_head(cfg)
    reader = CacheReader(appearance_store)
    heads = []
    for seed in (1, 2):  # two differently initialised heads, both loaded from the checkpoint
        torch.manual_seed(seed)
        head = build_for_store(reader, "text", {}, 4, "text4vis", None, torch.device("cpu"))
        load_weights(head, tmp_path / "r" / LAST)
        heads.append(head)
    data = CacheDataset(reader, heads[0].request, reader.done, 4, train=False)
    np.testing.assert_array_equal(predict(heads[0], data, torch.device("cpu"))[0],
                                  predict(heads[1], data, torch.device("cpu"))[0])


def test_resume_after_kill_continues_exactly(appearance_store: Path, tmp_path: Path) -> None:
    """A real SIGKILL during training; `--resume` must give the uninterrupted run's losses."""
    args = ["train-head", appearance_store, "--head", "text", "--epochs", "25", "--batch-size", "6", "--lr", "1e-2",
            "--device", "cpu", "--quiet"]
    whole = run_cli(*args, "--out", tmp_path / "whole")
    assert whole.code == 0, whole
    metrics = tmp_path / "killed" / "metrics.jsonl"
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), *map(str, args), "--out", str(tmp_path / "killed")],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    process.kill()
    process.wait()
    assert len(metrics.read_text().splitlines()) < 25, "training finished before it could be killed"
    resumed = run_cli(*args, "--out", tmp_path / "killed", "--resume")
    assert resumed.code == 0, resumed
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 26))
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in expected], rel=1e-6)
    again = run_cli(*args, "--out", tmp_path / "killed")
    assert again.code == 2 and "--resume" in again.stderr


def test_early_stopping(appearance_store: Path, tmp_path: Path) -> None:
    run = train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "e", patience=2,
                                 **{**FAST, "epochs": 40}))
    assert run["stopped_early"] < 40 and read_run(tmp_path / "e")["stopped_early"] == run["stopped_early"]


def test_zero_shot_end_to_end(appearance_store: Path, tmp_path: Path) -> None:
    result = run_cli("eval", appearance_store, "--zero-shot", "--templates", "ensemble", "--device", "cpu",
                     "--out", tmp_path / "zs", "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert report["videos"] == 12 and 0 <= report["top1"] <= 1
    assert (tmp_path / "zs" / "report.json").exists()
    assert any(key.startswith("ensemble-") for key in json.loads(run_cli("info", appearance_store, "--json").stdout)
               ["text_templates"])


def test_dataset_reads_only_done_videos_and_subsets_frames(appearance_store: Path) -> None:
    reader = CacheReader(appearance_store)
    splits = train_val_test(reader)
    train = CacheDataset(reader, FeatureRequest(pooled=True, layers=(2,), cls_only=True), splits["train"], 2,
                         train=True)
    item = train[0]
    assert item["pooled"].shape == (2, 32) and item["tokens"].shape == (1, 2, 1, 64)
    assert len(train) == 18 and 0 <= int(item["view"]) < 3  # 2 clips + 1 augmented view
    test = CacheDataset(reader, FeatureRequest(pooled=True), splits["test"], 4, train=False, preload=True)
    assert len(test) == 24  # 12 videos x 2 clips
    lazy = CacheDataset(reader, FeatureRequest(pooled=True), splits["test"], 4, train=False)
    assert torch.equal(test[5]["pooled"], lazy[5]["pooled"])
    np.testing.assert_array_equal(frame_subset(8, 4, None), [1, 3, 5, 7])
    with pytest.raises(ValueError, match="wants 8 frames"):
        CacheDataset(reader, FeatureRequest(pooled=True), splits["test"], 8, train=False)
    with pytest.raises(ValueError, match=r"needs blocks \[0\]"):
        CacheDataset(reader, FeatureRequest(layers=(0,)), splits["test"], 4, train=False)


def test_holdout_and_shots_are_stratified_and_seeded() -> None:
    labels = np.repeat([0, 1, 2], 10)
    keep, held = stratified_holdout(labels, 0.2, seed=0)
    assert sorted(np.bincount(labels[held])) == [2, 2, 2] and len(keep) + len(held) == 30
    np.testing.assert_array_equal(k_shot(labels, 3, 5), k_shot(labels, 3, 5))
    assert list(np.bincount(labels[k_shot(labels, 3, 5)])) == [3, 3, 3]


def test_failed_videos_are_skipped(tmp_path: Path, appearance_store: Path) -> None:
    root = tmp_path / "v"
    shutil.copytree(appearance_store.parent / "videos" / "train", root / "train")
    (root / "train" / "red_square" / "broken.mp4").write_bytes(b"junk")
    store = tmp_path / "s.zarr"
    assert run_cli(*tiny_extract_args(root, store)).code == 0
    reader = CacheReader(store)
    splits = train_val_test(reader)
    assert len(splits["train"]) + len(splits["val"]) == 18  # the broken video is not among them


@pytest.mark.parametrize("args, message", [
    (["--head", "nope"], "--head nope: choose one of"),
    (["--head", "linear", "--epochs", "0"], "--epochs must be at least 1"),
    (["--head", "linear", "--option", "bogus=1"], "bad option"),
    (["--head", "linear", "--train-split", "nosuch"], "no done videos in training split 'nosuch'"),
])
def test_bad_training_arguments(appearance_store: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("train-head", appearance_store, "--out", tmp_path / "x", "--device", "cpu", "--quiet", *args)
    assert result.code == 2 and message in result.stderr, result


def test_eval_refuses_a_store_of_another_model(appearance_store: Path, tmp_path: Path) -> None:
    train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "r", **{**FAST, "epochs": 1}))
    other = tmp_path / "other.zarr"
    videos = appearance_store.parent / "videos"
    assert run_cli("extract", videos, other, "--model", "clipcache-demo", "--frames", "4", "--device", "cpu",
                   "--quiet", "--workers", "1").code == 0
    result = run_cli("eval", other, "--checkpoint", tmp_path / "r", "--device", "cpu")
    assert result.code == 2 and "model='clipcache-demo'" in result.stderr
    both = run_cli("eval", appearance_store, "--zero-shot", "--probe", "linear")
    assert both.code == 2 and "exactly one" in both.stderr
