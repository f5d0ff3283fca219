"""`clipcache info` shows the classes with their done videos per split, and each split's status counts."""
from __future__ import annotations

from pathlib import Path

from clipcache.cache.info import store_info
from clipcache.cache.schema import FAILED
from conftest import run_cli, synthetic_store


def test_info_counts_each_split_and_each_class_per_split(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", status={1: FAILED})  # video 1: train, class b
    info = store_info(store)
    assert info["splits"] == {"test": {"done": 3, "failed": 0, "pending": 0, "missing": 0},
                              "train": {"done": 5, "failed": 1, "pending": 0, "missing": 0},
                              "val": {"done": 3, "failed": 0, "pending": 0, "missing": 0}}
    assert info["class_names"] == {"a": {"test": 1, "train": 2, "val": 1}, "b": {"test": 1, "train": 1, "val": 1},
                                   "c": {"test": 1, "train": 2, "val": 1}}
    shown = run_cli("info", store)
    assert shown.code == 0, shown
    lines = shown.stdout.splitlines()
    assert "splits       test: 3 done, 0 failed, 0 pending, 0 missing" in lines
    assert "             train: 5 done, 1 failed, 0 pending, 0 missing" in lines
    assert "classes      3; done videos per split:" in lines
    assert "             b  test 1  train 1  val 1" in lines


def test_a_store_without_splits_counts_its_videos_under_none(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=6, splits=[""] * 6)
    info = store_info(store)
    assert info["splits"] == {"(none)": {"done": 6, "failed": 0, "pending": 0, "missing": 0}}
    assert info["class_names"]["a"] == {"(none)": 2}
