"""What eval leaves on disk: one folder per evaluation named after what was evaluated, never overwriting
another evaluation or anything else, and figures that stay small and readable at 400 classes."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate import report
from clipcache.pipeline.evaluate.figures import DPI, MAX_INCHES, per_class_figure
from clipcache.pipeline.evaluate.metrics import classification_metrics
from clipcache.pipeline.evaluate.report import write_figures, write_result
from clipcache.pipeline.evaluate.results import Result, Scores
from conftest import REPO, run_cli
from mounts import read_only


def _eval(store: Path, *args: str | Path) -> dict:
    result = run_cli("eval", store, "--zero-shot", "--device", "cpu", "--json", "--quiet", *args)
    assert result.code == 0, result
    return json.loads(result.stdout)


def _folders(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_each_evaluation_gets_its_own_folder_and_none_is_overwritten(appearance_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = _eval(appearance_store, "--out", out)
    again = _eval(appearance_store, "--out", out)  # the same evaluation: its own folder, refreshed
    assert first["output"] == again["output"] and _folders(out) == ["features-test-zero-shot-text4vis"]
    ensemble = _eval(appearance_store, "--out", out, "--templates", "ensemble")
    on_val = _eval(appearance_store, "--out", out, "--split", "val")
    assert Path(ensemble["output"]).name == "features-test-zero-shot-ensemble"
    assert Path(on_val["output"]).name == "features-val-zero-shot-text4vis"
    kept = (out / "features-test-zero-shot-text4vis" / "result.json").read_text()
    other = tmp_path / "elsewhere" / "features.zarr"  # another store of the same name
    shutil.copytree(appearance_store, other)
    moved = _eval(other, "--out", out)
    assert Path(moved["output"]).name == "features-test-zero-shot-text4vis-2"
    assert (out / "features-test-zero-shot-text4vis" / "result.json").read_text() == kept
    mine = out / "features-test-zero-shot-text4vis-3"  # a folder of the user's that happens to have the next name
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (other / "moved-again").mkdir()
    third = _eval(other, "--out", out, "--templates", "ensemble")
    assert Path(third["output"]).name == "features-test-zero-shot-ensemble-2"
    assert (mine / "notes.txt").read_text() == "my notes" and [p.name for p in mine.iterdir()] == ["notes.txt"]
    for folder in out.iterdir():
        if folder != mine:
            assert {p.name for p in folder.iterdir()} == {"result.json", "predictions.csv", "confusion.png",
                                                         "per_class.png"}


def test_eval_without_out_writes_under_the_current_folder(appearance_store: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    record = _eval(appearance_store)
    assert record["output"] == str(Path("eval") / "features-test-zero-shot-text4vis")
    assert (tmp_path / record["output"] / "result.json").is_file()


def _synthetic(classes: int, videos_per_class: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    """A 400-class result: per class 10 videos, a quarter of the classes never right."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), videos_per_class)
    logits = rng.normal(size=(len(labels), classes))
    hit = rng.random(len(labels)) < 0.6
    logits[hit, labels[hit]] += 4
    hopeless = labels % 4 == 0
    logits[hopeless, labels[hopeless]] = -9
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = classification_metrics(probs, labels, tuple(f"class number {i:03d}" for i in range(classes)))
    return metrics, np.asarray(metrics["confusion"])


def _red_pixels(path: Path) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum())


@pytest.mark.parametrize("classes", [400, 12])
def test_figures_stay_small_and_show_zero_accuracy_classes(tmp_path: Path, classes: int) -> None:
    metrics, confusion = _synthetic(classes, 10)
    assert sum(a == 0 for a in metrics["per_class"].values()) == classes // 4
    tracemalloc.start()
    try:
        paths = write_figures(tmp_path, confusion, metrics["per_class"], "a 400-class result")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e8, peak  # ~90 MB; a label per cell of the 400 x 400 matrix took 10 GB (0.8 GB for half)
    expected = {"confusion.png", "per_class.png"} | ({"confused_pairs.png"} if classes > 30 else set())
    assert {p.name for p in paths} == expected == {p.name for p in tmp_path.iterdir()}
    for path in paths:
        with Image.open(path) as image:
            image.load()
            assert max(image.size) <= MAX_INCHES * DPI + 1, (path.name, image.size)
    assert _red_pixels(tmp_path / "per_class.png") > 0  # zero-accuracy classes are drawn in red
    good, _ = _synthetic(classes, 10, seed=1)
    perfect = {c: (1.0 if a == 0 else a) for c, a in good["per_class"].items()}
    per_class_figure(perfect, "no class at zero").savefig(tmp_path / "per_class.png")
    assert _red_pixels(tmp_path / "per_class.png") == 0


