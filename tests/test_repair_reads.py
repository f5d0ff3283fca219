"""`extract --repair` on shards damaged for real (cut short, index flipped): the repair rewrites the damaged
groups without reading what it replaces, so it finishes and the store equals an undamaged extraction."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clipcache.cache.store import open_root
from conftest import assert_stores_equal, run_cli, tiny_extract_args


def _cut(shard: Path) -> None:
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) // 2])


def _flip_index(shard: Path) -> None:
    """Flip a byte of the shard's index (its last bytes: offsets and lengths, then their crc32c)."""
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x01
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_cut, _flip_index], ids=["cut short", "index flipped"])
@pytest.mark.parametrize("file, group", [("tokens/{layer}/c/1/0/0/0/0", 1), ("tokens/{layer}/c/4/0/0/0/0", 4),
                                         ("videos/status/c/4", 4)],
                         ids=["a token shard", "the last group's token shard, shorter than the shard",
                              "the last group's status chunk, shorter than the chunk"])
def test_repair_rewrites_damaged_files_without_reading_them(reference_store: Path, demo_videos: Path, tmp_path: Path,
                                                            damage, file: str, group: int) -> None:
    store = tmp_path / "damaged.zarr"
    shutil.copytree(reference_store, store)
    damage(store / file.format(layer=open_root(store).attrs["layers"][-1]))
    assert run_cli("verify", store).code == 1
    repaired = run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "2"), "--repair")
    assert repaired.code == 0 and f"{2 if group < 4 else 1} processed" in repaired.stdout, repaired
    assert run_cli("verify", store).code == 0
    assert_stores_equal(store, reference_store)
