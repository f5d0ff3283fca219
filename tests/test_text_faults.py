"""Class-name embeddings under real faults: a writer killed between an entry's metadata and its data, a
damaged entry left by an older version, a full disk (a small tmpfs) and a read-only store (a read-only
bind mount as root, permission bits otherwise). Nothing half-written is ever used, and stage two works
without writing to the store."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipcache.cache.reader import CacheReader
from clipcache.cache.text import PARTIAL, read_text_embeddings, text_key
from clipcache.pipeline.train.text_embeddings import TEMPLATE_SETS, class_names, text_embeddings, user_cache
from conftest import run_cli
from mounts import fill, mounted, read_only

# Runs in a child process (zarr and numpy only, so it starts fast): publishes embeddings into a store under a
# key, and kills itself with SIGKILL when zarr is about to write the array's data, its metadata on disk.
KILLED_WRITER = """
import os, signal, sys
import numpy as np
import zarr.storage
from clipcache.cache.text import write_text_embeddings

write = zarr.storage.LocalStore.set

async def set_or_die(self, key, value):
    if key.endswith("embeddings/c/0/0"):
        os.kill(os.getpid(), signal.SIGKILL)
    await write(self, key, value)

zarr.storage.LocalStore.set = set_or_die
store, key, embeddings = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
write_text_embeddings(store, key, embeddings, ["{}"], [str(i) for i in range(len(embeddings))])
"""


@pytest.fixture(scope="module")
def reference(appearance_store: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The ensemble embeddings computed undisturbed, on a copy (test_text checks them against open_clip)."""
    copy = tmp_path_factory.mktemp("ref") / "features.zarr"
    shutil.copytree(appearance_store, copy, ignore=lambda folder, names: ["text"] if folder == str(appearance_store)
                    else [])
    return text_embeddings(CacheReader(copy), "ensemble")


@pytest.fixture
def store(appearance_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the store without class-name embeddings, and a private user cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    copy = tmp_path / "data" / "features.zarr"
    shutil.copytree(appearance_store, copy, ignore=lambda folder, names: ["text"] if folder == str(appearance_store)
                    else [])
    return copy


def _key(reader: CacheReader, templates: str = "ensemble") -> str:
    return text_key(templates, TEMPLATE_SETS[templates], class_names(reader))


def _entries(store: Path) -> list[str]:
    return json.loads(run_cli("info", store, "--json").stdout)["text_templates"]


@pytest.mark.filterwarnings("ignore:Object at .partial-")  # zarr notes the dead writer's folder while it is there
def test_a_writer_killed_mid_entry_leaves_nothing_readers_use(store: Path, reference: np.ndarray,
                                                               tmp_path: Path) -> None:
    reader = CacheReader(store)
    np.save(tmp_path / "unit.npy", np.eye(*reference.shape, dtype=np.float32))  # would be read if published
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(store), _key(reader), str(tmp_path / "unit.npy")],
                            capture_output=True, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = list((store / "text").glob(f"{PARTIAL}*"))
    assert len(leftovers) == 1 and _entries(store) == []  # the partial folder is no entry
    np.testing.assert_allclose(text_embeddings(reader, "ensemble"), reference, atol=1e-6)
    assert _entries(store) == [_key(reader)] and not leftovers[0].exists()  # the dead writer's folder is gone


def test_a_half_written_entry_of_an_older_version_is_recomputed(store: Path, reference: np.ndarray,
                                                                capsys: pytest.CaptureFixture) -> None:
    reader = CacheReader(store)
    text_embeddings(reader, "ensemble")
    chunk = store / "text" / _key(reader) / "embeddings" / "c" / "0" / "0"
    chunk.unlink()  # as an in-place writer killed between metadata and data left it: reads as zeros
    capsys.readouterr()
    np.testing.assert_allclose(text_embeddings(reader, "ensemble"), reference, atol=1e-6)
    assert f"text/{_key(reader)} is damaged (3 of 3 rows are not unit vectors); computing it again" in \
        capsys.readouterr().err
    assert chunk.is_file()  # replaced in the store
    chunk.write_bytes(b"\x00garbage")  # a damaged file: the codec fails
    np.testing.assert_allclose(text_embeddings(reader, "ensemble"), reference, atol=1e-6)
    assert "is damaged (unreadable" in capsys.readouterr().err


def test_a_full_disk_leaves_the_store_without_an_entry(store: Path, reference: np.ndarray, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    disk = tmp_path / "small-disk"
    disk.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=4m", "tmpfs", disk):
        shutil.copytree(store, disk / "features.zarr")
        filler = disk / "filler"
        fill(filler)
        reader = CacheReader(disk / "features.zarr")
        np.testing.assert_allclose(text_embeddings(reader, "ensemble"), reference, atol=1e-6)
        err = capsys.readouterr().err
        assert "cannot keep class-name embeddings in the store (No space left on device); kept in" in err
        assert _entries(disk / "features.zarr") == [] and not list((disk / "features.zarr" / "text").glob("*/"))
        filler.unlink()
        np.testing.assert_allclose(text_embeddings(reader, "ensemble"), reference, atol=1e-6)  # the user cache
        assert capsys.readouterr().err == "" and (user_cache(reader.settings) / "text" / _key(reader)).is_dir()


def test_train_and_eval_on_a_read_only_store(store: Path, reference: np.ndarray, tmp_path: Path) -> None:
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with read_only(store):
        trained = run_cli("train-head", store, "--head", "text", "--out", tmp_path / "run", "--epochs", "1",
                          "--device", "cpu")
        assert trained.code == 0, trained
        evaluated = run_cli("eval", store, "--checkpoint", tmp_path / "run", "--device", "cpu", "--quiet")
        assert evaluated.code == 0, evaluated
        zero_shot = run_cli("eval", store, "--zero-shot", "--templates", "ensemble", "--device", "cpu", "--quiet",
                            "--out", tmp_path / "zs")
        assert zero_shot.code == 0, zero_shot
    assert "cannot keep class-name embeddings in the store (Read-only file system" in trained.stderr or \
        "cannot keep class-name embeddings in the store (Permission denied" in trained.stderr
    assert "cannot keep" not in evaluated.stderr  # the second use reads the user cache
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # nothing written into the store
    cached, _ = read_text_embeddings(user_cache(CacheReader(store).settings), _key(CacheReader(store)),
                                           len(reference))
    np.testing.assert_allclose(cached, reference, atol=1e-6)  # what zero-shot used, as a writable store has it
