"""open_clip models by name, pretrained tag or local checkpoint: the one loader both stages use
(stage one for the image tower, stage two for the text tower that made a store).

A checkpoint file is recorded by its absolute path and its sha256, so a store names exactly the weights
that made it and stage two finds them from any folder (or is told where they moved). A tag's weights
come from open_clip's download cache; where they are not cached and their server cannot be reached
(no network), loading fails at once with one line instead of a minute of retries.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
import open_clip
import torch

from clipcache import InputError

DEFAULT_MODEL = "ViT-B-16"
RANDOM_INIT_SEED = 0
BUILTIN_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(BUILTIN_CONFIGS)


PROBE_SECONDS = 3.0  # how long a download server may take to accept a connection


@dataclass
class LoadedModel:
    """An open_clip model with what the cache records about it."""

    model: torch.nn.Module
    name: str
    pretrained: str  # a tag, the absolute path of a checkpoint file, or "" (random weights)
    config: dict[str, Any]
    preprocess: dict[str, Any]  # image_size, mean, std, interpolation, resize_mode
    pretrained_sha256: str = ""  # of the checkpoint file; "" for tags and random weights


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def resolve_pretrained(recorded: str, sha256: str, moved_to: Path | None) -> str:
    """The checkpoint to load for a store whose weights were recorded as `recorded` (a tag or an absolute
    path) with content hash `sha256` ("" for tags and for stores older than the hash): `moved_to` when
    given and its content matches, else the recorded file when it is still there unchanged. A checkpoint
    that moved or changed is refused with how to point to it."""
    if not sha256:
        return str(moved_to) if moved_to is not None else recorded
    if moved_to is not None:
        if not Path(moved_to).is_file():
            raise InputError(f"--pretrained {moved_to}: no such checkpoint file")
        if file_sha256(Path(moved_to)) != sha256:
            raise InputError(f"--pretrained {moved_to}: not the checkpoint the store was made with (its sha256 "
                             f"differs from {sha256[:12]}...)")
        return str(Path(moved_to).resolve())
    if not Path(recorded).is_file():
        raise InputError(f"the store was made with checkpoint {recorded}, which is no longer there (moved?); "
                         "pass where it is now with --pretrained FILE")
    if file_sha256(Path(recorded)) != sha256:
        raise InputError(f"the store was made with checkpoint {recorded}, which has changed since (sha256 "
                         f"{sha256[:12]}... expected); pass the original with --pretrained FILE")
    return recorded


def load_model(name: str, pretrained: str | None = None, model_config: Path | None = None,
               device: torch.device | str = "cpu") -> LoadedModel:
    """Build an open_clip model by name; `pretrained` is a tag (e.g. `openai`) or a checkpoint file.

    `model_config` registers a JSON config (its file name without .json becomes the model name when
    `name` is empty), which is how offline clusters and the tests describe custom architectures.
    """
    if model_config is not None:
        if not model_config.is_file():
            raise InputError(f"{model_config}: model config not found")
        open_clip.add_model_config(model_config)
        name = name or model_config.stem
    name = name or DEFAULT_MODEL
    if open_clip.get_model_config(name) is None and not name.startswith(("hf-hub:", "local-dir:")):
        raise InputError(f"unknown model {name!r}; see `python -c 'import open_clip; print(open_clip.list_models())'`"
                         " or pass --model-config FILE.json")
    sha256, cached = "", False
    if pretrained and pretrained in open_clip.list_pretrained_tags_by_model(name):
        cached = _require_weights(name, pretrained)
    elif pretrained and Path(pretrained).is_file():
        pretrained, sha256 = str(Path(pretrained).resolve()), file_sha256(Path(pretrained))
    elif pretrained:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise InputError(f"--pretrained {pretrained}: neither a checkpoint file nor a known tag of {name} "
                         f"(known: {tags})")
    with torch.random.fork_rng(devices=[]), _quiet_root_logger(), _hub_offline(cached):
        torch.manual_seed(RANDOM_INIT_SEED)  # without --pretrained, every run gets the same random weights
        model = open_clip.create_model(name, pretrained=pretrained or None, device=device)
    model.eval().requires_grad_(False)
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise InputError(f"model {name}: non-square input {tuple(size)} is not supported")
        size = size[0]
    preprocess = {
        "image_size": int(size),
        "mean": tuple(float(m) for m in cfg["mean"]),
        "std": tuple(float(s) for s in cfg["std"]),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "resize_mode": cfg.get("resize_mode", "shortest"),
    }
    return LoadedModel(model, name, pretrained or "", open_clip.get_model_config(name) or {}, preprocess, sha256)


def _cached_weights(cfg: dict[str, Any]) -> bool:
    """Whether a tag's weights are in open_clip's download cache (the hub's, or ~/.cache/clip for URLs),
    looked up as open_clip looks them up: a .safetensors alternative first, then the named file."""
    if "file" in cfg:
        return Path(cfg["file"]).is_file()
    if cfg.get("hf_hub"):
        repo, name = os.path.split(cfg["hf_hub"])
        name = name or open_clip.constants.HF_WEIGHTS_NAME
        names = [open_clip.constants.HF_SAFE_WEIGHTS_NAME] if name == open_clip.constants.HF_WEIGHTS_NAME else \
            [name[:-4] + ".safetensors"] if name.endswith((".bin", ".pth")) else []
        return any(isinstance(huggingface_hub.try_to_load_from_cache(repo, n), str) for n in [*names, name])
    return bool(cfg.get("url")) and (Path.home() / ".cache" / "clip" / os.path.basename(cfg["url"])).is_file()


def _reachable(url: str) -> bool:
    """Whether the server of `url` accepts a connection within PROBE_SECONDS (name lookup included,
    which can hang without network, so it runs in a thread that is abandoned when late)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answer: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=PROBE_SECONDS).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(PROBE_SECONDS + 2)
    return bool(answer and answer[0])


def _require_weights(name: str, tag: str) -> bool:
    """True when the tag's weights are cached; else check that they can be downloaded, or refuse."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if _cached_weights(cfg):
        return True
    source = huggingface_hub.constants.ENDPOINT if cfg.get("hf_hub") else cfg.get("url", "")
    offline = cfg.get("hf_hub") and huggingface_hub.constants.is_offline_mode()
    if offline or not source or not _reachable(source):
        why = "offline mode is set (HF_HUB_OFFLINE)" if offline else f"{urllib.parse.urlsplit(source).hostname} " \
            "cannot be reached (no network?)"
        raise InputError(f"--pretrained {tag}: the weights of {name} ({tag}) are not in the local cache and cannot "
                         f"be downloaded: {why}; download them where there is network, or pass a local checkpoint "
                         "file with --pretrained FILE")
    return False


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub's offline switch, on while open_clip loads weights that are already cached: it makes
    no request then (without network each would be retried for a minute before the cache is used)."""
    saved = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = saved


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """open_clip logs through the root logger (a warning for every random init): silenced while it
    builds a model, and the caller's level restored afterwards."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def register_config(name: str, config: dict[str, Any]) -> None:
    """Make a config recorded in a store loadable by name again (custom configs live only there)."""
    if open_clip.get_model_config(name) == config:
        return
    folder = Path(tempfile.mkdtemp(prefix="clipcache-config-"))
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
