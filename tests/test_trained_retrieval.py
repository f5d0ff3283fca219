"""Efficient-Prompt's trained text-video retrieval from the cache (`train-head --head prompt --captions`), on
generated videos whose captions need the motion's direction: with its default options it beats CLIP zero-shot on
held-out videos and reaches text-to-video R@1 >= 0.8 there; a run killed midway resumes to the uninterrupted
weights; each video's caption is drawn from (seed, pass) only; a head that cannot retrieve, a changed or missing
caption file and a resume with other captions are refused with one line."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loop import train_head, with_recipe
from clipcache.pipeline.train.task import RetrievalTask
from conftest import run_cli
from retrieval_data import CaptionedStore, captioned_store  # noqa: F401 - the session's captioned store
from training_runs import SHORT, assert_same_run, command, epochs_written, kill_after

CPU = ("--device", "cpu", "--quiet")


def _json(*args: str | Path) -> dict:
    result = run_cli(*args, *CPU, "--json")
    assert result.code == 0, result
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def trained(captioned_store: CaptionedStore, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
            ) -> tuple[Path, dict, dict]:
    """One run with the default options, scored on its test split, and zero-shot CLIP on the same split."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli("train-head", captioned_store.store, "--head", "prompt", "--captions", captioned_store.captions,
                     "--out", out, *CPU)
    assert result.code == 0 and "best val t2v R@1" in result.stdout, result
    record = _json("eval", captioned_store.store, "--checkpoint", out)
    zero_shot = _json("eval", captioned_store.store, "--zero-shot", "--captions", captioned_store.captions, "--out",
                      out.parent / "zero-shot")
    return out, record, zero_shot


def test_trained_retrieval_beats_zero_shot_on_held_out_videos(trained: tuple[Path, dict, dict],
                                                               captioned_store: CaptionedStore) -> None:  # noqa: F811
    out, record, zero_shot = trained
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "retrieval" and run["captions"]["captions"] == str(captioned_store.captions.resolve())
    assert run["captions_used"] == {"train": 48, "val": 16}  # 24 + 8 videos, two captions each
    assert record["split"] == "test" and record["held_out"] is True and record["method"] == "head prompt"
    assert (record["videos"], record["captions"]) == (zero_shot["videos"], zero_shot["captions"]) == (8, 16)
    print(f"test t2v R@1 {record['t2v_r1']:.4f} v2t R@1 {record['v2t_r1']:.4f}; zero-shot t2v R@1 "
          f"{zero_shot['t2v_r1']:.4f} v2t R@1 {zero_shot['v2t_r1']:.4f}; best epoch {run['best']['epoch']}")
    assert record["t2v_r1"] >= 0.8 and record["t2v_r1"] > zero_shot["t2v_r1"]
    with (Path(record["output"]) / "ranks.csv").open(newline="", encoding="utf-8") as handle:
        ranks = list(csv.DictReader(handle))
    assert [row["direction"] for row in ranks] == ["t2v"] * 16 + ["v2t"] * 8
    t2v = np.array([int(row["rank"]) for row in ranks[:16]])
    assert np.mean(t2v == 1) == record["t2v_r1"] and all(row["path"].startswith("test/") for row in ranks)


def test_captions_are_drawn_per_pass_from_the_seed_only(captioned_store: CaptionedStore,  # noqa: F811
                                                        trained: tuple[Path, dict, dict], tmp_path: Path) -> None:
    """Two tasks built apart draw the same captions for a pass; the draws change with the pass and, over
    passes, reach each of a video's captions and only its own."""
    reader = CacheReader(captioned_store.store)
    head = build_for_store(reader, "prompt", {}, 8, "text4vis", None, torch.device("cpu"))
    cfg = with_recipe(TrainConfig(store=captioned_store.store, head="prompt", captions=captioned_store.captions,
                                  out=tmp_path))
    tasks = [RetrievalTask(cfg, reader) for _ in range(2)]
    draws = []
    for task in tasks:
        splits = task.splits()
        train_set = CacheDataset(reader, head.request, splits["train"], 8, train=True)
        task.attach(head, train_set, CacheDataset(reader, head.request, splits["val"], 8, train=False), True)
        passes = []
        for index in range(20):
            task.set_pass(index)
            passes.append(task.drawn.copy())
        draws.append(np.stack(passes))
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0][0], draws[0][1])
    paths = reader.column("path")[train_set.videos]
    sentences = np.array(tasks[0].sentences)
    own = {}
    with captioned_store.captions.open(newline="", encoding="utf-8") as handle:
        for video, caption in list(csv.reader(handle))[1:]:
            own.setdefault(video, set()).add(caption)
    for v, path in enumerate(paths):
        assert set(sentences[draws[0][:, v]]) == own[path]  # both phrasings drawn, nothing else


