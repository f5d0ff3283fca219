"""CLIP zero-shot classification from the cache: no training at all."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clipcache.cache.reader import CacheReader
from clipcache.heads.text import TextHead
from clipcache.pipeline.common import resolve_device
from clipcache.pipeline.evaluate.metrics import classification_metrics
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.train.build import head_context
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.splits import evaluation_videos, left_out
from clipcache.pipeline.train.text_embeddings import text_embeddings


def zero_shot(store: Path, split: str = "test", templates: str = "text4vis", names_file: Path | None = None,
              device: str = "auto", classes: tuple[str, ...] | None = None, quiet: bool = True) -> dict[str, Any]:
    """CLIP's zero-shot classifier: cosine between frame-mean video and class-name embeddings, no training."""
    reader = CacheReader(store)
    torch_device = resolve_device(device)
    text = text_embeddings(reader, templates, names_file, torch_device)
    ctx = head_context(reader, reader.settings.frames, text, classes)
    head = TextHead(ctx, depth=0, learn_scale=False).to(torch_device)
    dataset = CacheDataset(reader, head.request, evaluation_videos(reader, split), reader.settings.frames,
                           train=False, device=torch_device, classes=ctx.classes)
    probs, labels = predict(head, dataset, torch_device, quiet=quiet)
    return {"kind": "zero-shot", "store": str(store), "split": split, "templates": templates,
            "left_out": left_out(reader), **classification_metrics(probs, labels, ctx.classes)}
