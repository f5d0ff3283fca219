"""`clipcache copy` between a folder and a real local S3 server (moto, tests/s3_server.py), with real stores made by a
tiny extraction, real damage, and a real SIGKILL."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import obstore
import pytest
from s3_server import S3Server

from clipcache.cache.location import StoreUrl, parse_store
from clipcache.cache.objects import StoreObjects
from clipcache.cache.place import UNFINISHED, store_format
from conftest import REPO, assert_stores_equal, run_cli


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server's credentials in this process's environment (and so in the CLI processes it starts)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


def _url(server: S3Server, name: str = "copy.zarr") -> str:
    return server.url(f"{server.prefix()}/{name}")


def _objects(store: Path | str) -> dict[str, bytes]:
    """Every object of a store by key, what a copy must reproduce (keys with a hidden part are no part of it)."""
    objects = StoreObjects.of(parse_store(store))
    return {key: objects.read(key) for key in objects.keys() if not any(p.startswith(".") for p in key.split("/"))}


def _listing(server: S3Server, url: str) -> list[str]:
    """Every key under the store's prefix and beside it (its lock), straight from the server."""
    parent = url.removeprefix(server.url("")).rsplit("/", 1)[0]
    return sorted(entry["path"] for entry in obstore.list(server.store(), prefix=f"{parent}/").collect())


def _summary(result) -> tuple[int, int]:
    """(objects written, objects skipped) from the one-line summary."""
    assert result.code == 0, result
    assert len(result.stdout.strip().splitlines()) == 1, result
    found = re.search(r": (\d+) objects \(.*\) written, (\d+) already there", result.stdout)
    assert found, result
    return int(found[1]), int(found[2])


def _refused(result, *words: str) -> None:
    line = result.stderr.strip()
    assert result.code == 2 and len(line.splitlines()) == 1 and line.startswith("clipcache: error: "), result
    for word in words:
        assert word in line, result


def test_folder_to_s3_and_back(reference_store: Path, s3: S3Server, tmp_path: Path) -> None:
    url, back = _url(s3), tmp_path / "back.zarr"
    written, skipped = _summary(run_cli("copy", reference_store, url, "--quiet"))
    original = _objects(reference_store)
    assert (written, skipped) == (len(original), 0)
    assert _objects(url) == original
    assert not any(".lock" in key for key in _listing(s3, url)), "the copy left its lock behind"
    assert run_cli("verify", url).code == 0
    _summary(run_cli("copy", url, back, "--quiet"))
    assert _objects(back) == original
    assert_stores_equal(back, reference_store)
    assert run_cli("verify", back).code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.zarr"], "the folder copy left its lock behind"


def test_killed_copy_resumes_and_equals_an_uninterrupted_one(reference_store: Path, s3: S3Server) -> None:
    """A real SIGKILL while objects are being written; the rerun skips every one already there and copies the
    rest, and the store is the source's object for object."""
    url = _url(s3)
    objects = StoreObjects.of(StoreUrl(url))
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "copy", str(reference_store), url, "--quiet"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and len(objects.keys()) < 6:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert store_format(StoreUrl(url)) == UNFINISHED, "the copy finished before it could be killed"
    assert run_cli("verify", url).code == 2, "an unfinished copy must not pass for a store"
    there = [key for key in objects.keys() if key != "zarr.json"]
    original = _objects(reference_store)
    assert 0 < len(there) < len(original) - 1
    written, skipped = _summary(run_cli("copy", reference_store, url, "--quiet"))
    assert (written, skipped) == (len(original) - len(there), len(there))
    assert _objects(url) == original
    assert run_cli("verify", url).code == 0


@pytest.mark.parametrize("array", ["tokens/2", "pooled"])
def test_a_damaged_source_chunk_is_refused_naming_it(reference_store: Path, s3: S3Server, tmp_path: Path,
                                                       array: str) -> None:
    source = tmp_path / "damaged.zarr"
    shutil.copytree(reference_store, source)
    chunk = next(p for p in sorted((source / array).rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3] ^= 0x01
    chunk.write_bytes(bytes(data))
    url = _url(s3)
    result = run_cli("copy", source, url, "--quiet")
    key = chunk.relative_to(source).as_posix()
    _refused(result, f"{source}: {array}: object {key} is damaged", "clipcache verify", "--repair")
    assert store_format(StoreUrl(url)) in (None, UNFINISHED), "a damaged source must not be published"


def test_refusals_change_nothing(reference_store: Path, s3: S3Server, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _refused(run_cli("copy", reference_store, other), f"{other}: exists, is not empty and is not a clipcache store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"] and sorted(os.listdir(other)) == ["notes.txt"]

    url = _url(s3)
    obstore.put(s3.store(), f"{url.removeprefix(s3.url(''))}/notes.txt", b"mine")
    before = _listing(s3, url)
    _refused(run_cli("copy", reference_store, url), f"{url}: holds objects but no clipcache store")
    assert _listing(s3, url) == before

    for source, why in ((tmp_path / "absent.zarr", "no store there"), (other, "is not a clipcache store"),
                        (reference_store, "is the source store"), (_url(s3), "no store there")):
        _refused(run_cli("copy", source, tmp_path / "new.zarr" if source != reference_store else reference_store),
                 why)
    _refused(run_cli("copy", reference_store, reference_store / "inside.zarr"), "is the source store")
    assert not (tmp_path / "new.zarr").exists() and not (reference_store / "inside.zarr").exists()

    unfinished = tmp_path / "unfinished.zarr"
    shutil.copytree(reference_store, unfinished)
    root = json.loads((unfinished / "zarr.json").read_bytes())
    (unfinished / "zarr.json").write_text(json.dumps({**root, "attributes": {"format": UNFINISHED}}))
    _refused(run_cli("copy", unfinished, tmp_path / "new.zarr"), f"{unfinished}: an unfinished store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "unfinished.zarr"]


def test_a_finished_destination_is_replaced_only_with_overwrite(reference_store: Path, s3: S3Server,
                                                                 tmp_path: Path) -> None:
    url, folder = _url(s3), tmp_path / "copy.zarr"
    _summary(run_cli("copy", reference_store, url, "--quiet"))
    _summary(run_cli("copy", url, folder, "--quiet"))
    (folder / "tokens" / "stray").write_bytes(b"left by someone")  # a replaced store is gone whole, strays too
    for target in (url, folder):
        before = _objects(target)
        _refused(run_cli("copy", reference_store, target), f"{target}: a clipcache store is there already",
                 "--overwrite")
        assert _objects(target) == before
        written, skipped = _summary(run_cli("copy", reference_store, target, "--overwrite", "--quiet"))
        assert (written, skipped) == (len(_objects(reference_store)), 0)
        assert _objects(target) == _objects(reference_store)
