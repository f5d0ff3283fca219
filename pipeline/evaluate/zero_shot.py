"""CLIP zero-shot from the cache, no training at all: classification by class-name prompts, and text-video
retrieval with the sentences of a caption file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clipcache import InputError
from clipcache.cache.location import Store
from clipcache.cache.reader import CacheReader
from clipcache.heads.text import TextHead
from clipcache.pipeline.common import resolve_device
from clipcache.pipeline.evaluate.captioned import captioned_split
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.evaluate.results import Result, Scores, describe, single
from clipcache.pipeline.train.build import head_context
from clipcache.pipeline.train.captions import read_captions
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.splits import evaluation_split
from clipcache.pipeline.train.text_embeddings import sentence_embeddings, text_embeddings

METHOD = "zero-shot"
RETRIEVAL_METHOD = "zero-shot retrieval"
VIDEO_BLOCK = 1024  # videos read at a time for their embeddings


def zero_shot(store: Store, split: str = "test", templates: str = "text4vis", names_file: Path | None = None,
              device: str = "auto", classes: tuple[str, ...] | None = None, quiet: bool = True,
              pretrained: Path | None = None, fractions: tuple[float, float, float] | None = None) -> Result:
    """CLIP's zero-shot classifier: cosine between frame-mean video and class-name embeddings, no training.
    Any split is held out ("all" too), since nothing is fitted or selected; `fractions` draw the splits of a
    store without splits."""
    reader = CacheReader(store)
    if not reader.classes:
        raise InputError(f"{store}: the store has no class labels; zero-shot needs classes to name")
    scored = evaluation_split(reader, split, fractions=fractions)
    torch_device = resolve_device(device)
    text = text_embeddings(reader, templates, names_file, torch_device, quiet=quiet, pretrained=pretrained)
    ctx = head_context(reader, reader.settings.frames, text, classes)
    head = TextHead(ctx, depth=0, learn_scale=False).to(torch_device)
    dataset = CacheDataset(reader, head.request, scored.videos, reader.settings.frames, train=False,
                           device=torch_device, classes=ctx.classes)
    probs, labels = predict(head, dataset, torch_device, quiet=quiet)
    options = {"templates": templates, "class_names": names_file, "classes": list(classes) if classes else None}
    description = describe(reader, method=METHOD, split=scored, held_out=True, options=options,
                           classes=len(ctx.classes))
    return single(description, Scores(dataset.videos, labels, probs, ctx.classes))


def frame_mean_embeddings(reader: CacheReader, videos: np.ndarray) -> np.ndarray:
    """One unit embedding per video: the mean over its test views' frames of the unit frame embeddings (CLIP's
    image embedding per frame, normalised as CLIP compares it; CLIP4Clip's mean pooling without training)."""
    views = reader.settings.clips * reader.settings.crops  # the augmented training views are not test views
    out = np.empty((len(videos), reader.settings.embed_dim), np.float32)
    for start in range(0, len(videos), VIDEO_BLOCK):
        frames = reader.pooled(videos[start:start + VIDEO_BLOCK])[:, :views].astype(np.float32)
        frames /= np.linalg.norm(frames, axis=-1, keepdims=True)
        out[start:start + VIDEO_BLOCK] = frames.mean(axis=(1, 2))
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def zero_shot_retrieval(store: Store, captions_file: Path, split: str = "test", device: str = "auto",
                        quiet: bool = True, pretrained: Path | None = None) -> Result:
    """Text-video retrieval by cosine between frame-mean video embeddings and sentence embeddings of the
    store's own model, on a split (the caption file's splits when it has them, else the store's). Videos of
    the split without a caption are left out of both directions and named in the result. Any split is held
    out, since nothing is fitted or selected."""
    reader = CacheReader(store)
    queries = captioned_split(reader, read_captions(captions_file), split)
    text = sentence_embeddings(reader, queries.sentences, queries.captions.file.source, resolve_device(device), quiet,
                               pretrained)
    description = describe(reader, method=RETRIEVAL_METHOD, split=queries.scored, held_out=True,
                           options=queries.captions.file.source)
    return queries.result(description, text, frame_mean_embeddings(reader, queries.videos))
