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
from clipcache.pipeline.evaluate.detection import (
    ProposalResult,
    Segments,
    detection_map,
    proposal_recall,
    threshold_set,
)
from clipcache.pipeline.evaluate.detection_files import read_proposals
from clipcache.pipeline.evaluate.head import training_progress
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.evaluate.results import Result, Scores, describe, single
from clipcache.pipeline.localize.class_splits import ClassSplit
from clipcache.pipeline.localize.ground_truth import segment_table, video_truth
from clipcache.pipeline.localize.open_set import PROTOCOL, restricted, run_split, same_split
from clipcache.pipeline.localize.segment_clips import SegmentClips, span_clips
from clipcache.pipeline.localize.task import WINDOW, localisation_splits, truth_segments, video_level_proposals
from clipcache.pipeline.localize.windows import FeatureWindows
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import BEST, check_compatible, load_weights, read_run
from clipcache.pipeline.train.splits import TEST, evaluation_split
from clipcache.pipeline.train.text_embeddings import text_embeddings

if TYPE_CHECKING:
    from clipcache.pipeline.evaluate.config import EvalConfig

CLASSES_PER_PROPOSAL = 2


def evaluate_localisation(reader: CacheReader, proposals_from: Head | Path, split: str, device: str,
                          templates: str, names_file: Path | None, thresholds: str, description: dict[str, Any],
                          batch_size: int = 8, quiet: bool = True, pretrained: Path | None = None,
                          classifier: tuple[Head, int] | None = None, open_set: ClassSplit | None = None) -> Result:
    """`description` holds what identifies the proposals and the classifier (method, checkpoint, options,
    held_out) beside what `describe` gives; `classifier`: a head trained on the store's segments and the frames
    it reads per segment (with `open_set`, scoring its unseen classes), else zero-shot; `open_set`: only the
    split's unseen classes are ground truth and names (pipeline.localize.open_set)."""
    table = segment_table(reader)
    if tuple(table.classes) != tuple(reader.classes):
        raise InputError(f"{reader.path}: its segments name classes {list(table.classes)[:5]}... but the store "
                         f"{list(reader.classes)[:5]}...; extract with the annotations that made its classes")
    named = np.arange(len(reader.classes))  # the store's classes a detection may name
    if open_set is not None:
        table = restricted(table, open_set.unseen, relabel=False)
        named = np.asarray([reader.classes.index(c) for c in open_set.unseen], np.int64)
    scored = evaluation_split(reader, split, labels=False)
    truth = video_truth(table, scored.videos)
    torch_device = resolve_device(device)
    if isinstance(proposals_from, Path):
        proposals = file_proposals(reader, proposals_from, scored.videos)
    else:
        windows = FeatureWindows(reader, scored.videos, truth, WINDOW, train=False)
        proposals = video_level_proposals(proposals_from.to(torch_device), windows, reader, torch_device, batch_size)
    if classifier is None:
        text = text_embeddings(reader, templates, names_file, torch_device, quiet=quiet, pretrained=pretrained)
        probs = zero_shot_probs(reader, proposals, text[named])
    else:
        probs = head_probs(reader, proposals, classifier, torch_device, batch_size)
    detections = detect(proposals, probs)
    detections = Segments.of(detections.video, detections.start, detections.end, named[detections.label],
                             detections.score)
    gt = truth_segments(truth)
    vague = truth_segments(truth, ambiguous=True)
    found = detection_map(gt, detections, tiou_thresholds(thresholds), vague if len(vague) else None)
    recall = proposal_recall(Segments.of(gt.video, gt.start, gt.end), proposals)
    record = {**describe(reader, split=scored, **description), "videos": int(len(scored.videos)),
              "segments": int(len(gt)), "proposals": int(len(proposals)), "detections": int(len(detections)),
              **found.metrics(), **{f"proposal_{k}": v for k, v in recall.metrics().items()},
              "proposal_recall@10@0.5": _recall_at(recall, 10, 0.5),
              "per_class": found.per_class(),
              "scoring": f"proposal confidence x class probability ({'zero-shot' if classifier is None else 'head'}),"
                         f" top {CLASSES_PER_PROPOSAL} classes per proposal; ActivityNet's official mAP"}
    stems = np.array([Path(str(p)).stem for p in reader.column("path")], dtype=object)
    named = Segments.of(stems[detections.video.astype(np.int64)], detections.start, detections.end, detections.label,
                        detections.score)
    return Result(record, detections=named, detection_classes=tuple(reader.classes))


