"""Run directories: head weights (safetensors), the run's description (run.json), resumable state.

run.json holds everything needed to rebuild the head on any store made by the same model: the head
name and options, frames, templates, classes and the store's model identity, plus the metrics.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from clipcache import InputError
from clipcache.cache.schema import StoreSettings

RUN_FILE, BEST, LAST, STATE, METRICS = "run.json", "best.safetensors", "last.safetensors", "state.pt", "metrics.jsonl"


def model_identity(settings: StoreSettings) -> dict[str, Any]:
    """What must match for a head trained on one store to read another."""
    return {"model": settings.model, "pretrained": settings.pretrained, "embed_dim": settings.embed_dim,
            "width": settings.width, "tokens": settings.tokens, "layers": list(settings.layers)}


def check_compatible(run: dict[str, Any], settings: StoreSettings, store: Path) -> None:
    """Refuse a store made by another model, or without the features the head was trained on."""
    trained, here = run["identity"], model_identity(settings)
    for key in ("model", "pretrained", "embed_dim", "width", "tokens"):
        if trained[key] != here[key]:
            raise InputError(f"{store}: made with {key}={here[key]!r}, the head was trained on {key}={trained[key]!r}")
    missing = sorted(set(run["request_layers"]) - set(here["layers"]))
    if missing:
        raise InputError(f"{store}: lacks blocks {missing} the head reads (it holds {here['layers']})")


def save_weights(module: torch.nn.Module, path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(path))


def load_weights(module: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    module.load_state_dict(load_file(str(path)))


def write_run(run_dir: Path, run: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(run, indent=2))
    tmp.replace(run_dir / RUN_FILE)


def read_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise InputError(f"{run_dir}: not a training run (no {RUN_FILE})")
    return json.loads(path.read_text())


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Everything needed to resume, in one file replaced atomically: a kill leaves the old or the new."""
    tmp = run_dir / f".{STATE}.tmp"
    torch.save(state, tmp)
    tmp.replace(run_dir / STATE)


def load_state(run_dir: Path) -> dict[str, Any]:
    if not (run_dir / STATE).is_file():
        raise InputError(f"{run_dir}: no finished epoch to resume from")
    return torch.load(run_dir / STATE, weights_only=True)


def truncate_metrics(run_dir: Path, epochs: int) -> None:
    path = run_dir / METRICS
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= epochs]
        path.write_text("".join(f"{row}\n" for row in rows))


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with (run_dir / METRICS).open("a") as handle:
        handle.write(json.dumps(row) + "\n")
