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

from clipcache.cache.location import StoreUrl, parse_store
from clipcache.cache.objects import StoreObjects
from clipcache.cache.place import store_format
from clipcache.cache.schema import UNFINISHED
from conftest import REPO, assert_stores_equal, run_cli
from s3_server import BUCKET, S3Server


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


@pytest.mark.parametrize("to_s3", [True, False], ids=["folder-to-s3", "s3-to-folder"])
def test_killed_copy_resumes_and_equals_an_uninterrupted_one(reference_store: Path, s3: S3Server, tmp_path: Path,
                                                             to_s3: bool) -> None:
    """A real SIGKILL while objects are being written; the rerun skips every one already there with the same bytes
    and copies the rest (and removes a `.partial` file zarr leaves when the kill lands inside a folder's write):
    the source's objects, one for one."""
    source: Path | str = reference_store
    if not to_s3:
        source = _url(s3, "source.zarr")
        _summary(run_cli("copy", reference_store, source, "--quiet"))
    target = _url(s3) if to_s3 else str(tmp_path / "copy.zarr")
    objects = StoreObjects.of(parse_store(target))
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "copy", str(source), target, "--quiet"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and len(objects.keys()) < 6:
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert store_format(parse_store(target)) == UNFINISHED, "the copy finished before it could be killed"
    refused = run_cli("verify", target)
    assert refused.code == 2 and "an unfinished store" in refused.stderr, "an unfinished copy must not pass for a store"
    original = _objects(reference_store)
    there = [key for key, data in _objects(target).items() if key != "zarr.json" and original.get(key) == data]
    assert 0 < len(there) < len(original) - 1
    written, skipped = _summary(run_cli("copy", source, target, "--quiet"))
    assert (written, skipped) == (len(original) - len(there), len(there))
    assert _objects(target) == original
    assert run_cli("verify", target).code == 0


def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x01
    return bytes(damaged)


@pytest.mark.parametrize(("key", "damage", "why"), [
    ("tokens/2/c/1/0/0/0/0", lambda data: _flip(data, 100), "video 2: checksum mismatch"),
    ("tokens/2/c/1/0/0/0/0", lambda data: _flip(data, len(data) - 10), "video 2: shard index damaged"),
    ("pooled/c/1/0/0/0", lambda data: _flip(data, len(data) // 3), "checksum mismatch"),
    ("videos/label/zarr.json", lambda data: data[:len(data) // 2], "metadata is not valid JSON"),
], ids=["shard-inner-chunk", "shard-index", "chunk", "metadata"])
def test_a_damaged_source_is_refused_naming_the_object(reference_store: Path, s3: S3Server, tmp_path: Path,
                                                       key: str, damage, why: str) -> None:
    source = tmp_path / "damaged.zarr"
    shutil.copytree(reference_store, source)
    (source / key).write_bytes(damage((source / key).read_bytes()))
    url = _url(s3)
    array = key.removesuffix("/zarr.json").split("/c/")[0]
    _refused(run_cli("copy", source, url, "--quiet"), f"{source}: {array}: object {key} is damaged ({why}",
             f"clipcache verify {source}", "--repair")
    assert store_format(StoreUrl(url)) == UNFINISHED, "a damaged source must not be published"
    assert run_cli("verify", source).code != 0, "the damage must be one that verify finds too"


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


# Another run holding the destination's lock, in its own process, as an extract would.
HOLD = """
import sys, time
from pathlib import Path
from obstore.store import S3Store
from clipcache.cache.lease import ObjectLock
from clipcache.cache.lock import Holder, StoreLock
where, bucket, key = sys.argv[1:]
lock = ObjectLock(S3Store(bucket), key, where) if where.startswith("s3://") else StoreLock(Path(where))
lock.acquire(Holder.this_process("another run"))
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("to_s3", [True, False], ids=["s3", "folder"])
def test_a_destination_another_run_writes_is_refused(reference_store: Path, s3: S3Server, tmp_path: Path,
                                                     to_s3: bool) -> None:
    target = _url(s3) if to_s3 else str(tmp_path / "copy.zarr")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, target, BUCKET, target.removeprefix(s3.url(""))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        _refused(run_cli("copy", reference_store, target), f"{target}: in use by another clipcache",
                 f"pid {holder.pid}")
        assert store_format(parse_store(target)) is None, "a refused copy wrote into the destination"
    finally:
        holder.kill()
        holder.wait()
    _summary(run_cli("copy", reference_store, target, "--quiet"))  # a dead holder's lock is stale
    assert _objects(target) == _objects(reference_store)


def test_what_is_no_part_of_the_store_is_not_copied(reference_store: Path, s3: S3Server, tmp_path: Path) -> None:
    """A `.partial` file a killed zarr write left in an array's folder, and hidden files, are no part of a store:
    not copied, and no reason to refuse it (the `.partial` bytes fail any checksum)."""
    source = tmp_path / "source.zarr"
    shutil.copytree(reference_store, source)
    (source / "tokens/2/c/0/0/0/0/0.0a1b2c3d.partial").write_bytes(b"half a shard")
    (source / ".notes").mkdir()
    (source / ".notes" / "todo.txt").write_text("mine")
    url = _url(s3)
    result = run_cli("copy", source, url, "--quiet")
    _summary(result)
    assert "1 objects that are no chunk left out" in result.stdout
    assert _objects(url) == _objects(reference_store)
    assert not any(".notes" in key or "partial" in key for key in _listing(s3, url))
