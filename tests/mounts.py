"""Real file-system faults for the tests: a small tmpfs to fill (a full disk) and a read-only folder.

Mounting needs root; where it is refused, `mounted` skips the test and `mount` says so, so a test can fall
back to another real fault (a file size limit) instead."""
from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount(*command: str | Path) -> bool:
    """`mount COMMAND...`; whether it mounted."""
    return subprocess.run(["mount", *map(str, command)], capture_output=True).returncode == 0


@contextmanager
def mounted(*command: str | Path) -> Iterator[None]:
    """Mounted for the block (the last argument is the mount point), or the test skipped."""
    done = subprocess.run(["mount", *map(str, command)], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(command[-1])], check=True)


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for real: root ignores permission bits, so as root a read-only bind mount."""
    if os.geteuid() == 0:
        with mounted("--bind", "-o", "ro", folder, folder):
            yield
        return
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        yield
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def fill(path: Path) -> None:
    """Write zeros into the new file `path` until its file system is full, to the last byte."""
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    while True:  # the last partial page
        try:
            with open(path, "ab") as handle:
                handle.write(b"\0")
        except OSError:
            return
