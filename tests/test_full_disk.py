"""A full disk is the machine's failure, not bad input: one line naming where and how to go on, exit 1, in
both stages, with nothing finished lost. The disk is a real small tmpfs filled to its last byte."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import PENDING
from conftest import assert_stores_equal, run_cli, tiny_extract_args
from mounts import fill, mounted


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs for the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=4m", "tmpfs", folder):
        yield folder


def test_a_full_disk_during_extract_is_one_line_and_the_run_resumes(reference_store: Path, demo_videos: Path,
                                                                    disk: Path) -> None:
    store = disk / "s.zarr"
    args = tiny_extract_args(demo_videos, store, "--shard-videos", "2")
    assert run_cli(*args, "--shard", "0/2").code == 0  # half the groups written; then the disk fills up
    (disk / "reserve").write_bytes(b"\0" * 16384)
    fill(disk / "filler")
    (disk / "reserve").unlink()  # four pages: room for the run's lock, not for a group of features
    full = run_cli(*args)
    assert full.code == 1 and full.stderr.count("\n") == 1, full
    assert full.stderr.startswith(f"clipcache: error: {store}: no space left on the device"), full
    assert "the finished shard groups are kept: make room and rerun the same command to resume" in full.stderr
    assert (CacheReader(store).status == PENDING).any() and run_cli("verify", store).code == 0
    (disk / "filler").unlink()
    resumed = run_cli(*args)
    assert resumed.code == 0, resumed
    assert_stores_equal(store, reference_store)


def test_a_full_disk_when_eval_writes_its_results_is_exit_1(appearance_store: Path, disk: Path) -> None:
    fill(disk / "filler")
    result = run_cli("eval", appearance_store, "--zero-shot", "--device", "cpu", "--quiet", "--out", disk / "zs")
    assert result.code == 1 and result.stderr.count("\n") == 1, result
    assert str(disk / "zs") in result.stderr and "No space left on device" in result.stderr
