"""A trained head on videos that are in no store: each is decoded, sampled and cropped as the run's store recorded
(stage one's `prepare_video`), encoded by the store's model (stage one's encoder and `encode_frames`, which pads
every batch as extraction does, so a video's features are the bytes extraction would store), and scored by the
head as evaluation scores it: the softmax averaged over the video's test views (clips x crops), on the frames the
head reads. Nothing is written."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from clipcache import InputError
from clipcache.cache.location import parse_store
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import StoreSettings
from clipcache.heads.base import Batch, Head
from clipcache.pipeline.common import autocast, resolve_device, use_compute_threads
from clipcache.pipeline.evaluate.head import CLASSIFICATION, trained_head
from clipcache.pipeline.evaluate.predict import to_device
from clipcache.pipeline.extract.encoder import FrozenImageEncoder
from clipcache.pipeline.extract.groups import encode_frames
from clipcache.pipeline.extract.prepare import PrepareRecipe, prepare_video
from clipcache.pipeline.extract.sampling import SamplingPlan
from clipcache.pipeline.extract.video import VideoDecodeError, check_regular_file
from clipcache.pipeline.extract.views import ViewRecipe
from clipcache.pipeline.models import LoadedModel
from clipcache.pipeline.predict.config import PredictConfig
from clipcache.pipeline.train.checkpoint import check_compatible, read_run
from clipcache.pipeline.train.dataset import frame_subset
from clipcache.pipeline.train.text_embeddings import load_text_tower

ENCODER_BATCH = 64  # frames per encoder batch for stores that did not record theirs (format 1)


@dataclass(frozen=True)
class Prediction:
    video: Path
    classes: list[str]  # best first
    scores: list[float]  # the view-averaged softmax of each

    def to_json(self) -> dict[str, Any]:
        return {"video": str(self.video), "top": [{"class": c, "score": s} for c, s in zip(self.classes,
                                                                                         self.scores)]}


def recipe_of(settings: StoreSettings) -> PrepareRecipe:
    """How the store prepared its videos' test views (no augmented views: they only train)."""
    return PrepareRecipe(plan=SamplingPlan(settings.frames, settings.sampling, settings.stride, settings.clips),
                         views=ViewRecipe(settings.image_size, settings.interpolation, settings.resize_mode,
                                          settings.crops), augment=0, seed=settings.seed)


def store_encoder(reader: CacheReader, layers: tuple[int, ...], device: torch.device,
                  pretrained: Path | None) -> FrozenImageEncoder:
    """The image tower that made the store (its recorded model and weights; a moved checkpoint file is found
    through `pretrained`), normalising with the store's recorded mean and std."""
    s = reader.settings
    model, _ = load_text_tower(reader, torch.device("cpu"), pretrained)  # the whole CLIP model that made the store
    preprocess = {"image_size": s.image_size, "mean": s.mean, "std": s.std, "interpolation": s.interpolation,
                  "resize_mode": s.resize_mode}
    return FrozenImageEncoder(LoadedModel(model, s.model, s.pretrained, s.model_config, preprocess), layers, device)


def video_batch(head: Head, encoder: FrozenImageEncoder, settings: StoreSettings, pixels: np.ndarray,
                frames: int) -> Batch:
    """The batch of one video's test views, as `CacheDataset` gives evaluation: (V, T', ...) features of the
    frames the head reads (the segment centres of the stored frames), at the store's precision (float16)."""
    views, stored = pixels.shape[:2]
    tokens, pooled = encode_frames(encoder, torch.from_numpy(pixels.reshape(-1, *pixels.shape[2:])),
                                   settings.batch_size or ENCODER_BATCH)
    chosen = torch.from_numpy(frame_subset(stored, frames, 0.5))
    request = head.request
    batch: Batch = {"video": torch.zeros(views, dtype=torch.int64), "view": torch.arange(views),
                    "label": torch.full((views,), -1, dtype=torch.int64)}
    if request.pooled:
        batch["pooled"] = pooled.reshape(views, stored, -1)[:, chosen].half()
    if request.layers:
        blocks = [tokens[layer].reshape(views, stored, *tokens[layer].shape[1:])[:, chosen] for layer in request.layers]
        stacked = torch.stack(blocks, dim=1)  # (V, M, T', L, D)
        batch["tokens"] = (stacked[:, :, :, :1] if request.cls_only else stacked).half()
    return batch


@torch.no_grad()
def score(head: Head, batch: Batch, device: torch.device) -> np.ndarray:
    """(C,) class probabilities: the softmax averaged over the video's views, as `evaluate.predict` averages."""
    with autocast(device):
        return head(to_device(batch, device)).float().softmax(-1).mean(0).cpu().numpy()


def _check_videos(videos: tuple[Path, ...]) -> None:
    """Every video is a readable file, before a model loads."""
    if not videos:
        raise InputError("no videos given")
    for video in videos:
        try:
            check_regular_file(video)
        except VideoDecodeError as exc:
            raise InputError(f"{video}: {exc}") from None


def predict_videos(cfg: PredictConfig) -> list[Prediction]:
    """The top-k classes of each video by the run's head (see the module)."""
    _check_videos(cfg.videos)
    run = read_run(cfg.checkpoint)
    if run.get("task", CLASSIFICATION) != CLASSIFICATION:
        raise InputError(f"{cfg.checkpoint}: a {run['task']} run; predict applies classification heads")
    store = cfg.store or parse_store(run["config"]["store"])
    if isinstance(store, Path) and not store.exists():
        raise InputError(f"{store}: the store {cfg.checkpoint} was trained on is not there; name where it is now "
                         "with --store")
    reader = CacheReader(store)
    settings = reader.settings
    if settings.dense:
        raise InputError(f"{store}: a dense store (every frame at --fps); predict applies heads of clip stores")
    check_compatible(run, settings, store)
    use_compute_threads(cfg.threads)
    device = resolve_device(cfg.device)
    head = trained_head(reader, run, cfg.checkpoint, f"{cfg.weights}.safetensors", device, pretrained=cfg.pretrained)
    head.eval()
    encoder = store_encoder(reader, head.request.layers, device, cfg.pretrained)
    recipe, classes = recipe_of(settings), list(run["classes"])
    top = min(cfg.top_k, len(classes))
    predictions = []
    for video in tqdm(cfg.videos, desc="predict", unit="video", disable=cfg.quiet, file=sys.stderr):
        try:
            prepared = prepare_video(video, 0, recipe)
        except VideoDecodeError as exc:
            raise InputError(f"{video}: {exc}") from None
        probs = score(head, video_batch(head, encoder, settings, prepared.pixels, run["frames"]), device)
        best = np.argsort(-probs, kind="stable")[:top]
        predictions.append(Prediction(video, [classes[i] for i in best], [float(probs[i]) for i in best]))
    return predictions


def format_predictions(predictions: list[Prediction], as_json: bool) -> str:
    """A table (video, rank, class, score), or JSON: a list of {video, top: [{class, score}]}."""
    if as_json:
        return json.dumps([p.to_json() for p in predictions], indent=2)
    rows = [("video", "rank", "class", "score")] + [
        (str(p.video), str(rank), name, f"{value:.3f}") for p in predictions
        for rank, (name, value) in enumerate(zip(p.classes, p.scores), start=1)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
