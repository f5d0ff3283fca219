"""Class-name embeddings from the store's own open_clip text tower, computed once and cached: in the store,
or, when the store cannot take them (read-only, full), in the user's cache folder."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import open_clip
import torch
import zarr
from open_clip import build_zero_shot_classifier

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import StoreSettings
from clipcache.cache.text import read_text_embeddings, text_key, write_text_embeddings
from clipcache.pipeline.common import note
from clipcache.pipeline.models import load_model, register_config

TEMPLATE_SETS: dict[str, list[str]] = {
    "text4vis": ["a video of a person {}."],
    "ensemble": [
        "a photo of a person {}.", "a video of a person {}.", "a example of a person {}.",
        "a demonstration of a person {}.", "a photo of the person {}.", "a video of the person {}.",
        "a example of the person {}.", "a demonstration of the person {}.", "a photo of a person doing {}.",
        "a video of a person doing {}.", "a example of a person doing {}.", "a demonstration of a person doing {}.",
        "a photo of the person doing {}.", "a video of the person doing {}.", "a example of the person doing {}.",
        "a demonstration of the person doing {}.",
    ],
}


def resolve_templates(spec: str) -> tuple[str, list[str]]:
    """A built-in set by name, or a file with one template per line, each containing `{}`."""
    if spec in TEMPLATE_SETS:
        return spec, TEMPLATE_SETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--templates {spec}: neither {' nor '.join(TEMPLATE_SETS)} nor a file")
    templates = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise InputError(f"{path}: every template needs a {{}} for the class name" + (f" ({bad[0]!r})" if bad else ""))
    return path.stem, templates


def class_names(reader: CacheReader, names_file: Path | None = None) -> list[str]:
    """Readable class names: the labels with _ as spaces, or a file of `label<TAB or ,>name` lines."""
    names = {label: label.replace("_", " ") for label in reader.classes}
    if names_file is not None:
        for line in Path(names_file).read_text(encoding="utf-8-sig").splitlines():
            if line.strip():
                label, _, name = line.replace("\t", ",").partition(",")
                if label.strip() not in names:
                    raise InputError(f"{names_file}: {label.strip()!r} is not a class of {reader.path}")
                names[label.strip()] = name.strip() or label.strip()
    return [names[label] for label in reader.classes]


def load_text_tower(reader: CacheReader, device: torch.device) -> tuple[torch.nn.Module, object]:
    """The model and tokenizer that made the store (a custom config is re-registered from the store)."""
    settings = reader.settings
    register_config(settings.model, settings.model_config)
    loaded = load_model(settings.model, settings.pretrained or None, device=device)
    return loaded.model, open_clip.get_tokenizer(settings.model)


def user_cache(settings: StoreSettings) -> Path:
    """Where class-name embeddings go when the store cannot take them: $XDG_CACHE_HOME/clipcache (default
    ~/.cache/clipcache), one small zarr group per model, shared by every store the model made."""
    identity = json.dumps([settings.model, settings.pretrained, settings.model_config], sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipcache" / "text"
    return base / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', settings.model)}-{digest}.zarr"


def _keep(embeddings: np.ndarray, key: str, templates: list[str], names: list[str], reader: CacheReader,
          quiet: bool) -> None:
    """In the store when it can take the entry, else in the user cache; a note says where they went."""
    fallback = user_cache(reader.settings)
    try:
        write_text_embeddings(reader.path, key, embeddings, templates, names)
        return
    except OSError as exc:
        why = exc.strerror or str(exc)
    try:
        zarr.open_group(str(fallback), mode="a")
        write_text_embeddings(fallback, key, embeddings, templates, names)
        note(f"{reader.path}: cannot keep class-name embeddings in the store ({why}); kept in {fallback}", quiet)
    except OSError as exc:
        note(f"{reader.path}: cannot keep class-name embeddings in the store ({why}) nor in {fallback} "
             f"({exc.strerror or exc}); they will be computed again next time", quiet)


def text_embeddings(reader: CacheReader, templates: str = "text4vis", names_file: Path | None = None,
                    device: torch.device | str = "cpu", quiet: bool = False) -> np.ndarray:
    """Class-name embeddings for the store's classes: from the store's cache or the user cache when a sound
    entry is there; otherwise computed with the store's text tower and kept (a damaged entry is replaced)."""
    set_name, template_list = resolve_templates(templates)
    names = class_names(reader, names_file)
    key = text_key(set_name, template_list, names)
    for place in (reader.path, user_cache(reader.settings)):
        cached, damaged = read_text_embeddings(place, key, len(names))
        if cached is not None:
            return cached
        if damaged:
            note(f"{place}: text/{key} is damaged ({damaged}); computing it again", quiet)
    device = torch.device(device)
    model, tokenizer = load_text_tower(reader, device)
    # open_clip's own batched classifier builder: per class, the normalised mean of its normalised
    # template embeddings, several classes per forward
    classifier = build_zero_shot_classifier(model, tokenizer, names, template_list, device=device)
    embeddings = classifier.T.float().cpu().numpy()
    _keep(embeddings, key, template_list, names, reader, quiet)
    return embeddings
