"""`clipcache info`: what a store holds, what it costs on disk, and which videos failed why."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from clipcache.cache.dense import frame_bytes as dense_frame_bytes
from clipcache.cache.location import Store
from clipcache.cache.objects import StoreObjects
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import DONE, FAILED, MISSING, PENDING
from clipcache.cache.segments import read_segments
from clipcache.cache.text import CAPTIONS


def _bytes_stored(reader: CacheReader, prefix: str = "") -> int:
    return StoreObjects(reader.root.store).size(prefix)


def _feature_bytes_per_video(reader: CacheReader) -> int:
    """Uncompressed bytes of one video's features, as the arrays' dtypes hold them (a dense store: of one
    stored frame)."""
    if reader.settings.dense:
        return dense_frame_bytes(reader.settings)
    total = 0
    for name, array in reader.array("tokens").arrays():
        total += int(np.prod(array.shape[1:])) * array.dtype.itemsize
    pooled = reader.array("pooled")
    return total + int(np.prod(pooled.shape[1:])) * pooled.dtype.itemsize


NO_SPLIT, NO_LABEL = "(none)", "(no label)"  # how videos without a split or a label are counted
STATUS_NAMES = {DONE: "done", FAILED: "failed", PENDING: "pending", MISSING: "missing"}


def _by_split(splits: np.ndarray, labels: np.ndarray, status: np.ndarray, classes: tuple[str, ...]
              ) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Per split, the videos of each status; per class, its done videos in each split (the usable ones)."""
    names = [str(s) or NO_SPLIT for s in splits]
    order = list(dict.fromkeys(sorted(names, key=lambda s: (s == NO_SPLIT, s))))
    per_split = {split: {kind: 0 for kind in STATUS_NAMES.values()} for split in order}
    per_class: dict[str, dict[str, int]] = {name: {split: 0 for split in order} for name in classes}
    for split, label, state in zip(names, labels, status):
        per_split[split][STATUS_NAMES[int(state)]] += 1
        if state == DONE:
            name = classes[label] if label >= 0 else NO_LABEL
            per_class.setdefault(name, {s: 0 for s in order})[split] += 1
    return per_split, per_class


def store_info(path: Store) -> dict[str, Any]:
    """A JSON-ready summary; `done`, `failed`, `pending` and `missing` are the per-video status counts (per split
    in `splits`), `class_names` the classes with their done videos per split, `text_templates` and
    `text_captions` the class-name and sentence entries of the text table."""
    reader = CacheReader(path)
    s = reader.settings
    status = reader.status
    done = int((status == DONE).sum())
    on_disk = _bytes_stored(reader)
    feature_disk = sum(_bytes_stored(reader, name) for name in ("tokens", "pooled", "dense"))
    stored_frames = int(reader.samples.sum()) if s.dense else 0
    logical = _feature_bytes_per_video(reader) * (stored_frames if s.dense else done)
    paths, errors, notes = reader.column("path"), reader.column("error"), reader.column("note")
    text_keys = sorted(reader.root["text"].group_keys()) if "text" in reader.root else []
    splits, class_names = _by_split(reader.column("split"), reader.column("label"), status, s.classes)
    return {
        "store": str(reader.path),
        "format": reader.attrs["format"],
        "videos": s.num_videos,
        "done": done,
        "failed": int((status == FAILED).sum()),
        "pending": int((status == PENDING).sum()),
        "missing": int((status == MISSING).sum()),
        "splits": splits,
        "model": s.model,
        "pretrained": s.pretrained,
        "pretrained_sha256": s.pretrained_sha256,
        "weights": _weights_kind(s.pretrained, s.pretrained_sha256),
        "random_init_seed": s.extras.get("random_init_seed"),
        "layers": list(s.layers),
        "num_blocks": s.num_blocks,
        "layout": s.layout,
        "frames": s.frames,
        "sampling": {"uniform": "uniform", "fps": "fps"}.get(s.sampling, f"dense (stride {s.stride})"),
        "fps": s.fps if s.dense else None,
        "keep_tokens": s.keep_tokens,
        "stored_frames": stored_frames,
        "hours": round(float(reader.column("duration")[reader.done].sum()) / 3600, 3) if s.dense else None,
        "views": {"clips": s.clips, "crops": s.crops, "augmented": s.augment, "total": s.views},
        "tokens": s.tokens,
        "width": s.width,
        "embed_dim": s.embed_dim,
        "dtype": s.dtype,
        "compression": s.compression,
        "classes": len(s.classes),
        "class_names": class_names,
        "bytes_on_disk": on_disk,
        "bytes_per_video": feature_disk // done if done else 0,
        "compression_ratio": round(logical / feature_disk, 3) if done and feature_disk else None,
        "segments": _segments(reader.path),
        "text_templates": [key for key in text_keys if not key.startswith(f"{CAPTIONS}-")],
        "text_captions": [key for key in text_keys if key.startswith(f"{CAPTIONS}-")],
        "failures": [{"path": str(paths[i]), "reason": str(errors[i])} for i in np.flatnonzero(status == FAILED)],
        "missing_videos": [str(paths[i]) for i in np.flatnonzero(status == MISSING)],
        "notes": [{"path": str(paths[i]), "note": str(notes[i])}
                  for i in np.flatnonzero((status == DONE) & (notes != ""))],
        "versions": s.extras.get("versions", {}),
        "created": s.extras.get("created", ""),
    }