def tiou_thresholds(spec: str) -> tuple[float, ...]:
    """--tiou: thumos14, activitynet, or a comma-separated list of thresholds in (0, 1]."""
    try:
        return threshold_set(spec if spec.lower() in ("thumos14", "activitynet") else
                             [float(part) for part in spec.split(",")])
    except ValueError:
        raise InputError(f"--tiou {spec}: expected thumos14, activitynet or thresholds in (0, 1] such as "
                         "0.3,0.5,0.7") from None


def zero_shot_probs(reader: CacheReader, proposals: Segments, text: np.ndarray) -> np.ndarray:
    """(P, C) class probabilities of each proposal: softmax of CLIP's logit scale x cosine between the
    normalised mean of its unit frame embeddings and each class-name embedding."""
    frozen = reader.frozen()
    scale = float(np.exp(frozen["logit_scale"][0])) if "logit_scale" in frozen else 100.0
    probs = np.zeros((len(proposals), len(text)))
    for video in np.unique(proposals.video).tolist():
        mine = np.flatnonzero(proposals.video == video)
        frames = reader.dense(int(video)).astype(np.float32)
        frames /= np.linalg.norm(frames, axis=1, keepdims=True)
        times = reader.dense(int(video), "time")
        features = np.stack([_span_mean(frames, times, proposals.start[i], proposals.end[i]) for i in mine])
        probs[mine] = torch.softmax(torch.from_numpy(scale * features @ text.T), dim=1).numpy()
    return probs


def head_probs(reader: CacheReader, proposals: Segments, classifier: tuple[Head, int], device: torch.device,
               batch_size: int) -> np.ndarray:
    """(P, C) class probabilities of each proposal from a head trained on the store's segments, each proposal
    a segment clip of the frames that head reads."""
    head, frames = classifier
    clips, order = span_clips(reader, proposals, frames)
    probs, _ = predict(head.to(device), clips, device, batch_size)
    out = np.zeros_like(probs)
    out[order] = probs
    return out


def detect(proposals: Segments, probs: np.ndarray) -> Segments:
    """Each proposal's CLASSES_PER_PROPOSAL most probable classes as detections, scored by proposal confidence x
    class probability (see the module docstring)."""
    best = np.argsort(-probs, axis=1, kind="stable")[:, :CLASSES_PER_PROPOSAL]
    rows = np.repeat(np.arange(len(proposals)), best.shape[1])
    labels = best.reshape(-1)
    return Segments.of(proposals.video[rows], proposals.start[rows], proposals.end[rows], labels.astype(np.int64),
                       proposals.score[rows] * probs[rows, labels])


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



def localise_from_file(cfg: EvalConfig) -> Result:
    """`eval STORE --proposals FILE [--classifier RUN]`: another detector's proposals, classified zero-shot or by a
    trained head. Whether that detector saw the split scored cannot be known here (`held_out` null)."""
    reader = CacheReader(cfg.store)
    classifier = load_classifier(reader, cfg.classifier, cfg.device, cfg.pretrained)
    options = {"proposals": str(cfg.proposals.resolve()), "proposals_sha256": _sha256(cfg.proposals),
               "classifier": str(cfg.classifier.resolve()) if cfg.classifier else None, "templates": cfg.templates,
               "class_names": cfg.class_names, "tiou": cfg.tiou}
    description = {"method": f"proposals file + {_naming(cfg.classifier)}", "held_out": None, "options": options}
    return evaluate_localisation(reader, cfg.proposals, cfg.split or TEST, cfg.device, cfg.templates,
                                 cfg.class_names, cfg.tiou, description, quiet=cfg.quiet, pretrained=cfg.pretrained,
                                 classifier=classifier)


def load_classifier(reader: CacheReader, run_dir: Path | None, device: str, pretrained: Path | None,
                    classes: tuple[str, ...] | None = None) -> tuple[Head, int] | None:
    """A classification run trained on this store's segments, ready to name proposals (its own classes, or
    `classes` by name: an open-set run's unseen ones), and the frames it reads."""
    if run_dir is None:
        return None
    run = read_run(run_dir)
    check_compatible(run, reader.settings, reader.path)
    if run.get("task", "classification") != "classification" or \
            tuple(run["classes"]) != tuple(run_split(reader, run).seen if classes else reader.classes):
        raise InputError(f"{run_dir}: --classifier takes a classification run trained on this store's segments "
                         f"(train-head {reader.path} --head prompt)")
    head = build_for_store(reader, run["head"], run["options"], run["frames"], run["templates"],
                           Path(run["class_names"]) if run["class_names"] else None, resolve_device(device),
                           classes or tuple(run["classes"]), pretrained)
    load_weights(head, run_dir / BEST)
    return head, int(run["frames"])


