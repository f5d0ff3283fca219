"""Retrieval runs and scores that would mislead are refused or reported: a batch that cannot form negatives,
caption rows given twice."""
from __future__ import annotations

from pathlib import Path

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