def _weights_kind(pretrained: str, sha256: str) -> str:
    """What the recorded `pretrained` names: an open_clip tag, a checkpoint file, or nothing. The store records
    "" for random weights (the value stores have always held, and part of their fingerprint), so info says what ""
    means instead of printing another value."""
    return "random" if not pretrained else "file" if sha256 else "tag"


def _weights_text(info: dict[str, Any]) -> str:
    if info["weights"] == "random":
        seed = info["random_init_seed"]
        return '"" (random weights' + (f", torch seed {seed})" if seed is not None else ")")
    if info["weights"] == "file":
        return f"{info['pretrained']} (checkpoint file, sha256 {info['pretrained_sha256'][:12]}...)"
    return f"{info['pretrained']} (open_clip tag)"


def _segments(path: Store) -> dict[str, Any] | None:
    """What the store's temporal annotations hold: segments, ambiguous regions, classes and the counts of
    what their rules left out or changed."""
    table = read_segments(path)
    if table is None:
        return None
    return {"segments": int((~table.ambiguous).sum()), "ambiguous": int(table.ambiguous.sum()),
            "videos": len(np.unique(table.video)), "classes": list(table.classes), "format": table.format,
            "sources": [source.get("name", "") for source in table.sources], "counts": dict(table.counts)}


def size_text(n: float) -> str:
    """Bytes in the largest unit that keeps the number at or above 1."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def _rate(fps: float) -> str:
    return f"{fps:g} frames per second" if fps else "every decoded frame"


def format_info(info: dict[str, Any]) -> str:
    """The human-readable form of `store_info`."""
    views = info["views"]
    lines = [
        f"store        {info['store']}  ({info['format']})",
        f"videos       {info['videos']}: {info['done']} done, {info['failed']} failed, {info['pending']} pending, "
        f"{info['missing']} missing",
    ]
    lines += [f"{'splits' if i == 0 else '':13s}{split}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())
              for i, (split, counts) in enumerate(info["splits"].items())]
    lines += [
        f"model        {info['model']}  pretrained: {_weights_text(info)}",
        f"layers       {info['layers'] or 'none (pooled embeddings only)'} of {info['num_blocks']} blocks, "
        f"{info['tokens'] if info['keep_tokens'] == 'all' else 1} tokens x {info['width']}",
        *([f"frames       {info['frames']} per view, {info['sampling']}",
           f"views        {views['clips']} clips x {views['crops']} crops + {views['augmented']} augmented"]
          if info["layout"] != "dense" else
          [f"dense        {_rate(info['fps'])}: {info['stored_frames']} frames of {info['hours']:g} hours of video, "
           f"tokens: {info['keep_tokens']}"]),
        f"dtype        {info['dtype']}, compression {info['compression']}",
        f"disk         {size_text(info['bytes_on_disk'])} in all, {size_text(info['bytes_per_video'])} per video",
    ]
    if info["compression_ratio"] is not None:
        lines.append(f"ratio        {info['compression_ratio']}x (uncompressed / on disk)")
    if info["segments"] is not None:
        seg = info["segments"]
        lines.append(f"segments     {seg['segments']} in {seg['videos']} videos, {len(seg['classes'])} classes, "
                     f"{seg['ambiguous']} ambiguous regions ({seg['format']}: {', '.join(seg['sources'])})")
        lines += [f"             {kind}: {count}" for kind, count in seg["counts"].items()]
    if info["text_templates"]:
        lines.append(f"text         {', '.join(info['text_templates'])}")
    if info["text_captions"]:
        lines.append(f"captions     {', '.join(info['text_captions'])}")
    if info["class_names"]:
        lines.append(f"classes      {info['classes']}; done videos per split:")
        width = max(len(name) for name in info["class_names"])
        lines += [f"             {name:{width}s}  " + "  ".join(f"{split} {n}" for split, n in counts.items())
                  for name, counts in info["class_names"].items()]
    for failure in info["failures"]:
        lines.append(f"failed       {failure['path']}: {failure['reason']}")
    for path in info["missing_videos"]:
        lines.append(f"missing      {path}: listed but not found (a later run extracts it when it appears)")
    return os.linesep.join(lines)
