"""Class-name and sentence (caption) embeddings from the store's own open_clip text tower, computed once and
cached: in the store, or, when the store cannot take them (read-only, full) or is in object storage (which
stage two only reads, so read-only credentials do), in the user's cache folder."""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import zarr
from open_clip import build_zero_shot_classifier

from clipcache import InputError
from clipcache.cache.location import is_remote
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import StoreSettings
from clipcache.cache.text import CAPTIONS, publish, read_text_embeddings, text_key
from clipcache.pipeline.common import note
from clipcache.pipeline.models import load_model, register_config, resolve_pretrained

SENTENCE_BATCH = 256  # sentences per forward of the text tower

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


def load_text_tower(reader: CacheReader, device: torch.device, pretrained: Path | None = None
                    ) -> tuple[torch.nn.Module, object]:
    """The model and tokenizer that made the store (a custom config is re-registered from the store), from
    `pretrained` when the store's checkpoint file moved; a checkpoint file that moved or changed since is refused
    with one line, never loaded silently."""
    settings = reader.settings
    register_config(settings.model, settings.model_config)
    weights = resolve_pretrained(settings.pretrained, settings.pretrained_sha256, pretrained)
    loaded = load_model(settings.model, weights or None, device=device)
    return loaded.model, open_clip.get_tokenizer(settings.model)


def user_cache(settings: StoreSettings) -> Path:
    """Where text embeddings go when the store cannot take them: $XDG_CACHE_HOME/clipcache (default
    ~/.cache/clipcache), one small zarr group per model, shared by every store the model made."""
    identity = json.dumps([settings.model, settings.pretrained, settings.model_config], sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipcache" / "text"
    return base / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', settings.model)}-{digest}.zarr"


def _cached(reader: CacheReader, key: str, rows: int, quiet: bool) -> np.ndarray | None:
    """A sound entry from the store, else from the user cache; a damaged one is noted (and recomputed)."""
    for place in (reader.path, user_cache(reader.settings)):
        cached, damaged = read_text_embeddings(place, key, rows)
        if cached is not None:
            return cached
        if damaged:
            note(f"{place}: text/{key} is damaged ({damaged}); computing it again", quiet)
    return None


def _keep(reader: CacheReader, key: str, embeddings: np.ndarray, attrs: dict[str, Any], what: str,
          quiet: bool) -> None:
    """In the store when it can take the entry, else in the user cache; a note says where they went."""
    fallback = user_cache(reader.settings)
    why = "it is in object storage, which stage two only reads"
    try:
        if not is_remote(reader.path):
            publish(reader.path, key, embeddings, attrs)
            return
    except OSError as exc:
        why = exc.strerror or str(exc)
    try:
        zarr.open_group(str(fallback), mode="a")
        publish(fallback, key, embeddings, attrs)
        note(f"{reader.path}: cannot keep {what} in the store ({why}); kept in {fallback}", quiet)
    except OSError as exc:
        note(f"{reader.path}: cannot keep {what} in the store ({why}) nor in {fallback} "
             f"({exc.strerror or exc}); they will be computed again next time", quiet)


def text_embeddings(reader: CacheReader, templates: str = "text4vis", names_file: Path | None = None,
                    device: torch.device | str = "cpu", quiet: bool = False, pretrained: Path | None = None
                    ) -> np.ndarray:
    """Class-name embeddings for the store's classes: from the store's cache or the user cache when a sound
    entry is there; otherwise computed with the store's text tower and kept (a damaged entry is replaced)."""
    set_name, template_list = resolve_templates(templates)
    names = class_names(reader, names_file)
    key = text_key(set_name, template_list, names)
    cached = _cached(reader, key, len(names), quiet)
    if cached is not None:
        return cached
    device = torch.device(device)
    model, tokenizer = load_text_tower(reader, device, pretrained)
    # open_clip's own batched classifier builder: per class, the normalised mean of its normalised
    # template embeddings, several classes per forward
    classifier = build_zero_shot_classifier(model, tokenizer, names, template_list, device=device)
    embeddings = classifier.T.float().cpu().numpy()
    _keep(reader, key, embeddings, {"templates": template_list, "class_names": names}, "class-name embeddings",
          quiet)
    return embeddings


@torch.no_grad()
def encode_sentences(model: torch.nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], sentences: list[str],
                     device: torch.device, batch_size: int = SENTENCE_BATCH) -> np.ndarray:
    """Unit sentence embeddings (n, E) float32, `batch_size` sentences per forward of the text tower (the
    tokenizer truncates a sentence longer than the model's context, as CLIP does)."""
    model.eval()
    rows = []
    for start in range(0, len(sentences), batch_size):
        tokens = tokenizer(sentences[start:start + batch_size]).to(device)
        rows.append(torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(rows).numpy()


def sentence_embeddings(reader: CacheReader, sentences: list[str], source: dict[str, Any],
                        device: torch.device | str = "cpu", quiet: bool = False, pretrained: Path | None = None
                        ) -> np.ndarray:
    """One unit embedding per sentence (in the given order), made by the store's text tower. The distinct
    sentences are embedded once and kept like class names, sorted, under a key that hashes exactly them (an
    edited caption file gets a new entry, a reordered one the same); `source` (the caption file) is recorded
    beside them."""
    distinct = sorted(set(sentences))
    key = text_key(CAPTIONS, distinct)
    embeddings = _cached(reader, key, len(distinct), quiet)
    if embeddings is None:
        device = torch.device(device)
        model, tokenizer = load_text_tower(reader, device, pretrained)
        embeddings = encode_sentences(model, tokenizer, distinct, device)
        _keep(reader, key, embeddings, {**source, "sentences": len(distinct)}, "caption embeddings", quiet)
    row = {sentence: i for i, sentence in enumerate(distinct)}
    return embeddings[[row[sentence] for sentence in sentences]]
