"""Run directories: head weights (safetensors), the run's description (run.json), resumable state.

run.json holds everything needed to rebuild the head on any store made by the same model: the head
name and options, frames, templates, classes and the store's model identity, plus the metrics.

Crash safety: the state file is the run. Each epoch ends by replacing `state.pt` in one atomic rename
(written in full, flushed to disk, then renamed over the old one); it holds the head, the optimiser,
the schedule, every random generator, the early-stopping counters and all metrics rows. Everything
else in the directory (last and best weights, metrics.jsonl, run.json, TensorBoard event files: curves.py) is
derived from it afterwards and written again on `--resume`, so a kill or a full disk at any instant leaves either
the previous epoch's state or the new one, and a resumed run repeats exactly what the uninterrupted run would do.
"""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from clipcache import InputError
from clipcache.cache.location import Store
from clipcache.cache.schema import StoreSettings

RUN_FILE, BEST, LAST, STATE, METRICS = "run.json", "best.safetensors", "last.safetensors", "state.pt", "metrics.jsonl"
DISK_ERRORS = {errno.ENOSPC: "no space left on", errno.EDQUOT: "disk quota exceeded on",
               errno.EFBIG: "file size limit reached writing", errno.EROFS: "read-only file system at",
               errno.EACCES: "no permission to write", errno.EPERM: "no permission to write"}


def model_identity(settings: StoreSettings) -> dict[str, Any]:
    """What must match for a head trained on one store to read another."""
    return {"model": settings.model, "pretrained": settings.pretrained, "embed_dim": settings.embed_dim,
            "width": settings.width, "tokens": settings.tokens, "layers": list(settings.layers)}


def check_compatible(run: dict[str, Any], settings: StoreSettings, store: Store) -> None:
    """Refuse a store made by another model, or without the features the head was trained on."""
    trained, here = run["identity"], model_identity(settings)
    for key in ("model", "pretrained", "embed_dim", "width", "tokens"):
        if trained[key] != here[key]:
            raise InputError(f"{store}: made with {key}={here[key]!r}, the head was trained on {key}={trained[key]!r}")
    missing = sorted(set(run["request_layers"]) - set(here["layers"]))
    if missing:
        raise InputError(f"{store}: lacks blocks {missing} the head reads (it holds {here['layers']})")


def check_run_dir(run_dir: Path) -> None:
    """`--out` must be a directory or not exist yet."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir}: is a file; a run directory is needed")


def write_atomically(path: Path, data: bytes) -> None:
    """The whole of `data` at `path` or the old file untouched: written beside it, flushed, renamed over
    it. A full disk (or another write refusal) is one line naming the path; the partial file is removed."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself reaches the disk
        finally:
            os.close(directory)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_refusal(exc, path) from None


def disk_refusal(exc: OSError, path: Path) -> Exception:
    """What a write the machine refused (a full disk, a quota, a read-only file system) raises: one line naming
    the run directory and the way on; any other OSError as it is."""
    if exc.errno not in DISK_ERRORS:
        return exc
    return InputError(f"{DISK_ERRORS[exc.errno]} {path.parent}: could not write {path.name} "
                      f"({os.strerror(exc.errno)}); the run keeps its last finished epoch, continue it with "
                      "--resume once the cause is fixed")


def save_weights(module: torch.nn.Module, path: Path, epoch: int) -> None:
    """The head's state dict as safetensors, with the epoch it was saved at in the metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    write_atomically(path, save_safetensors(tensors, metadata={"epoch": str(epoch)}))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    try:
        return load_safetensors(path.read_bytes())
    except SafetensorError as exc:
        raise InputError(f"{path}: not a readable checkpoint ({exc}); it was damaged or cut short") from None


def weights_epoch(path: Path) -> int | None:
    """The epoch recorded in a weights file, or None when it is missing or unreadable."""
    try:
        with safe_open(str(path), "pt") as handle:
            return int((handle.metadata() or {})["epoch"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None


def load_weights(module: torch.nn.Module, path: Path) -> None:
    module.load_state_dict(read_weights(path))


def write_run(run_dir: Path, run: dict[str, Any]) -> None:
    write_atomically(run_dir / RUN_FILE, json.dumps(run, indent=2, allow_nan=False).encode())


def read_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise InputError(f"{run_dir}: not a training run (no {RUN_FILE})")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path}: damaged (not JSON); train again into another --out") from None


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Everything needed to resume, in one file replaced atomically: a kill leaves the old or the new."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(run_dir / STATE, buffer.getvalue())


def load_state(run_dir: Path) -> dict[str, Any] | None:
    """The last finished epoch's state, or None when no epoch finished."""
    path = run_dir / STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError):  # what torch.load raises on a damaged file
        raise InputError(f"{path}: damaged, cannot resume from it; train again into another --out") from None


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """metrics.jsonl, one row per finished epoch, rewritten whole (never a torn last line); strict JSON (a NaN
    would be written as a token no JSON reader accepts, so it is an error here, never a file)."""
    write_atomically(run_dir / METRICS, "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows).encode())
