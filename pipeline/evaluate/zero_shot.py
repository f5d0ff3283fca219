"""CLIP zero-shot classification from the cache: no training at all."""
from __future__ import annotations

from pathlib import Path

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.heads.text import TextHead
from clipcache.pipeline.common import resolve_device
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.evaluate.results import Result, Scores, describe, single
from clipcache.pipeline.train.build import head_context
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.splits import evaluation_split
from clipcache.pipeline.train.text_embeddings import text_embeddings

METHOD = "zero-shot"


def zero_shot(store: Path, split: str = "test", templates: str = "text4vis", names_file: Path | None = None,
              device: str = "auto", classes: tuple[str, ...] | None = None, quiet: bool = True) -> Result:
    """CLIP's zero-shot classifier: cosine between frame-mean video and class-name embeddings, no training.
    Any split is held out, since nothing is fitted or selected."""
    reader = CacheReader(store)
    if not reader.classes:
        raise InputError(f"{store}: the store has no class labels; zero-shot needs classes to name")
    scored = evaluation_split(reader, split)
    torch_device = resolve_device(device)
    text = text_embeddings(reader, templates, names_file, torch_device, quiet=quiet)
    ctx = head_context(reader, reader.settings.frames, text, classes)
    head = TextHead(ctx, depth=0, learn_scale=False).to(torch_device)
    dataset = CacheDataset(reader, head.request, scored.videos, reader.settings.frames, train=False,
                           device=torch_device, classes=ctx.classes)
    probs, labels = predict(head, dataset, torch_device, quiet=quiet)
    options = {"templates": templates, "class_names": names_file, "classes": list(classes) if classes else None}
    description = describe(reader, method=METHOD, split=scored, held_out=True, options=options,
                           classes=len(ctx.classes))
    return single(description, Scores(dataset.videos, labels, probs, ctx.classes))
