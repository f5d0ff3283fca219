"""Checkpoints are recorded so stage two finds them from anywhere, and tags fail fast without network."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.models import file_sha256, resolve_pretrained
from conftest import TINY_CONFIG, run_cli, tiny_extract_args


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import open_clip

    open_clip.add_model_config(TINY_CONFIG)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(open_clip.create_model("tiny-vit").state_dict(), path)
    return path


def test_resolve_pretrained_finds_the_recorded_or_the_moved_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    sha = file_sha256(checkpoint)
    assert resolve_pretrained(str(checkpoint), sha, None) == str(checkpoint)
    assert resolve_pretrained("openai", "", None) == "openai"  # a tag is its own name
    moved = tmp_path / "elsewhere" / "tiny.pt"
    moved.parent.mkdir()
    shutil.copy(checkpoint, moved)
    gone = str(tmp_path / "gone.pt")
    with pytest.raises(ValueError, match=f"checkpoint {gone}, which is no longer there .*--pretrained FILE"):
        resolve_pretrained(gone, sha, None)
    assert resolve_pretrained(gone, sha, moved) == str(moved)
    changed = tmp_path / "changed.pt"
    changed.write_bytes(checkpoint.read_bytes() + b"x")
    with pytest.raises(ValueError, match="which has changed since"):
        resolve_pretrained(str(changed), sha, None)
    with pytest.raises(ValueError, match="not the checkpoint the store was made with"):
        resolve_pretrained(gone, sha, changed)


def test_a_relative_checkpoint_is_recorded_by_absolute_path_and_content(
        checkpoint: Path, demo_videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(checkpoint, work / "tiny.pt")
    monkeypatch.chdir(work)
    store = tmp_path / "s.zarr"
    args = tiny_extract_args(demo_videos, store, "--shard-videos", "9", "--pretrained", "tiny.pt")
    assert run_cli(*args).code == 0
    settings = CacheReader(store).settings
    assert settings.pretrained == str(work / "tiny.pt") and settings.pretrained_sha256 == file_sha256(checkpoint)
    monkeypatch.chdir(tmp_path)  # stage two from another folder finds it
    assert resolve_pretrained(settings.pretrained, settings.pretrained_sha256, None) == str(work / "tiny.pt")
    shutil.move(work / "tiny.pt", tmp_path / "moved.pt")  # the same weights elsewhere: the same store
    gone = run_cli("eval", store, "--zero-shot", "--device", "cpu", "--quiet")  # stage two needs the text tower
    assert gone.code == 2 and gone.stderr.count("\n") == 1 and "tiny.pt, which is no longer there" in gone.stderr
    assert "pass where it is now with --pretrained FILE" in gone.stderr
    found = run_cli("eval", store, "--zero-shot", "--device", "cpu", "--quiet", "--pretrained", tmp_path / "moved.pt")
    assert found.code == 0, found
    prompt = run_cli("train-head", store, "--head", "prompt", "--out", tmp_path / "run", "--epochs", "1", "--min-steps",
                     "0", "--device", "cpu", "--quiet", "--pretrained", tmp_path / "moved.pt")  # the text tower
    assert prompt.code == 0, prompt
    moved = run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "9", "--pretrained", "moved.pt"))
    assert moved.code == 0 and "0 processed" in moved.stdout, moved
    torch.save({k: v + 1 for k, v in torch.load(tmp_path / "moved.pt").items()}, tmp_path / "other.pt")
    other = run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "9", "--pretrained", "other.pt"))
    assert other.code == 2 and "pretrained_sha256: " in other.stderr and "--overwrite" in other.stderr, other
    wrong = run_cli("eval", store, "--zero-shot", "--templates", "ensemble", "--device", "cpu", "--quiet",
                    "--pretrained", tmp_path / "other.pt")  # templates not embedded yet: the tower must load
    assert wrong.code == 2 and "not the checkpoint the store was made with" in wrong.stderr, wrong


_ATTEMPTS: list[tuple] = []  # (host, port) of each connection the process tried while a test listens
_LISTENING: list[bool] = []


def _count_connections(event: str, args: tuple) -> None:
    """A sys.audit hook (they cannot be removed: it records only while a test listens)."""
    if event == "socket.connect" and _LISTENING:
        _ATTEMPTS.append(args[1])


sys.addaudithook(_count_connections)


def test_a_tag_without_network_fails_at_once_with_one_line(demo_videos: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty download cache and a download server that refuses connections (port 9 here), so the test
    means the same on a machine with network (this one has none: there the real server is unreachable). What
    is asserted is what the tool does, not how long it takes: it gives up after the first refused
    connection(s) instead of retrying with back-off (it retried for over a minute and printed three
    tracebacks)."""
    import huggingface_hub

    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL cache, ~/.cache/clip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    _LISTENING.append(True)
    try:
        result = run_cli("extract", demo_videos, tmp_path / "s.zarr", "--model", "ViT-B-32", "--pretrained",
                         "openai", "--device", "cpu", "--quiet")
    finally:
        _LISTENING.clear()
    refused = [address for address in _ATTEMPTS if tuple(address)[-1] == 9]
    assert 1 <= len(refused) <= 2, _ATTEMPTS  # tried, then gave up: no retries
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert "the weights of ViT-B-32 (openai) are not in the local cache and cannot be downloaded: 127.0.0.1 " \
           "cannot be reached (no network?)" in result.stderr and "--pretrained FILE" in result.stderr
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # offline by the hub's own switch
    offline = run_cli("extract", demo_videos, tmp_path / "s.zarr", "--model", "ViT-B-32", "--pretrained", "openai",
                      "--device", "cpu", "--quiet")
    assert offline.code == 2 and "offline mode is set (HF_HUB_OFFLINE)" in offline.stderr
