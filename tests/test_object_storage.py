"""Stores in object storage: `extract`, `info`, `verify`, `--repair` and stage two on an `s3://` URL, against a
real S3 server on localhost (moto's, tests/s3_server.py), compared with the same store made in a folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import obstore
import pytest

from clipcache.cache.schema import DONE, PENDING
from clipcache.cache.segments import read_segments
from clipcache.cache.store import open_root
from clipcache.pipeline.demo.synthetic import shape_frames, write_video
from conftest import REPO, TINY_CONFIG, assert_stores_equal, run_cli, run_cli_process, tiny_extract_args, torchrun
from s3_server import BUCKET, S3Server
from untrimmed_videos import annotated_store

TRAIN = ("--head", "linear", "--epochs", "2", "--min-steps", "6", "--device", "cpu", "--quiet")


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh prefix in the bucket, with the full-access credentials in the environment (as a user sets them),
    and a user cache of this test's own."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return s3_server.url(s3_server.prefix())


@pytest.fixture
def bucket_store(bucket: str, demo_videos: Path) -> str:
    url = f"{bucket}/ref.zarr"
    result = run_cli(*tiny_extract_args(demo_videos, url, "--shard-videos", "2"))
    assert result.code == 0, result
    return url


def test_extract_into_a_bucket_gives_the_folders_bytes(bucket_store: str, reference_store: Path) -> None:
    assert_stores_equal(bucket_store, reference_store)
    info = run_cli("info", bucket_store, "--json")
    assert info.code == 0, info
    assert json.loads(info.stdout)["done"] == json.loads(run_cli("info", reference_store, "--json").stdout)["done"]
    assert run_cli("verify", bucket_store).code == 0
    again = run_cli(*tiny_extract_args(Path(REPO / "nowhere"), bucket_store, "--shard-videos", "2"))
    assert again.code == 2  # another input list: the store's identity refuses it, nothing changed
    assert_stores_equal(bucket_store, reference_store)


def test_training_and_evaluation_from_a_bucket_equal_the_folder(bucket_store: str, reference_store: Path,
                                                                tmp_path: Path) -> None:
    results = []
    for store, name in ((bucket_store, "bucket"), (reference_store, "folder")):
        trained = run_cli("train-head", store, *TRAIN, "--out", tmp_path / name)
        assert trained.code == 0, trained
        evaluated = run_cli("eval", store, "--checkpoint", tmp_path / name, "--json", "--quiet")
        assert evaluated.code == 0, evaluated
        report = json.loads(evaluated.stdout)
        results.append({key: report[key] for key in ("top1", "top5", "mean_class_accuracy", "per_class", "videos")})
    assert results[0] == results[1]
    weights = [(tmp_path / name / "last.safetensors").read_bytes() for name in ("bucket", "folder")]
    assert weights[0] == weights[1]


def test_stage_two_needs_only_read_only_credentials(bucket_store: str, s3_server: S3Server, demo_videos: Path,
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in s3_server.env(s3_server.read_only_credentials()).items():
        monkeypatch.setenv(name, value)
    assert run_cli("verify", bucket_store).code == 0
    trained = run_cli("train-head", bucket_store, "--head", "text", *TRAIN[2:], "--out", tmp_path / "text")
    assert trained.code == 0, trained
    assert list((tmp_path / "cache" / "clipcache").iterdir()), "the class-name embeddings go to the user cache"
    assert run_cli("eval", bucket_store, "--zero-shot", "--quiet").code == 0
    refused = run_cli(*tiny_extract_args(demo_videos, bucket_store + "2", "--shard-videos", "2"))
    assert refused.code == 2 and "permission denied" in refused.stderr, refused
    assert len(refused.stderr.strip().splitlines()) == 1


def test_kill_9_then_resume_in_a_bucket_equals_uninterrupted(bucket: str, demo_videos: Path,
                                                             reference_store: Path) -> None:
    url = f"{bucket}/killed.zarr"
    args = [str(a) for a in tiny_extract_args(demo_videos, url, "--shard-videos", "2")]
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if int((open_root(url)["videos/status"][:] != PENDING).sum()) >= 2:
                break
        except (KeyError, FileNotFoundError, ValueError, LookupError):
            pass  # not created yet
        time.sleep(0.05)
    second = run_cli(*tiny_extract_args(demo_videos, url, "--shard-videos", "2"))  # while the first one writes
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert second.code == 2 and "in use by another clipcache run (pid" in second.stderr, second
    assert (open_root(url)["videos/status"][:] == PENDING).any(), "the run finished before it could be killed"
    resumed = run_cli(*[a for a in tiny_extract_args(demo_videos, url, "--shard-videos", "2") if a != "--quiet"])
    assert resumed.code == 0, resumed
    assert "removed the stale lock of a run that died" in resumed.stderr, resumed  # at once: it ran on this machine
    assert_stores_equal(url, reference_store)


def test_torchrun_ranks_write_a_bucket_as_one_process_does(bucket: str, demo_videos: Path,
                                                          reference_store: Path) -> None:
    url = f"{bucket}/ranks.zarr"
    result = run_cli_process(*tiny_extract_args(demo_videos, url, "--shard-videos", "2"), launcher=torchrun(2))
    assert result.code == 0, result
    assert_stores_equal(url, reference_store)


def test_a_dense_store_with_segments_in_a_bucket_equals_the_folder(bucket: str, tmp_path: Path) -> None:
    videos = [("a", [(2.0, 6.0, "red_square")], "train"), ("b", [(1.0, 3.0, "square_left")], "test")]
    folder = annotated_store(tmp_path, videos, duration=10.0, rate=2)
    url = f"{bucket}/dense.zarr"
    result = run_cli("extract", tmp_path / "videos", url, "--model-config", TINY_CONFIG, "--fps", "2",
                     "--annotations", tmp_path / "annotations.csv", "--workers", "1", "--quiet")
    assert result.code == 0, result
    assert_stores_equal(url, folder)
    ours, theirs = read_segments(url), read_segments(folder)
    assert ours is not None and theirs is not None and ours.classes == theirs.classes and len(ours) == 2
    for name, values in ours.columns().items():
        np.testing.assert_array_equal(values, theirs.columns()[name], err_msg=name)
    assert run_cli("verify", url).code == 0


def test_verify_finds_damaged_objects_and_repair_restores_them(bucket_store: str, s3_server: S3Server,
                                                               demo_videos: Path, reference_store: Path) -> None:
    prefix = bucket_store.removeprefix(f"s3://{BUCKET}/")
    objects = s3_server.store(prefix)
    keys = sorted(m["path"] for m in obstore.list(objects).collect())
    shard = next(k for k in keys if k.startswith("tokens/") and "/c/" in k)
    pooled = next(k for k in keys if k.startswith("pooled/c/"))
    obstore.delete(objects, pooled)
    data = bytearray(obstore.get(objects, shard).bytes())
    data[len(data) // 3] ^= 0xFF
    obstore.put(objects, shard, bytes(data))
    report = run_cli("verify", bucket_store, "--json")
    assert report.code == 1, report
    damaged = {d["array"] for d in json.loads(report.stdout)["damage"]}
    assert {"pooled", shard.split("/c/")[0]} <= damaged
    repaired = run_cli(*tiny_extract_args(demo_videos, bucket_store, "--shard-videos", "2", "--repair"))
    assert repaired.code == 0, repaired
    assert run_cli("verify", bucket_store).code == 0
    assert_stores_equal(bucket_store, reference_store)


def test_overwrite_replaces_a_store_in_a_bucket_and_refuses_what_is_not_one(bucket: str, s3_server: S3Server,
                                                                          demo_videos: Path) -> None:
    prefix = bucket.removeprefix(f"s3://{BUCKET}/")
    obstore.put(s3_server.store(prefix), "other/data.bin", b"not ours")
    refused = run_cli(*tiny_extract_args(demo_videos, f"{bucket}/other", "--overwrite"))
    assert refused.code == 2 and "no clipcache store" in refused.stderr, refused
    assert obstore.get(s3_server.store(prefix), "other/data.bin").bytes() == b"not ours"
    url = f"{bucket}/store.zarr"
    assert run_cli(*tiny_extract_args(demo_videos, url, "--frames", "2")).code == 0
    replaced = run_cli(*tiny_extract_args(demo_videos, url, "--overwrite"))
    assert replaced.code == 0, replaced
    assert open_root(url).attrs["frames"] == 4
    assert np.all(open_root(url)["videos/status"][:] != PENDING)


def test_an_unreachable_server_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens there
    for name, value in {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(name, value)
    result = run_cli_process("info", "s3://nowhere/store.zarr")
    assert result.code == 1, result
    assert result.stderr.startswith("clipcache: error: object storage failed") and result.stderr.count("\n") == 1


def test_shard_jobs_of_one_array_share_a_bucket_store(bucket: str, demo_videos: Path, reference_store: Path) -> None:
    """Two `--shard i/n` jobs at once, as on two machines: they share the lease and make the one store."""
    url = f"{bucket}/shards.zarr"
    args = [str(a) for a in tiny_extract_args(demo_videos, url, "--shard-videos", "2")]
    jobs = [subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args, "--shard", f"{i}/2"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for job in jobs:
        _, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr
    assert_stores_equal(url, reference_store)


def test_retry_failed_in_a_bucket_redoes_only_the_failed_video(bucket: str, tmp_path: Path) -> None:
    """A video that failed (an empty file, fixed since) is redone in place; every other video keeps its bytes."""
    root = tmp_path / "v"
    for i, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200), (200, 200, 20)]):
        write_video(root / "c" / f"{i}.mp4", shape_frames(8, 32, 32, colour))
    saved = (root / "c" / "3.mp4").read_bytes()
    (root / "c" / "3.mp4").write_bytes(b"")
    url, folder = f"{bucket}/retry.zarr", tmp_path / "whole.zarr"
    args = tiny_extract_args(root, url, "--shard-videos", "2")
    assert run_cli(*args).code == 0
    before = open_root(url)["pooled"][:2]
    (root / "c" / "3.mp4").write_bytes(saved)
    retried = run_cli(*args, "--retry-failed")
    assert retried.code == 0 and "1 processed" in retried.stdout, retried
    assert np.all(open_root(url)["videos/status"][:] == DONE)
    np.testing.assert_array_equal(open_root(url)["pooled"][:2], before)  # the other group was not rewritten
    assert run_cli(*tiny_extract_args(root, folder, "--shard-videos", "2")).code == 0
    assert_stores_equal(url, folder)


def test_xarray_opens_a_bucket_store_as_the_folder(bucket_store: str, reference_store: Path) -> None:
    from clipcache.cache.xr import open_dataset

    ours, theirs = open_dataset(bucket_store), open_dataset(reference_store)
    assert set(ours.data_vars) == set(theirs.data_vars) and list(ours["path"].values) == list(theirs["path"].values)
    for name in ours.data_vars:
        np.testing.assert_array_equal(ours[name].values, theirs[name].values, err_msg=name)
