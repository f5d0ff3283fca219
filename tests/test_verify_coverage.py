"""`clipcache verify` covers every array and metadata document of a store, and `extract --repair` restores
what it can: the text table stage two writes (checksummed like the rest), a group's or an array's deleted
zarr.json, a root whose video count disagrees with its arrays. Every fault is caused for real on a store
made by the real writer."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from clipcache.cache.reader import CacheReader
from clipcache.cache.segments import SegmentTable, write_segments
from clipcache.cache.store import open_root
from clipcache.pipeline.train.text_embeddings import text_embeddings
from conftest import run_cli, tiny_extract_args


def _verify(store: Path) -> tuple[int, dict]:
    result = run_cli("verify", store, "--json")
    return result.code, json.loads(result.stdout)


def _problems(report: dict) -> list[tuple[str, str]]:
    return [(d["array"], d["reason"]) for d in report["damage"]]


@pytest.fixture
def store(appearance_store: Path, tmp_path: Path) -> Path:
    """A private copy of a store extracted for real, whose text table stage two then wrote."""
    copy = tmp_path / "features.zarr"
    shutil.copytree(appearance_store, copy, ignore=lambda folder, names: ["text"] if folder == str(appearance_store)
                    else [])
    text_embeddings(CacheReader(copy), "ensemble")
    return copy


def _repair(store: Path, appearance_store: Path) -> "object":
    return run_cli(*tiny_extract_args(appearance_store.parent / "videos", store, "--clips", "2", "--augment", "1",
                                      "--repair"))


def _entry(store: Path) -> Path:
    (entry,) = [p for p in (store / "text").iterdir() if not p.name.startswith(".") and p.is_dir()]
    return entry


def _arrays(store: Path) -> list[str]:
    return [p.parent.relative_to(store).as_posix() for p in store.rglob("zarr.json")
            if json.loads(p.read_text())["node_type"] == "array"]


def test_a_fresh_store_with_its_text_table_is_checksummed_and_intact(store: Path) -> None:
    code, report = _verify(store)
    assert code == 0 and report["checksums"] is True and report["intact"], report
    assert any(name.startswith("text/") for name in _arrays(store))


@pytest.mark.parametrize("fault, reason", [("flip", "checksum mismatch"), ("delete", "chunk file missing")])
def test_a_damaged_text_table_chunk_is_found_and_repaired(store: Path, appearance_store: Path, fault: str,
                                                          reason: str) -> None:
    entry = _entry(store)
    chunk = entry / "embeddings" / "c" / "0" / "0"
    if fault == "flip":
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x10
        chunk.write_bytes(bytes(data))
    else:
        chunk.unlink()
    code, report = _verify(store)
    assert code == 1 and _problems(report) == [(f"text/{entry.name}/embeddings", reason)], report
    repaired = _repair(store, appearance_store)
    assert repaired.code == 0, repaired
    assert _verify(store)[0] == 0 and not entry.exists()  # dropped: stage two computes it again
    np.testing.assert_allclose(np.linalg.norm(text_embeddings(CacheReader(store), "ensemble"), axis=1), 1, atol=1e-3)


def test_a_text_table_written_without_checksums_still_reads(store: Path) -> None:
    """Entries of earlier versions carry no crc32c: they are read as before, and verify says it cannot check them."""
    entry = _entry(store)
    embeddings = zarr.open_array(str(entry / "embeddings"), mode="r")[...]
    shutil.rmtree(entry / "embeddings")
    zarr.open_group(str(entry), mode="a").create_array("embeddings", data=embeddings)  # zarr's defaults, as before
    assert not json.dumps(json.loads((entry / "embeddings" / "zarr.json").read_text())).count("crc32c")
    np.testing.assert_array_equal(text_embeddings(CacheReader(store), "ensemble"), embeddings)
    code, report = _verify(store)
    assert code == 0 and report["checksums"] is False and report["intact"], report



def _metadata(store: Path, node: str) -> Path:
    """The zarr.json of `node`; `text/*` is the class-name entry stage two wrote."""
    if node.startswith("text/*"):
        node = _entry(store).relative_to(store).as_posix() + node.removeprefix("text/*")
    return store / node / "zarr.json"


@pytest.mark.filterwarnings("error::UserWarning")  # each finding is named once, without zarr's warnings on stderr
@pytest.mark.parametrize("node, reason", [
    ("videos", "group metadata missing (its zarr.json was deleted)"),
    ("tokens", "group metadata missing (its zarr.json was deleted)"),
    ("frozen", "group metadata missing (its zarr.json was deleted)"),
    ("text", "group metadata missing (its zarr.json was deleted)"),
    ("text/*", "group metadata missing (its zarr.json was deleted)"),
    ("text/*/embeddings", "array metadata missing (its zarr.json was deleted)"),
    ("frozen/proj", "array metadata missing (its zarr.json was deleted)"),
    ("videos/status", "array missing"),
    ("tokens/2", "array missing"),
])
def test_a_deleted_zarr_json_is_found_and_repaired(store: Path, appearance_store: Path, node: str,
                                                   reason: str) -> None:
    before = {name: open_root(store)[name][...] for name in ("videos/status", "pooled", "frozen/proj")}
    metadata = _metadata(store, node)
    name = metadata.parent.relative_to(store).as_posix()
    metadata.unlink()
    code, report = _verify(store)
    assert code == 1 and (name, reason) in _problems(report), report
    repaired = _repair(store, appearance_store)
    assert repaired.code == 0, repaired
    code, report = _verify(store)
    assert code == 0, report
    root = open_root(store)
    assert sorted(n for n, _ in root["videos"].members()) == sorted(n for n, _ in open_root(appearance_store)[
        "videos"].members())  # listed again
    for array, values in before.items():
        np.testing.assert_array_equal(root[array][...], values, err_msg=array)


def test_a_deleted_root_zarr_json_is_one_line(store: Path, appearance_store: Path) -> None:
    (store / "zarr.json").unlink()
    for result in (run_cli("verify", store), _repair(store, appearance_store)):
        assert result.code == 2 and result.stderr.count("\n") == 1, result
        assert str(store) in result.stderr


@pytest.mark.filterwarnings("error::UserWarning")
def test_what_repair_cannot_restore_is_one_line(store: Path, appearance_store: Path) -> None:
    """The segment table's attributes (classes, sources) are only in its annotation files: without them,
    --repair restores the rest and names the table and the way to restore it."""
    write_segments(store, SegmentTable(video=np.array([0, 1]), start=np.array([0.0, 0.2]), end=np.array([0.5, 0.6]),
                                       label=np.array([0, 0]), ambiguous=np.array([False, False]), classes=("a",),
                                       format="csv"))
    assert _verify(store)[0] == 0
    (store / "segments" / "zarr.json").unlink()
    (store / "videos" / "zarr.json").unlink()
    code, report = _verify(store)
    assert code == 1 and {name for name, _ in _problems(report)} == {"segments", "videos"}, report
    repaired = _repair(store, appearance_store)
    assert repaired.code == 2 and repaired.stderr.count("\n") == 1, repaired
    assert "could not restore segments (group metadata missing" in repaired.stderr
    assert "--annotations" in repaired.stderr
    code, report = _verify(store)
    assert code == 1 and [name for name, _ in _problems(report)] == ["segments"], report  # the rest restored
