"""Temporal action localisation on a split of a dense store, from the cache alone: proposals (a trained proposal
head, or a file from another detector), each classified zero-shot, scored as ActivityNet's and THUMOS14's
evaluations score them.

Efficient-Prompt's second stage, zero-shot: a proposal's feature is the mean of the unit frame embeddings
whose times lie in it (the nearest frame when none does), normalised; its class probabilities are the
softmax of CLIP's logit scale times its cosine to each class-name embedding (the store's text tower,
`--templates`). Each proposal gives a detection for each of its CLASSES_PER_PROPOSAL most probable
classes, scored by proposal confidence x class probability (so a confident proposal of an uncertain class
ranks below a confident one of a clear class; two classes let a proposal between two similar classes count
for either, as ActionFormer-style multi-class scoring does). mAP is `pipeline.evaluate.detection`'s
(ActivityNet's official computation; THUMOS14's Ambiguous regions as its kit treats them), proposal recall
ActivityNet's AR-AN.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.heads.base import Head
from clipcache.pipeline.common import resolve_device
from clipcache.pipeline.evaluate.detection import Segments, detection_map, proposal_recall, threshold_set
from clipcache.pipeline.evaluate.detection_files import read_proposals
from clipcache.pipeline.evaluate.head import training_progress
from clipcache.pipeline.evaluate.results import Result, describe
from clipcache.pipeline.localize.ground_truth import VideoTruth, segment_table, video_truth
from clipcache.pipeline.localize.task import WINDOW, localisation_splits, truth_segments, video_level_proposals
from clipcache.pipeline.localize.windows import FeatureWindows
from clipcache.pipeline.train.splits import TEST, evaluation_split
from clipcache.pipeline.train.text_embeddings import text_embeddings

if TYPE_CHECKING:
    from clipcache.pipeline.evaluate.config import EvalConfig

CLASSES_PER_PROPOSAL = 2


def evaluate_localisation(reader: CacheReader, proposals_from: Head | Path, split: str, device: str,
                          templates: str, names_file: Path | None, thresholds: str, description: dict[str, Any],
                          batch_size: int = 8, quiet: bool = True, pretrained: Path | None = None) -> Result:
    """`description` holds what identifies the proposals (method, checkpoint, options, held_out) beside what
    `describe` gives."""
    table = segment_table(reader)
    if tuple(table.classes) != tuple(reader.classes):
        raise InputError(f"{reader.path}: its segments name classes {list(table.classes)[:5]}... but the store "
                         f"{list(reader.classes)[:5]}...; extract with the annotations that made its classes")
    scored = evaluation_split(reader, split, labels=False)
    truth = video_truth(table, scored.videos)
    torch_device = resolve_device(device)
    if isinstance(proposals_from, Path):
        proposals = file_proposals(reader, proposals_from, scored.videos)
    else:
        windows = FeatureWindows(reader, scored.videos, truth, WINDOW, train=False)
        proposals = video_level_proposals(proposals_from.to(torch_device), windows, reader, torch_device, batch_size)
    text = text_embeddings(reader, templates, names_file, torch_device, quiet=quiet, pretrained=pretrained)
    detections = classify(reader, proposals, text, float(np.exp(reader.frozen()["logit_scale"][0]))
                          if "logit_scale" in reader.frozen() else 100.0)
    gt = truth_segments(truth)
    vague = _ambiguous(truth)
    found = detection_map(gt, detections, threshold_set(thresholds), vague if len(vague) else None)
    recall = proposal_recall(Segments.of(gt.video, gt.start, gt.end), proposals)
    record = {**describe(reader, split=scored, **description), "videos": int(len(scored.videos)),
              "segments": int(len(gt)), "proposals": int(len(proposals)), "detections": int(len(detections)),
              **found.metrics(), **{f"proposal_{k}": v for k, v in recall.metrics().items()},
              "per_class": found.per_class(), "scoring": "proposal confidence x zero-shot class probability, "
              f"top {CLASSES_PER_PROPOSAL} classes per proposal; ActivityNet's official mAP"}
    stems = np.array([Path(str(p)).stem for p in reader.column("path")], dtype=object)
    named = Segments.of(stems[detections.video.astype(np.int64)], detections.start, detections.end, detections.label,
                        detections.score)
    return Result(record, detections=named, detection_classes=tuple(reader.classes))


def classify(reader: CacheReader, proposals: Segments, text: np.ndarray, scale: float) -> Segments:
    """Each proposal's CLASSES_PER_PROPOSAL most probable classes as detections (see the module docstring)."""
    rows: dict[str, list[Any]] = {"video": [], "start": [], "end": [], "label": [], "score": []}
    for video in np.unique(proposals.video).tolist():
        mine = np.flatnonzero(proposals.video == video)
        frames = reader.dense(int(video)).astype(np.float32)
        frames /= np.linalg.norm(frames, axis=1, keepdims=True)
        times = reader.dense(int(video), "time")
        features = np.stack([_span_mean(frames, times, proposals.start[i], proposals.end[i]) for i in mine])
        logits = scale * features @ text.T
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        best = np.argsort(-probs, axis=1, kind="stable")[:, :CLASSES_PER_PROPOSAL]
        for row, i in enumerate(mine):
            for label in best[row]:
                rows["video"].append(video)
                rows["start"].append(proposals.start[i])
                rows["end"].append(proposals.end[i])
                rows["label"].append(int(label))
                rows["score"].append(float(proposals.score[i] * probs[row, label]))
    return Segments.of(np.asarray(rows["video"], dtype=proposals.video.dtype), rows["start"], rows["end"],
                       np.asarray(rows["label"], np.int64), rows["score"])


