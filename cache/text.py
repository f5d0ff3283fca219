"""Text embeddings kept in a store (text/<key>/): class names through templates, and the sentences of a caption
file, so heads and zero-shot never load CLIP for them twice.

An entry appears in one rename: it is written whole into `text/.partial-<host>-<pid>-<random>/` (a folder
zarr does not take for a node) and then renamed to `text/<key>`, so a kill or a full disk never leaves a
half-written entry where readers look; the next writer removes what dead writers of this host left behind.
Every chunk ends with crc32c and is written even when it holds zeros, as the rest of the store, so `verify`
finds a flipped byte or a deleted chunk from the bytes alone. Readers still check what they read (`damage`),
since entries written by older versions (in place, without checksums) can be half-written (a missing chunk
reads as zeros).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from clipcache.cache.location import Store, parse_store
from clipcache.cache.schema import dimension_names
from clipcache.cache.store import consolidate, open_root
from clipcache.cache.writer import TABLE_COMPRESSORS, WRITE_EMPTY

PARTIAL = ".partial-"
CAPTIONS = "captions"  # the name of caption entries in the text table (text/captions-<hash>)
UNIT = 1e-3  # how far from 1 the norm of a stored row may be
CHUNK_BYTES = 4 << 20  # rows per chunk: whole rows, about 4 MB (8,192 sentences of 512 float32)


def text_key(name: str, *embedded: list[str]) -> str:
    """A readable name plus a hash of exactly what was embedded (templates and class names, or sentences)."""
    digest = hashlib.sha256(json.dumps(list(embedded)).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def read_text_embeddings(store: Store | str, key: str, rows: int) -> tuple[np.ndarray | None, str | None]:
    """(embeddings, None) for a sound entry, (None, why) for a damaged one, (None, None) when the store (a
    folder) or the entry does not exist."""
    store = parse_store(store)
    if isinstance(store, Path) and not store.is_dir():
        return None, None
    root = open_root(store)
    name = f"text/{key}/embeddings"
    try:
        if name not in root:
            return None, None
        embeddings = root[name][:]
    except (RuntimeError, ValueError) as exc:  # a damaged chunk or metadata file: the codec or JSON fails
        return None, f"unreadable ({exc})"
    why = damage(embeddings, rows)
    return (None, why) if why else (embeddings, None)


def damage(embeddings: np.ndarray, rows: int) -> str | None:
    """Why stored embeddings cannot be used, or None: one unit vector per class (or sentence) is expected (a
    chunk that was never written reads as zeros)."""
    if embeddings.ndim != 2 or embeddings.shape[0] != rows:
        return f"shape {embeddings.shape}, expected one row per text ({rows})"
    if not np.isfinite(embeddings).all():
        return "values that are not finite"
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1)
    bad = int((np.abs(norms - 1) > UNIT).sum())
    return f"{bad} of {rows} rows are not unit vectors" if bad else None


def _alive(name: str) -> bool:
    """Whether the writer that made partial folder `name` may still be running."""
    host, _, rest = name.removeprefix(PARTIAL).rpartition("-")[0].rpartition("-")
    if host != socket.gethostname() or not rest.isdigit():
        return True  # another machine's writer: not ours to judge
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text_embeddings(store: Path | str, key: str, embeddings: np.ndarray, templates: list[str],
                          class_names: list[str]) -> None:
    """Class-name embeddings, described by their templates and class names (`publish`)."""
    publish(store, key, embeddings, {"templates": templates, "class_names": class_names})


def publish(store: Path | str, key: str, embeddings: np.ndarray, attrs: dict[str, Any]) -> None:
    """Publish the entry (its `attrs` say what was embedded) in one rename, replacing an existing (damaged)
    one; then consolidate. Raises OSError when the store cannot take it (read-only, full): the entry is then
    absent, never half there."""
    open_root(store, mode="r+").require_group("text")
    text = Path(store) / "text"
    for leftover in text.glob(f"{PARTIAL}*"):
        if not _alive(leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)
    partial = text / f"{PARTIAL}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        group = zarr.open_group(str(partial / "entry"), mode="w")
        values = np.ascontiguousarray(embeddings, dtype=np.float32)
        row_bytes = max(1, values.itemsize * int(np.prod(values.shape[1:])))
        rows = max(1, min(len(values), CHUNK_BYTES // row_bytes))
        group.create_array("embeddings", shape=values.shape, chunks=(rows, *values.shape[1:]), dtype="float32",
                           dimension_names=dimension_names(f"text/{key}/embeddings"), compressors=TABLE_COMPRESSORS,
                           config=WRITE_EMPTY)[...] = values
        group.attrs.update(attrs)
        target = text / key
        if target.exists():
            target.rename(partial / "replaced")
        (partial / "entry").rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    consolidate(store)
