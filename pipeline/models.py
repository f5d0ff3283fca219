"""open_clip models by name, pretrained tag or local checkpoint: the one loader both stages use
(stage one for the image tower, stage two for the text tower that made a store)."""
from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from clipcache import InputError

DEFAULT_MODEL = "ViT-B-16"
RANDOM_INIT_SEED = 0
BUILTIN_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(BUILTIN_CONFIGS)


@dataclass
class LoadedModel:
    """An open_clip model with what the cache records about it."""

    model: torch.nn.Module
    name: str
    pretrained: str
    config: dict[str, Any]
    preprocess: dict[str, Any]  # image_size, mean, std, interpolation, resize_mode


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
    if pretrained and pretrained not in open_clip.list_pretrained_tags_by_model(name) \
            and not Path(pretrained).is_file():
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise InputError(f"--pretrained {pretrained}: neither a checkpoint file nor a known tag of {name} "
                         f"(known: {tags})")
    with torch.random.fork_rng(devices=[]), _quiet_root_logger():
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
    return LoadedModel(model, name, pretrained or "", open_clip.get_model_config(name) or {}, preprocess)


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