def _span_mean(frames: np.ndarray, times: np.ndarray, start: float, end: float) -> np.ndarray:
    inside = (times >= start) & (times <= end)
    picked = frames[inside] if inside.any() else frames[[int(np.argmin(np.abs(times - (start + end) / 2)))]]
    mean = picked.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def file_proposals(reader: CacheReader, path: Path, videos: np.ndarray) -> Segments:
    """Proposals another detector wrote (ActionFormer/BMN JSON or CSV), their videos named as the store's files
    are (stem, with or without `v_`); a file naming none of the split's videos is refused."""
    read = read_proposals(path)
    stems = {}
    for video in videos.tolist():
        stem = Path(str(reader.column("path")[video])).stem
        stems[stem] = video
        stems[stem[2:] if stem.startswith("v_") else f"v_{stem}"] = video
    known = np.array([str(name) in stems for name in read.video])
    if not known.any():
        raise InputError(f"{path}: none of its videos is a video of the split scored ({len(videos)} videos); is it "
                         "for another dataset or split?")
    mapped = np.array([stems[str(name)] for name in read.video[known]], dtype=np.int64)
    return Segments.of(mapped, read.start[known], read.end[known], score=read.score[known])


def _ambiguous(truth: dict[int, VideoTruth]) -> Segments:
    videos = [v for v, t in truth.items() for _ in t.ambiguous_start]
    return Segments.of(np.asarray(videos, np.int64),
                       np.concatenate([t.ambiguous_start for t in truth.values()] + [np.zeros(0)]),
                       np.concatenate([t.ambiguous_end for t in truth.values()] + [np.zeros(0)]))



def localise_from_file(cfg: EvalConfig) -> Result:
    """`eval STORE --proposals FILE`: another detector's proposals, classified zero-shot. Whether its detector
    saw the split scored cannot be known here (`held_out` null)."""
    reader = CacheReader(cfg.store)
    options = {"proposals": str(cfg.proposals.resolve()), "proposals_sha256": _sha256(cfg.proposals),
               "templates": cfg.templates, "class_names": cfg.class_names, "tiou": cfg.tiou}
    description = {"method": "proposals file + zero-shot", "held_out": None, "options": options}
    return evaluate_localisation(reader, cfg.proposals, cfg.split or TEST, cfg.device, cfg.templates,
                                 cfg.class_names, cfg.tiou, description, quiet=cfg.quiet, pretrained=cfg.pretrained)


def localise_checkpoint(reader: CacheReader, run: dict[str, Any], run_dir: Path, head: Head, split: str | None,
                        device: str, weights: str, cfg_text: tuple[str, Path | None, str], quiet: bool,
                        pretrained: Path | None) -> Result:
    """A proposal head's run (`train-head --head proposals`) on a split: its proposals, classified zero-shot.
    Held out when none of the split's videos trained it or chose its epoch."""
    config = run["config"]
    scored = split or config["test_split"]
    fit = localisation_splits(reader, segment_table(reader), config["train_split"], config["val_split"],
                              config["test_split"], config["seed"])
    videos = evaluation_split(reader, scored, labels=False).videos
    same_store = run["store_fingerprint"] == reader.settings.fingerprint()
    held = bool(same_store and not np.isin(videos, np.concatenate([fit["train"], fit["val"]])).any()) \
        if same_store else None
    templates, names_file, tiou = cfg_text
    options = {"weights": weights.removesuffix(".safetensors"), "templates": templates, "class_names": names_file,
               "tiou": tiou}
    description = {"method": "head proposals + zero-shot", "held_out": held, "options": options,
                   "checkpoint": run_dir / weights}
    result = evaluate_localisation(reader, head, scored, device, templates, names_file, tiou, description,
                                   batch_size=config["batch_size"], quiet=quiet, pretrained=pretrained)
    result.record["training"] = training_progress(run)
    return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
