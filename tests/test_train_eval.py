"""Stage two on a real extracted store: heads learn, checkpoints round-trip, resume is exact, zero-shot
runs end to end, and bad input or a mismatched store is refused clearly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import clipcache.pipeline.train.loop
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import FAILED
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import LAST, load_weights, read_run
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loop import train_head
from conftest import assert_choice_refused, run_cli, synthetic_store

FAST = dict(epochs=12, batch_size=6, lr=1e-2, device="cpu", quiet=True)


def _eval(store: Path, *args: str | Path) -> dict:
    result = run_cli("eval", store, "--device", "cpu", "--json", "--quiet", *args)
    assert result.code == 0, result
    return json.loads(result.stdout)


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("head, options", [("linear", {}), ("text", {"depth": 1})])
def test_heads_reach_90_percent_on_held_out_videos(appearance_store: Path, tmp_path: Path, head: str,
                                                   options: dict) -> None:
    run = train_head(TrainConfig(store=appearance_store, head=head, out=tmp_path / head, head_options=options, **FAST))
    assert run["splits"] == {"train": 18, "val": 6, "test": 12} and "preloaded on cpu" in run["features"]
    report = _eval(appearance_store, "--checkpoint", tmp_path / head)
    assert report["top1"] >= 0.9 and report["videos"] == 12 and report["split"] == "test" and report["held_out"]
    assert {"top5", "mean_class_accuracy", "per_class"} <= set(report)
    folder = tmp_path / head / "eval" / f"features-test-head-{head}-best"
    assert report["output"] == str(folder)
    for name in ("result.json", "predictions.csv", "confusion.png", "per_class.png"):
        assert (folder / name).stat().st_size > 0
    saved = read_run(tmp_path / head)
    assert saved["store_fingerprint"] == CacheReader(appearance_store).settings.fingerprint()
    assert saved["classes"] == list(CacheReader(appearance_store).classes) and saved["best"]["val_top1"] >= 0.9
    assert len(_losses(tmp_path / head)) == FAST["epochs"]


def test_checkpoint_round_trips_to_identical_predictions(appearance_store: Path, tmp_path: Path) -> None:
    train_head(TrainConfig(store=appearance_store, head="text", out=tmp_path / "r", **{**FAST, "epochs": 2}))
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


def test_resume_after_an_interruption_continues_exactly(appearance_store: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped in the worst place (epoch 3's metrics written, its state not saved), `--resume` redoes
    epoch 3 and ends with the uninterrupted run's losses (features streamed from the store)."""
    cfg = TrainConfig(store=appearance_store, head="text", out=tmp_path / "whole", preload=False,
                      **{**FAST, "epochs": 5})
    train_head(cfg)
    saves = []
    real_save = clipcache.pipeline.train.loop.save_state

    def dies_on_third(run_dir: Path, state: dict) -> None:
        saves.append(state["epoch"])
        if len(saves) == 3:
            raise KeyboardInterrupt
        real_save(run_dir, state)

    monkeypatch.setattr(clipcache.pipeline.train.loop, "save_state", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        train_head(TrainConfig(**{**cfg.__dict__, "out": tmp_path / "cut"}))
    monkeypatch.undo()
    assert len(_losses(tmp_path / "cut")) == 3
    run = train_head(TrainConfig(**{**cfg.__dict__, "out": tmp_path / "cut", "resume": True}))
    assert run["epochs_done"] == 5
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "whole"), rel=1e-6)
    args = ["train-head", appearance_store, "--head", "text", "--out", tmp_path / "cut", "--device", "cpu", "--quiet",
            "--epochs", "5", "--batch-size", "6", "--lr", "1e-2"]
    again = run_cli(*args)
    assert again.code == 2 and "holds a run already; use --resume" in again.stderr
    changed = run_cli(*args[:-1], "1e-3", "--resume")
    assert changed.code == 2 and "was trained with other options (lr: 0.01 -> 0.001)" in changed.stderr


def test_early_stopping(appearance_store: Path, tmp_path: Path) -> None:
    run = train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "e", patience=2,
                                 **{**FAST, "epochs": 40}))
    assert run["stopped_early"] < 40 and read_run(tmp_path / "e")["stopped_early"] == run["stopped_early"]
    assert len(_losses(tmp_path / "e")) == run["stopped_early"]