def test_a_run_killed_midway_resumes_to_the_uninterrupted_weights(captioned_store: CaptionedStore,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    """SIGKILL once two epochs are finished; `--resume` repeats the rest, caption draws included, exactly. Then
    the run's caption file is changed: resuming and evaluating are refused, and a copy of the original names it."""
    captions = tmp_path / "captions.csv"
    shutil.copy(captioned_store.captions, captions)
    short = {**SHORT, "captions": captions}
    train_head(TrainConfig(store=captioned_store.store, head="prompt", out=tmp_path / "whole", **short))
    cut = tmp_path / "cut"
    kill_after(command(captioned_store.store, cut, "prompt", "--captions", str(captions)), cut / "metrics.jsonl", 2)
    assert 2 <= epochs_written(cut / "metrics.jsonl") < SHORT["epochs"]
    train_head(TrainConfig(store=captioned_store.store, head="prompt", out=cut, resume=True, **short))
    assert_same_run(tmp_path / "whole", cut)

    kept = tmp_path / "moved" / "kept.csv"
    kept.parent.mkdir()
    shutil.move(captions, kept)
    gone = run_cli("eval", captioned_store.store, "--checkpoint", cut, *CPU)
    assert gone.code == 2 and gone.stderr.count("\n") == 1, gone
    assert f"{cut}: its caption file {captions} is gone; name it (or a copy) with --captions" in gone.stderr
    moved = _json("eval", captioned_store.store, "--checkpoint", cut, "--captions", kept, "--out", tmp_path / "e")
    assert moved["held_out"] is True and moved["videos"] == 8
    captions.write_text(kept.read_text().replace("moves left", "goes left"))
    changed = run_cli("eval", captioned_store.store, "--checkpoint", cut, *CPU)
    assert changed.code == 2 and changed.stderr.count("\n") == 1, changed
    assert f"{captions}: changed since {cut} was trained on it" in changed.stderr
    resumed = run_cli(*command(captioned_store.store, cut, "prompt", "--captions", str(captions), "--resume")[2:])
    assert resumed.code == 2 and "was trained with other captions" in resumed.stderr, resumed


def test_heads_and_runs_that_cannot_retrieve_are_refused(captioned_store: CaptionedStore,  # noqa: F811
                                                         tmp_path: Path) -> None:
    result = run_cli("train-head", captioned_store.store, "--head", "text", "--captions", captioned_store.captions,
                     "--out", tmp_path / "run", *CPU)
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert "--captions trains text-video retrieval, which the text head cannot; heads that can: prompt" in result.stderr
    assert not (tmp_path / "run").exists()
    classifier = tmp_path / "linear"
    assert run_cli("train-head", captioned_store.store, "--head", "linear", "--out", classifier, "--epochs", "1",
                   *CPU).code == 0
    result = run_cli("eval", captioned_store.store, "--checkpoint", classifier, "--captions", captioned_store.captions,
                     *CPU)
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert f"{classifier}: a classification run; --captions scores retrieval runs" in result.stderr


def test_the_loss_is_symmetric_infonce_with_identical_sentences_as_shared_positives(
        captioned_store: CaptionedStore, tmp_path: Path) -> None:  # noqa: F811
    """Three videos, the first two drawing the same sentence: each of them has both as positives (half the
    target each), in both directions; computed here from the head's embeddings with explicit softmaxes."""
    reader = CacheReader(captioned_store.store)
    head = build_for_store(reader, "prompt", {}, 8, "text4vis", None, torch.device("cpu"))
    task = RetrievalTask(with_recipe(TrainConfig(store=captioned_store.store, head="prompt", out=tmp_path,
                                                 captions=captioned_store.captions)), reader)
    splits = task.splits()
    train_set = CacheDataset(reader, head.request, splits["train"], 8, train=True)
    task.attach(head, train_set, CacheDataset(reader, head.request, splits["val"], 8, train=False), True)
    task.drawn = np.zeros(len(train_set.videos), np.int64)
    task.drawn[2] = 3
    batch = {k: v.float() if v.is_floating_point() else v for k, v in train_set[[0, 1, 2]].items()}
    with torch.no_grad():
        loss = task.loss(head, batch).item()
        video = torch.nn.functional.normalize(head.encode_video(batch), dim=-1).double()
        text = torch.nn.functional.normalize(head.encode_text(task.layout[[0, 0, 3]]), dim=-1).double()
    logits = head.retrieval_scale * video @ text.T
    target = torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], dtype=torch.float64)
    v2t = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
    t2v = -(target * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    assert loss == pytest.approx(((v2t + t2v) / 2).item(), rel=1e-5)
    assert abs(v2t - t2v) > 1e-6  # the two directions differ: both are counted


def test_other_captions_are_scored_and_long_ones_cut_with_one_line(trained: tuple[Path, dict, dict],
                                                                    captioned_store: CaptionedStore,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    """`--captions` with other content scores those captions; the run's own file, still at hand, tells that the
    videos are held out. Captions longer than the context leaves beside the prompts are cut, said once."""
    out, _, _ = trained
    other = tmp_path / "long.csv"
    lines = captioned_store.captions.read_text(encoding="utf-8").splitlines()
    other.write_text("\n".join(line + " very slowly and very smoothly" if line.startswith("test/") and "slides" in line
                               else line for line in lines) + "\n", encoding="utf-8")
    result = run_cli("eval", captioned_store.store, "--checkpoint", out, "--captions", other, "--device", "cpu",
                     "--json", "--out", tmp_path / "eval")
    assert result.code == 0, result
    record = json.loads(result.stdout)
    assert record["options"]["captions"] == str(other) and record["held_out"] is True and record["captions"] == 16
    assert result.stderr.count("cut to fit") == 1, result.stderr  # beside the progress bars
    assert f"{other}: 8 of 16 captions are longer than the 8 tokens the text context leaves beside the prompt " \
           "vectors; cut to fit\n" in result.stderr
