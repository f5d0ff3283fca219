"""Stage two on a real extracted store: a head trained with the default options learns and reports its
progress, checkpoints round-trip, resuming refuses changed options, zero-shot runs end to end, and bad
input or a mismatched store is refused clearly. (Resuming after real kills and a full disk:
test_training_state.py; every head's defaults against a probe: test_defaults_learn.py.)"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import FAILED, PENDING
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import LAST, load_weights, read_run
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loop import train_head
from conftest import assert_choice_refused, run_cli, synthetic_store

SHORT = dict(epochs=2, min_steps=0, device="cpu", quiet=True)  # mechanics, not learning: the defaults, shorter


def _eval(store: Path, *args: str | Path) -> dict:
    result = run_cli("eval", store, "--device", "cpu", "--json", "--quiet", *args)
    assert result.code == 0, result
    return json.loads(result.stdout)


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_linear_head_with_default_options_reaches_90_percent_and_shows_its_progress(appearance_store: Path,
                                                                                     tmp_path: Path) -> None:
    out = tmp_path / "linear"
    trained = run_cli("train-head", appearance_store, "--head", "linear", "--out", out, "--device", "cpu")
    assert trained.code == 0, trained
    # 18 videos in one batch, passed over 25 times per epoch to make the recipe's 500 steps in 20 epochs
    assert "linear: batch 18, 1 steps per pass x 25 passes x 20 epochs = 500 steps" in trained.stderr
    assert "AdamW lr 0.01, weight decay 0.05, 1 warm-up epochs, cosine schedule" in trained.stderr
    epochs = re.findall(r"epoch (\d+)/20  step (\d+)/500  loss ([\d.]+)  lr \S+  val top-1 ([\d.]+)", trained.stderr)
    assert [(int(e), int(s)) for e, s, _, _ in epochs] == [(e, 25 * e) for e in range(1, 21)]
    assert float(epochs[-1][2]) < 0.5 * float(epochs[0][2])  # the loss visibly fell
    # one progress bar over the whole run's 500 steps (its ETA is the run's), no validation bars between epochs
    assert re.search(r"epoch 1/20: .*\| 0/500 \[", trained.stderr) and re.search(r"epoch 20/20: .*/500 \[",
                                                                                   trained.stderr), trained
    assert "evaluate" not in trained.stderr
    run = read_run(out)
    assert run["splits"] == {"train": 18, "val": 6, "test": 12} and "preloaded on cpu" in run["features"]
    assert run["config"]["lr"] == 0.01 and run["config"]["batch_size"] == 64 and run["config"]["min_steps"] == 500
    assert run["options"] == {"normalize": True, "standardize": True}  # resolved: later defaults cannot change it
    report = _eval(appearance_store, "--checkpoint", out)
    assert report["top1"] >= 0.9 and report["videos"] == 12 and report["split"] == "test" and report["held_out"]
    assert {"top5", "mean_class_accuracy", "per_class"} <= set(report)
    folder = out / "eval" / "features-test-head-linear-best"
    assert report["output"] == str(folder)
    for name in ("result.json", "predictions.csv", "confusion.png", "per_class.png"):
        assert (folder / name).stat().st_size > 0
    assert run["store_fingerprint"] == CacheReader(appearance_store).settings.fingerprint()
    assert run["classes"] == list(CacheReader(appearance_store).classes) and run["best"]["val_top1"] >= 0.9
    assert len(_losses(out)) == 20


def test_checkpoint_round_trips_to_identical_predictions(appearance_store: Path, tmp_path: Path) -> None:
    train_head(TrainConfig(store=appearance_store, head="text", out=tmp_path / "r", **SHORT))
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


def test_resume_refuses_other_options_and_a_finished_run_is_not_overwritten(appearance_store: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["train-head", appearance_store, "--head", "linear", "--out", out, "--device", "cpu", "--quiet",
            "--epochs", "2", "--min-steps", "0"]
    assert run_cli(*args).code == 0
    before = (out / LAST).read_bytes()
    again = run_cli(*args)
    assert again.code == 2 and "holds a run already; use --resume" in again.stderr
    changed = run_cli(*args, "--lr", "1e-3", "--resume")
    assert changed.code == 2 and "was trained with other options (lr: 0.01 -> 0.001)" in changed.stderr
    assert (out / LAST).read_bytes() == before
    longer = run_cli(*args[:-4], "--epochs", "3", "--min-steps", "0", "--resume")  # more epochs: allowed
    assert longer.code == 0 and len(_losses(out)) == 3


def test_early_stopping(appearance_store: Path, tmp_path: Path) -> None:
    run = train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "e", patience=2,
                                 epochs=40, device="cpu", quiet=True))
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
                           **SHORT))
    assert read_run(tmp_path / "r")["splits"]["test"] == 4
    assert _eval(appearance_store, "--checkpoint", tmp_path / "r")["videos"] == 4
    assert _eval(appearance_store, "--checkpoint", tmp_path / "r", "--split", "val")["videos"] == 6


def test_failed_and_pending_videos_are_left_out_and_reported_once(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", status={1: FAILED, 7: FAILED, 4: PENDING})
    result = run_cli("train-head", store, "--head", "linear", "--out", tmp_path / "r", "--epochs", "2",
                     "--device", "cpu")
    assert result.code == 0, result
    assert result.stderr.count("2 failed and 1 pending videos left out") == 1
    assert read_run(tmp_path / "r")["splits"] == {"train": 4, "val": 2, "test": 3}
    evaluated = run_cli("eval", store, "--checkpoint", tmp_path / "r", "--device", "cpu")
    assert evaluated.code == 0 and evaluated.stderr.count("2 failed and 1 pending videos left out") == 1
    assert "2 failed" not in run_cli("eval", store, "--checkpoint", tmp_path / "r", "--quiet").stderr


def test_an_empty_validation_set_is_refused_before_training(tmp_path: Path) -> None:
    """One training video per class and no validation split leaves nothing to hold out; a validation split
    without videos of the trained classes is refused too, never a silent val top-1 of 0."""
    lonely = synthetic_store(tmp_path / "one.zarr", num_videos=3, splits=["train"] * 3)
    result = run_cli("train-head", lonely, "--head", "linear", "--out", tmp_path / "a", "--device", "cpu")
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert "no validation split 'val' and too few training videos to hold some out" in result.stderr
    store = synthetic_store(tmp_path / "s.zarr", splits=["val" if i % 3 == 2 else "train" for i in range(12)])
    with pytest.raises(ValueError, match="no validation videos of the classes being trained"):
        train_head(TrainConfig(store=store, head="linear", out=tmp_path / "b", classes=("a", "b"), **SHORT))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("args, message", [
    (["--head", "linear", "--epochs", "0"], "--epochs must be at least 1"),
    (["--head", "linear", "--lr", "-1"], "--lr must be positive"),
    (["--head", "linear", "--option", "bogus=1"], "--head linear: bad option"),
    (["--head", "linear", "--train-split", "nosuch"], "no done videos in training split 'nosuch'"),
    (["--head", "linear", "--frames", "9"], "the head reads 9 frames per view, the store holds 4"),
    (["--head", "linear", "--shots", "0"], "--shots must be at least 1"),
    (["--head", "linear", "--frames", "0"], "--frames must be at least 1, got 0"),
    (["--head", "linear", "--warmup-epochs", "-5"], "--warmup-epochs must be 0 or more, got -5.0"),
    (["--head", "linear", "--min-steps", "-1"], "--min-steps must be 0 or more, got -1"),
    (["--head", "linear", "--weight-decay", "nan"], "--weight-decay must be 0 or more, got nan"),
])
def test_bad_training_arguments(appearance_store: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("train-head", appearance_store, "--out", tmp_path / "x", "--device", "cpu", "--quiet", *args)
    assert result.code == 2 and message in result.stderr, result
    assert result.stderr.startswith("clipcache: error: ") and result.stderr.count("\n") == 1


def test_an_unknown_head_gets_the_list_of_heads(appearance_store: Path, tmp_path: Path) -> None:
    result = run_cli("train-head", appearance_store, "--out", tmp_path / "x", "--head", "nope")
    assert_choice_refused(result, "--head", "nope", "'attnpool', 'evl', 'linear', 'prompt', 'proposals', 'text'")


def test_eval_refuses_mismatched_stores_and_options(appearance_store: Path, tmp_path: Path) -> None:
    train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "r", **SHORT))
    other = synthetic_store(tmp_path / "other.zarr")
    result = run_cli("eval", other, "--checkpoint", tmp_path / "r", "--device", "cpu")
    assert result.code == 2 and "other.zarr: made with model='synthetic'" in result.stderr
    for args, message in [(["--zero-shot", "--probe", "linear"], "exactly one"),
                          (["--checkpoint", tmp_path / "nothing"], "not a training run"),
                          (["--zero-shot", "--split", "nosuch"], "no done videos in split 'nosuch'")]:
        refused = run_cli("eval", appearance_store, "--device", "cpu", *args)
        assert refused.code == 2 and message in refused.stderr, refused
