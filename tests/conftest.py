"""Shared fixtures: the tiny model config, generated videos, and the CLI run in-process or as a process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli import app
from pipeline.synthetic import write_demo_videos

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "tiny-vit.json"


@pytest.fixture(scope="session")
def tiny_config() -> Path:
    return TINY_CONFIG


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/<split>/<class>/<video>.mp4: 3 appearance classes, 2 train + 1 val videos each."""
    root = tmp_path_factory.mktemp("videos")
    write_demo_videos(root, {"train": 2, "val": 1}, frames=12)
    return root


def run_cli(*args: str | Path) -> "CliResult":
    """Run the CLI in this process (fast: torch is already imported)."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_cli_process(*args: str | Path, launcher: tuple[str, ...] = (), timeout: float = 240) -> "CliResult":
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


def tiny_extract_args(videos: Path, store: Path, *extra: str | Path) -> list[str | Path]:
    """`extract` arguments for the tiny test model on CPU, quiet."""
    return ["extract", videos, store, "--model-config", TINY_CONFIG, "--frames", "4", "--layers", "-2:",
            "--device", "cpu", "--workers", "1", "--quiet", *extra]


def assert_stores_equal(a: Path, b: Path) -> None:
    """Same arrays with the same bytes, and the same attributes except provenance (`extras`)."""
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
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