def _recall_at(recall: ProposalResult, number: int, tiou: float) -> float:
    """Recall at one tIoU with `number` proposals per video (the issue's and AFSD's single-threshold figure)."""
    point = int(np.argmin(np.abs(recall.average_number - number)))
    return float(recall.recall[list(recall.thresholds).index(tiou), point])


def _naming(classifier: Path | None) -> str:
    """How a method names what classified its proposals."""
    return "zero-shot" if classifier is None else f"head {read_run(classifier)['head']}"


def localise_checkpoint(reader: CacheReader, run: dict[str, Any], run_dir: Path, head: Head, split: str | None,
                        device: str, weights: str, cfg_text: tuple[str, Path | None, str], quiet: bool,
                        pretrained: Path | None, classifier_dir: Path | None = None) -> Result:
    """A proposal head's run (`train-head --head proposals`) on a split: its proposals, classified zero-shot.
    Held out when none of the split's videos trained it or chose its epoch."""
    config = run["config"]
    scored = split or config["test_split"]
    held = segment_splits_held_out(reader, run, evaluation_split(reader, scored, labels=False).videos)
    templates, names_file, tiou = cfg_text
    split_of = run_split(reader, run) if classifier_dir is None else \
        same_split(reader, run, read_run(classifier_dir), classifier_dir)
    classifier = load_classifier(reader, classifier_dir, device, pretrained, split_of.unseen if split_of else None)
    if classifier_dir is not None and held:
        held = segment_splits_held_out(reader, read_run(classifier_dir),
                                       evaluation_split(reader, scored, labels=False).videos)
    options = {"weights": weights.removesuffix(".safetensors"), "templates": templates, "class_names": names_file,
               "tiou": tiou, "classifier": str(classifier_dir.resolve()) if classifier_dir else None}
    if split_of is not None:
        options.update(class_split=f"{split_of.source} #{split_of.index}", unseen=list(split_of.unseen))
    description = {"method": f"head proposals + {_naming(classifier_dir)}", "held_out": held, "options": options,
                   "checkpoint": run_dir / weights,
                   **({"protocol": PROTOCOL, "classes": len(split_of.unseen)} if split_of else {})}
    result = evaluate_localisation(reader, head, scored, device, templates, names_file, tiou, description,
                                   batch_size=config["batch_size"], quiet=quiet, pretrained=pretrained,
                                   classifier=classifier, open_set=split_of)
    result.record["training"] = training_progress(run)
    return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def segment_splits_held_out(reader: CacheReader, run: dict[str, Any], videos: np.ndarray) -> bool | None:
    """Whether none of `videos` trained a run on this store's segments or chose its epoch (None: another store)."""
    if run["store_fingerprint"] != reader.settings.fingerprint():
        return None
    config = run["config"]
    fit = localisation_splits(reader, segment_table(reader), config["train_split"], config["val_split"],
                              config["test_split"], config["seed"])
    return not np.isin(videos, np.concatenate([fit["train"], fit["val"]])).any()


def evaluate_segments(reader: CacheReader, run: dict[str, Any], run_dir: Path, head: Head, split: str | None,
                      device: str, weights: str, quiet: bool) -> Result:
    """A classification head trained on a dense store's segments, scored on the ground-truth segments of a split's
    videos (top-1 over segments: how well it would name perfect proposals)."""
    if run_split(reader, run) is not None:
        raise InputError(f"{run_dir}: trained on the seen classes of a class split; score it on the unseen ones "
                         f"as open-set localisation: eval {reader.path} --checkpoint PROPOSALS_RUN --classifier "
                         f"{run_dir}")
    scored = evaluation_split(reader, split or run["config"]["test_split"], labels=False)
    truth = video_truth(segment_table(reader), scored.videos)
    clips = SegmentClips(reader, truth, run["frames"], train=False)
    if not len(clips):
        raise InputError(f"{reader.path}: split {scored.name!r} has no labelled segments to score")
    torch_device = resolve_device(device)
    probs, labels = predict(head.to(torch_device), clips, torch_device, run["config"]["batch_size"], quiet=quiet)
    description = describe(reader, method=f"head {run['head']} on segments", split=scored,
                           checkpoint=run_dir / weights, options={"weights": weights.removesuffix(".safetensors")},
                           held_out=segment_splits_held_out(reader, run, scored.videos))
    description["training"] = training_progress(run)
    result = single(description, Scores(clips.videos, labels, probs, tuple(run["classes"])))
    result.record.update(segments=result.record["videos"], videos=int(len(scored.videos)))
    return result
