"""Class-name text embeddings kept in the store (text/<key>/), so heads never load CLIP for them."""
from __future__ import annotations

import hashlib
import json

import numpy as np

from clipcache.cache.schema import dimension_names
from clipcache.cache.store import consolidate, open_root


def text_key(template_set: str, templates: list[str], class_names: list[str]) -> str:
    """A readable name plus a hash of exactly what was embedded."""
    digest = hashlib.sha256(json.dumps([templates, class_names]).encode()).hexdigest()[:8]
    return f"{template_set}-{digest}"


def read_text_embeddings(store: str, key: str) -> np.ndarray | None:
    root = open_root(store)
    return root[f"text/{key}/embeddings"][:] if f"text/{key}" in root else None


def write_text_embeddings(store: str, key: str, embeddings: np.ndarray, templates: list[str],
                          class_names: list[str]) -> None:
    group = open_root(store, mode="r+").require_group(f"text/{key}")
    name = f"text/{key}/embeddings"
    group.create_array("embeddings", data=np.ascontiguousarray(embeddings, dtype=np.float32), overwrite=True,
                       dimension_names=dimension_names(name))
    group.attrs.update({"templates": templates, "class_names": class_names})
    consolidate(store)
