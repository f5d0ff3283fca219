"""The export folder: written only when it is new, empty, or an earlier export, and in that case only the files
the earlier export wrote are removed.

An export names every file it will write in a marker file (`.clipcache-export`, JSON) before it writes the
first one, so an export that was interrupted is still recognised and replaced by the next `--overwrite`. Each
file is written under a hidden temporary name and renamed into place, so a file present under its own name is
whole.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from clipcache import InputError

MARKER = ".clipcache-export"


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def prepare(out: Path, files: Sequence[str], overwrite: bool) -> None:
    """Make `out` ready to receive `files` (paths relative to it): refuse a folder that holds anything the
    export did not make, and an earlier export unless `overwrite`; then remove what the earlier export listed
    and record the new list."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise InputError(f"{out}: not empty and not made by `clipcache export`; choose a new or empty folder")
        if not overwrite:
            raise InputError(f"{out}: holds an earlier export; --overwrite replaces it")
        for name in _listed(marker):
            for path in (out / name, _partial(out / name)):
                if path.is_file() or path.is_symlink():
                    path.unlink()
        for folder in sorted({(out / name).parent for name in _listed(marker)}, reverse=True):
            if folder != out and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, lambda handle: handle.write(
        json.dumps({"made_by": "clipcache export", "files": sorted(files)}, indent=1).encode()))


def _listed(marker: Path) -> list[str]:
    """The files an earlier export listed, each inside its folder (a name reaching outside it is ignored)."""
    try:
        names = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{marker}: unreadable; remove the folder's contents yourself") from None
    return [str(n) for n in names if isinstance(n, str) and not Path(n).is_absolute() and ".." not in Path(n).parts]


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write` on a hidden temporary file beside `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(path)
    with open(partial, "wb") as handle:
        write(handle)
    os.replace(partial, path)


def save_npy(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda handle: np.save(handle, array))


def save_json(path: Path, value: object) -> None:
    write_atomic(path, lambda handle: handle.write((json.dumps(value, indent=1) + "\n").encode()))


def save_text(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode()))