def test_a_400_class_result_is_written_whole(appearance_store: Path, tmp_path: Path) -> None:
    """The whole folder for 4,000 videos of 400 classes: predictions, figures and the record (what is written;
    how long it takes is benchmarks' business)."""
    reader = CacheReader(appearance_store)
    rng = np.random.default_rng(0)
    classes = tuple(f"c{i}" for i in range(400))
    videos = rng.integers(0, reader.num_videos, 4000)
    labels = rng.integers(0, 400, 4000)
    probs = rng.dirichlet(np.ones(400), 4000)
    scores = Scores(videos, labels, probs, classes)
    metrics = scores.metrics()
    record = {"dataset": "big", "split": "test", "method": "zero-shot", "protocol": "single",
              "options": {"templates": "text4vis"}, "top1": metrics["top1"], "per_class": metrics["per_class"]}
    folder = write_result(Result(record, [scores]), tmp_path, reader)
    assert folder.name == "big-test-zero-shot-text4vis"
    assert sum(1 for _ in (folder / "predictions.csv").open()) == 4001
    assert {"confusion.png", "per_class.png", "confused_pairs.png", "result.json"} <= set(_folders(folder))
    assert len(json.loads((folder / "result.json").read_text())["per_class"]) == 400


def test_a_folder_that_cannot_take_the_results_is_one_line(appearance_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    out.mkdir()
    with read_only(out):
        result = run_cli("eval", appearance_store, "--zero-shot", "--device", "cpu", "--quiet", "--out", out)
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert f"{out / 'features-test-zero-shot-text4vis'}: cannot write the results (" in result.stderr
    assert list(out.iterdir()) == []


def test_evaluations_into_one_folder_take_turns(appearance_store: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two evaluations started at once into the same --out both write whole results (they chose the same
    folder and clobbered each other's files: "No such file or directory"); one that finds the folder held
    longer than it waits says another evaluation is writing there."""
    out = tmp_path / "shared"
    command = [sys.executable, str(REPO / "cli.py"), "eval", str(appearance_store), "--zero-shot", "--device", "cpu",
               "--quiet", "--json", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    done = [process.communicate(timeout=600) for process in both]
    assert [process.returncode for process in both] == [0, 0], done
    outputs = {json.loads(stdout)["output"] for stdout, _ in done}
    assert outputs == {str(out / "features-test-zero-shot-text4vis")}
    assert json.loads((out / "features-test-zero-shot-text4vis" / "result.json").read_text())["top1"] is not None
    monkeypatch.setattr(report, "LOCK_WAIT_S", 0.2)
    held = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # as an evaluation writing there does
        result = run_cli("eval", appearance_store, "--zero-shot", "--device", "cpu", "--quiet", "--out", out)
    finally:
        os.close(held)
    assert result.code == 2, result
    assert result.stderr == (f"clipcache: error: {out}: another evaluation is writing there; run this one again "
                             "once it is done, or name another folder with --out\n")


def test_a_run_whose_eval_folder_is_a_file_is_named(appearance_store: Path, tmp_path: Path) -> None:
    """--checkpoint RUN writes into RUN/eval: when that is a file, the message names it, not --out."""
    run = tmp_path / "run"
    trained = run_cli("train-head", appearance_store, "--head", "linear", "--out", run, "--epochs", "1",
                      "--min-steps", "0", "--device", "cpu", "--quiet")
    assert trained.code == 0, trained
    (run / "eval").write_text("mine")
    result = run_cli("eval", appearance_store, "--checkpoint", run, "--device", "cpu", "--quiet")
    assert result.code == 2, result
    assert result.stderr == (f"clipcache: error: {run / 'eval'}: is a file; name a folder for the evaluation's "
                             "results with --out\n")
    assert (run / "eval").read_text() == "mine"