def test_zero_shot_end_to_end(appearance_store: Path, tmp_path: Path) -> None:
    report = _eval(appearance_store, "--zero-shot", "--templates", "ensemble", "--out", tmp_path / "zs")
    assert report["method"] == "zero-shot" and report["videos"] == 12 and 0 <= report["top1"] <= 1
    folder = tmp_path / "zs" / "features-test-zero-shot-ensemble"
    assert (folder / "result.json").exists() and (folder / "confusion.png").exists()
    info = json.loads(run_cli("info", appearance_store, "--json").stdout)
    assert any(key.startswith("ensemble-") for key in info["text_templates"])
    probe = _eval(appearance_store, "--probe", "linear", "--out", tmp_path / "probe")
    assert probe["method"] == "linear probe" and probe["top1"] >= 0.9


def test_eval_defaults_to_the_runs_test_split(appearance_store: Path, tmp_path: Path) -> None:
    reader = CacheReader(appearance_store)
    paths, splits = reader.column("path"), reader.column("split")
    listed = tmp_path / "my-test.txt"
    listed.write_text("\n".join(p for p, s in zip(paths, splits) if s == "test" and "red" in p) + "\n")
    train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "r", test_split=str(listed),
                           **{**FAST, "epochs": 1}))
    assert read_run(tmp_path / "r")["splits"]["test"] == 4
    assert _eval(appearance_store, "--checkpoint", tmp_path / "r")["videos"] == 4
    assert _eval(appearance_store, "--checkpoint", tmp_path / "r", "--split", "val")["videos"] == 6


def test_failed_videos_are_left_out_and_reported_once(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", status={1: FAILED, 7: FAILED})
    result = run_cli("train-head", store, "--head", "linear", "--out", tmp_path / "r", "--epochs", "2",
                     "--device", "cpu")
    assert result.code == 0, result
    assert result.stderr.count("2 failed videos left out") == 1
    assert read_run(tmp_path / "r")["splits"] == {"train": 5, "val": 2, "test": 3}
    evaluated = run_cli("eval", store, "--checkpoint", tmp_path / "r", "--device", "cpu")
    assert evaluated.code == 0 and evaluated.stderr.count("2 failed videos left out") == 1
    assert "2 failed" not in run_cli("eval", store, "--checkpoint", tmp_path / "r", "--quiet").stderr


@pytest.mark.parametrize("args, message", [
    (["--head", "linear", "--epochs", "0"], "--epochs must be at least 1"),
    (["--head", "linear", "--lr", "-1"], "--lr must be positive"),
    (["--head", "linear", "--option", "bogus=1"], "--head linear: bad option"),
    (["--head", "linear", "--train-split", "nosuch"], "no done videos in training split 'nosuch'"),
    (["--head", "linear", "--frames", "9"], "the head reads 9 frames per view, the store holds 4"),
    (["--head", "linear", "--shots", "0"], "--shots must be at least 1"),
])
def test_bad_training_arguments(appearance_store: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("train-head", appearance_store, "--out", tmp_path / "x", "--device", "cpu", "--quiet", *args)
    assert result.code == 2 and message in result.stderr, result
    assert result.stderr.startswith("clipcache: error: ") and result.stderr.count("\n") == 1


def test_an_unknown_head_gets_the_list_of_heads(appearance_store: Path, tmp_path: Path) -> None:
    result = run_cli("train-head", appearance_store, "--out", tmp_path / "x", "--head", "nope")
    assert_choice_refused(result, "--head", "nope", "'attnpool', 'evl', 'linear', 'prompt', 'text'")


def test_eval_refuses_mismatched_stores_and_options(appearance_store: Path, tmp_path: Path) -> None:
    train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "r", **{**FAST, "epochs": 1}))
    other = synthetic_store(tmp_path / "other.zarr")
    result = run_cli("eval", other, "--checkpoint", tmp_path / "r", "--device", "cpu")
    assert result.code == 2 and "other.zarr: made with model='synthetic'" in result.stderr
    for args, message in [(["--zero-shot", "--probe", "linear"], "exactly one"),
                          (["--checkpoint", tmp_path / "nothing"], "not a training run"),
                          (["--zero-shot", "--split", "nosuch"], "no done videos in split 'nosuch'")]:
        refused = run_cli("eval", appearance_store, "--device", "cpu", *args)
        assert refused.code == 2 and message in refused.stderr, refused
