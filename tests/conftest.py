"""Shared fixtures: the tiny model config, generated videos, and the CLI run in-process or as a process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from clipcache.cache.store import open_root
from clipcache.cli import app
from clipcache.pipeline.demo.synthetic import write_demo_videos
from s3_server import S3Server

REPO = Path(__file__).resolve().parents[1]
# before any test imports torch (nothing above does): the tests' models are tiny, so an op costs thread wake-ups
# rather than arithmetic; on shared cores torch's one-thread-per-core default made a 500-step linear run 6x slower
# (14.4 s vs 2.4 s). Processes the tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
TINY_CONFIG = REPO / "tests" / "tiny-vit.json"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A local S3 server with one bucket, for this session (tests/s3_server.py); `s3_server.prefix()` gives each
    test its own empty corner of the bucket."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_config() -> Path:
    return TINY_CONFIG


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/<split>/<class>/<video>.mp4: 3 appearance classes, 2 train + 1 val videos each."""
    root = tmp_path_factory.mktemp("videos")
    write_demo_videos(root, {"train": 2, "val": 1}, frames=12)
    return root


@pytest.fixture(scope="session")
def reference_store(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted single-process extraction (groups of 2, the last holding one video) that the resume, rank,
    repair and full-disk tests must reproduce exactly."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    result = run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "2"))
    assert result.code == 0, result
    return store


def run_cli(*args: str | Path) -> "CliResult":
    """Run the CLI in this process (fast: torch is already imported)."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def torchrun(ranks: int) -> tuple[str, ...]:
    """A torchrun launcher for `run_cli_process` on a free port, so parallel runs on one machine don't collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port", str(port)


HANG_S = 1800  # a bound only a hung process exceeds: tests assert what was done, never how long it took


def run_cli_process(*args: str | Path, launcher: tuple[str, ...] = (), timeout: float = HANG_S) -> "CliResult":
    """Run `python cli.py ...` (or under a launcher such as torchrun) as a real separate process."""
    command = [*launcher, str(REPO / "cli.py"), *map(str, args)] if launcher else \
        [sys.executable, str(REPO / "cli.py"), *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    return CliResult(done.returncode, done.stdout, done.stderr)


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def assert_choice_refused(result: "CliResult", option: str, value: str, choices: str) -> None:
    """Typer's own message for a value outside an option's choices, which it lists."""
    flat = " ".join(result.stderr.replace("│", " ").split())
    assert result.code == 2 and f"Invalid value for '{option}'" in flat, result
    assert f"'{value}' is not one of {choices}" in flat, result


def tiny_extract_args(videos: Path, store: Path, *extra: str | Path) -> list[str | Path]:
    """`extract` arguments for the tiny test model on CPU, quiet."""
    return ["extract", videos, store, "--model-config", TINY_CONFIG, "--frames", "4", "--layers", "-2:",
            "--device", "cpu", "--workers", "1", "--quiet", *extra]


def assert_stores_equal(a: Path | str, b: Path | str) -> None:
    """Same arrays with the same bytes, and the same attributes except provenance (`extras`)."""
    ga, gb = open_root(a), open_root(b)  # a folder or an object-storage URL
    attrs_a, attrs_b = dict(ga.attrs), dict(gb.attrs)
    attrs_a.pop("extras"), attrs_b.pop("extras")
    assert attrs_a == attrs_b
    assert sorted(_all_arrays(ga)) == sorted(_all_arrays(gb))
    for name in _all_arrays(ga):
        np.testing.assert_array_equal(ga[name][...], gb[name][...], err_msg=name)


def _all_arrays(group: zarr.Group, prefix: str = "") -> list[str]:
    names = [f"{prefix}{name}" for name, _ in group.arrays()]
    for name, sub in group.groups():
        names += _all_arrays(sub, f"{prefix}{name}/")
    return names


@pytest.fixture(scope="session")
def appearance_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 3 classes that differ in colour and shape: 6 train, 2 val, 4 test videos per class."""
    root = tmp_path_factory.mktemp("appearance")
    write_demo_videos(root / "videos", {"train": 6, "val": 2, "test": 4}, frames=8)
    store = root / "features.zarr"
    result = run_cli(*tiny_extract_args(root / "videos", store, "--clips", "2", "--augment", "1"))
    assert result.code == 0, result
    return store


SYNTHETIC = dict(frames=4, clips=2, crops=1, augment=1, layers=(1, 2), tokens=5, width=8, embed_dim=6)


def feature_code(video: int, view: int, frame: int) -> int:
    """What `synthetic_store` writes at token 0, channel 0 (and pooled channel 0) of each frame."""
    views = SYNTHETIC["clips"] * SYNTHETIC["crops"] + SYNTHETIC["augment"]
    return (video * views + view) * SYNTHETIC["frames"] + frame


def synthetic_store(path: Path, num_videos: int = 12, dtype: str = "float16", status: dict[int, int] | None = None,
                    splits: list[str] | None = None) -> Path:
    """A model-free store through the real writer whose features say where they came from: channel 0 holds
    `feature_code(video, view, frame)`, channel 1 the token index, channel 2 the block. Labels cycle over
    three classes; `status` overrides done for some videos."""
    from clipcache.cache.schema import DONE, StoreSettings
    from clipcache.cache.writer import GroupResult, StoreWriter, create_store

    s = SYNTHETIC
    settings = StoreSettings(
        model="synthetic", pretrained="", model_config={}, image_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        interpolation="bicubic", resize_mode="shortest", frames=s["frames"], sampling="uniform", stride=1,
        clips=s["clips"], crops=s["crops"], augment=s["augment"], seed=0, layers=s["layers"], num_blocks=3,
        width=s["width"], heads=2, embed_dim=s["embed_dim"], tokens=s["tokens"], grid=(2, 2), dtype=dtype,
        compression="none", shard_videos=4, num_videos=num_videos, classes=("a", "b", "c"), inputs_digest="synthetic",
    )
    labels = [i % 3 for i in range(num_videos)]
    splits = splits or [("train", "train", "val", "test")[i // 3 % 4] for i in range(num_videos)]
    create_store(path, settings, [f"{splits[i]}/{i}.mp4" for i in range(num_videos)], labels, splits, {})
    writer = StoreWriter(path, settings)
    views, frames = settings.views, s["frames"]
    for group in range(settings.num_groups):
        start, stop = settings.group_range(group)
        n = stop - start
        codes = np.array([[[feature_code(video, v, t) for t in range(frames)] for v in range(views)]
                          for video in range(start, stop)], dtype=np.float32)
        tokens = {}
        for layer in settings.layers:
            values = np.zeros((n, views, frames, s["tokens"], s["width"]), np.float32)
            values[..., 0, 0] = codes
            values[..., 1] = np.arange(s["tokens"])
            values[..., 2] = layer
            tokens[layer] = values
        pooled = np.zeros((n, views, frames, s["embed_dim"]), np.float32)
        pooled[..., 0] = codes
        state = np.array([(status or {}).get(i, DONE) for i in range(start, stop)], np.uint8)
        writer.write_group(GroupResult(
            group=group, status=state, error=["synthetic failure" if x != DONE else "" for x in state], note=[""] * n,
            frame_index=np.zeros((n, views, frames), np.int32), fps=np.full(n, 10, np.float32),
            num_frames=np.full(n, 16, np.int32), width=np.full(n, 64, np.int32), height=np.full(n, 48, np.int32),
            duration=np.full(n, 1.6, np.float32), tokens=tokens, pooled=pooled,
        ))
    return path
