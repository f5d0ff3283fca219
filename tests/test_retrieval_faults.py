"""Retrieval runs and scores that would mislead are refused or reported: a batch that cannot form negatives,
identical scores (one sentence for every video), caption rows given twice."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from clipcache.pipeline.evaluate.retrieval import METRICS
from conftest import run_cli
from retrieval_data import CaptionedStore, captioned_store  # noqa: F401

CPU = ("--device", "cpu", "--quiet")


def test_a_retrieval_batch_without_negatives_is_refused(captioned_store: CaptionedStore,  # noqa: F811
                                                        tmp_path: Path) -> None:
    """One video-caption pair has no negatives: its contrastive loss is always 0 and the run learns nothing."""
    out = tmp_path / "run"
    result = run_cli("train-head", captioned_store.store, "--head", "prompt", "--captions", captioned_store.captions,
                     "--out", out, "--batch-size", "1", "--epochs", "1", "--min-steps", "1", *CPU)
    assert result.code == 2, result
    assert result.stderr.strip() == ("clipcache: error: --batch-size 1: a contrastive batch needs at least 2 "
                                     "video-caption pairs (each pair's negatives are the others; alone its loss "
                                     "is always 0)"), result
    assert not out.exists()


def test_a_single_captioned_training_video_is_refused(captioned_store: CaptionedStore,  # noqa: F811
                                                      tmp_path: Path) -> None:
    """A training set of one video is one batch of one pair, whatever --batch-size says."""
    rows = captioned_store.captions.read_text().splitlines()
    train = [row for row in rows[1:] if row.startswith("train/")][:1]
    val = [row for row in rows[1:] if row.startswith("val/")]
    captions = tmp_path / "one.csv"
    captions.write_text("\n".join([rows[0], *train, *val]) + "\n")
    result = run_cli("train-head", captioned_store.store, "--head", "prompt", "--captions", captions,
                     "--out", tmp_path / "run", "--epochs", "1", "--min-steps", "1", *CPU)
    assert result.code == 2, result
    assert result.stderr.strip() == (f"clipcache: error: {captions}: 1 captioned training video; contrastive "
                                     "training needs at least 2 (each pair's negatives are the others)"), result


def _zero_shot(data: CaptionedStore, captions: Path, out: Path) -> tuple[dict, str]:
    result = run_cli("eval", data.store, "--zero-shot", "--captions", captions, "--device", "cpu", "--json",
                     "--out", out)
    assert result.code == 0, result
    return json.loads(result.stdout), result.stderr


def _test_rows(data: CaptionedStore) -> list[list[str]]:
    with data.captions.open(newline="", encoding="utf-8") as handle:
        return [row for row in list(csv.reader(handle))[1:] if row[0].startswith("test/")]


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("video", "caption"), *rows])
    return path


def test_one_sentence_shared_by_every_video_is_not_a_perfect_score(captioned_store: CaptionedStore,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    """Every test video captioned "a thing moves": the sentences score identically against each video, so no
    video can find its own; ties counted in its favour made v2t R@1 1.0 and MdR 1."""
    videos = list(dict.fromkeys(row[0] for row in _test_rows(captioned_store)))
    captions = _write(tmp_path / "same.csv", [[video, "a thing moves"] for video in videos])
    record, _ = _zero_shot(captioned_store, captions, tmp_path / "eval")
    assert record["v2t_r1"] == 0 and record["v2t_median_rank"] == (len(videos) + 1) / 2, record
    assert record["v2t_tied_queries"] == len(videos) and record["t2v_tied_queries"] == 0
    assert "mean position" in record["ranking"]
    printed = run_cli("eval", captioned_store.store, "--zero-shot", "--captions", captions, "--device", "cpu",
                      "--out", tmp_path / "again")
    assert "v2t R@1 0.0000" in printed.stdout and f"({len(videos)} queries tied)" in printed.stdout, printed


def test_repeated_caption_rows_are_counted_once_and_reported(captioned_store: CaptionedStore,  # noqa: F811
                                                             tmp_path: Path) -> None:
    rows = _test_rows(captioned_store)
    once, _ = _zero_shot(captioned_store, _write(tmp_path / "once.csv", rows), tmp_path / "once")
    repeated = _write(tmp_path / "twice.csv", [*rows, rows[0], rows[3], rows[0]])
    twice, err = _zero_shot(captioned_store, repeated, tmp_path / "twice")
    assert twice["repeated_captions"] == 3 and once["repeated_captions"] == 0
    assert twice["captions"] == once["captions"] == len(rows)
    for key in METRICS:
        assert twice[key] == once[key], key
    assert err == (f"{repeated}: 3 caption rows repeating an earlier row (the same video and sentence, counted "
                   "once) left out (result.json names them)\n"), err
