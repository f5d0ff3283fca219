"""A trained head on a split of a store: multi-view predictions and metrics (classification), or ranks both ways
between the split's videos and captions (a retrieval run), and whether the split is really held out from that
head."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipcache import InputError
from clipcache.cache.location import Store
from clipcache.cache.reader import CacheReader
from clipcache.heads.base import Head
from clipcache.pipeline.common import note, resolve_device
from clipcache.pipeline.evaluate.captioned import captioned_split
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.evaluate.results import Result, Scores, describe, single
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.captions import CaptionFile, match_captions, read_captions
from clipcache.pipeline.train.checkpoint import BEST, check_compatible, load_weights, read_run
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.splits import evaluation_split, train_val_test
from clipcache.pipeline.train.task import retrieval_embeddings, retrieval_splits, truncation_note

CLASSIFICATION, RETRIEVAL, LOCALISATION = "classification", "retrieval", "localisation"  # a run's task (runs
# without one are classification)


def held_out(reader: CacheReader, run: dict[str, Any], videos: np.ndarray, weights: str,
             captions: CaptionFile | None = None) -> bool | None:
    """Whether none of `videos` trained the head or selected its weights (validation selects the best
    epoch, and with early stopping or stopping on convergence the last one too); None when that cannot be
    known: a store other than the one the head was trained on, training splits that no longer resolve, or
    (retrieval) no caption file with the content it was trained on."""
    if run["store_fingerprint"] != reader.settings.fingerprint():
        return None
    config = run["config"]
    try:
        if run.get("task", CLASSIFICATION) == RETRIEVAL:
            if captions is None:
                return None
            fit = retrieval_splits(reader, match_captions(captions, reader), config["train_split"],
                                   config["val_split"], config["test_split"], config["seed"])
        else:
            fit = train_val_test(reader, config["train_split"], config["val_split"], config["test_split"],
                                 config["shots"], config["seed"], run_fractions(run))
    except InputError:
        return None
    stopped_by_validation = config.get("patience") or config.get("cycle")  # early stopping, or on convergence
    used = [fit["train"]] + ([fit["val"]] if weights == BEST or stopped_by_validation else [])
    return not np.isin(videos, np.concatenate(used)).any()


def run_fractions(run: dict[str, Any]) -> tuple[float, float, float] | None:
    """The fractions the run drew the splits of a store without splits with (runs before train-head
    --split-fractions drew the default ones)."""
    fractions = run["config"].get("split_fractions")
    return tuple(fractions) if fractions is not None else None


def training_progress(run: dict[str, Any]) -> dict[str, Any]:
    """How far the run got: a run stopped or killed after 3 of 30 epochs scores what 3 epochs learned, and its
    result says so (early stopping finishes a run)."""
    done, planned = run["epochs_done"], run["config"]["epochs"]
    return {"complete": bool(run.get("stopped_early")) or done >= planned, "epochs_done": done,
            "epochs_planned": planned}


def evaluate_checkpoint(store: Store, run_dir: Path, split: str | None = None, device: str = "auto",
                        weights: str = BEST, classes: tuple[str, ...] | None = None, quiet: bool = True,
                        captions: Path | None = None, pretrained: Path | None = None,
                        text: tuple[str, Path | None, str] = ("text4vis", None, "thumos14"),
                        classifier: Path | None = None) -> Result:
    """Multi-view metrics of a trained head on a split of `store` (default: the run's test split; any store
    made by the same model), over the run's classes or, for heads that score by class name (text, prompt),
    any other classes. A retrieval run is scored on captions instead (see `evaluate_retrieval`)."""
    run = read_run(run_dir)
    reader = CacheReader(store)
    check_compatible(run, reader.settings, store)
    if run.get("task", CLASSIFICATION) == RETRIEVAL:
        return evaluate_retrieval(reader, run, run_dir, split, resolve_device(device), weights, captions, quiet,
                                  pretrained)
    if run.get("task") == LOCALISATION:  # `text`: the zero-shot classifier's templates, names file, tIoU set
        from clipcache.pipeline.localize.evaluate import localise_checkpoint  # it imports this module
        head = build_for_store(reader, run["head"], run["options"], run["frames"], run["templates"], None,
                               resolve_device(device), None, pretrained)
        load_weights(head, run_dir / weights)
        return localise_checkpoint(reader, run, run_dir, head, split, device, weights, text, quiet, pretrained,
                                   classifier)
    if reader.settings.dense:  # a head trained on a dense store's segments
        from clipcache.pipeline.localize.evaluate import evaluate_segments  # it imports this module
        head = build_for_store(reader, run["head"], run["options"], run["frames"], run["templates"],
                               Path(run["class_names"]) if run["class_names"] else None, resolve_device(device),
                               tuple(run["classes"]), pretrained)
        load_weights(head, run_dir / weights)
        return evaluate_segments(reader, run, run_dir, head, split, device, weights, quiet)
    if captions is not None:
        raise InputError(f"{run_dir}: a classification run; --captions scores retrieval runs (train-head "
                         "--captions) or, with --zero-shot, CLIP itself")
    scored = evaluation_split(reader, split or run["config"]["test_split"], fractions=run_fractions(run))
    classes = classes or tuple(run["classes"])
    torch_device = resolve_device(device)
    head = trained_head(reader, run, run_dir, weights, torch_device, classes, pretrained)
    dataset = CacheDataset(reader, head.request, scored.videos, run["frames"], train=False, device=torch_device,
                           classes=classes)
    probs, labels = predict(head, dataset, torch_device, run["config"]["batch_size"], quiet=quiet)
    options = {"weights": weights.removesuffix(".safetensors"),
               "classes": list(classes) if classes != tuple(run["classes"]) else None}
    description = describe(reader, method=f"head {run['head']}", split=scored, checkpoint=run_dir / weights,
                           held_out=held_out(reader, run, dataset.videos, weights), options=options,
                           classes=len(classes))
    description["training"] = training_progress(run)
    return single(description, Scores(dataset.videos, labels, probs, classes))


def trained_head(reader: CacheReader, run: dict[str, Any], run_dir: Path, weights: str, device: torch.device,
                 classes: tuple[str, ...] | None = None, pretrained: Path | None = None) -> Head:
    """A classification run's head with its trained weights, built on `reader`'s store (a store made by the same
    model), scoring the run's classes or, for heads that score by class name, `classes`."""
    classes = classes or tuple(run["classes"])
    class_file = Path(run["class_names"]) if run["class_names"] else None
    head = build_for_store(reader, run["head"], run["options"], run["frames"], run["templates"], class_file,
                           device, classes, pretrained)
    try:
        load_weights(head, run_dir / weights)
    except RuntimeError:
        raise InputError(f"{run_dir}: a {run['head']} head trained on {len(run['classes'])} classes cannot score "
                         f"{len(classes)} other classes") from None
    return head


def run_captions(run: dict[str, Any], run_dir: Path, given: Path | None) -> tuple[CaptionFile, CaptionFile | None]:
    """(the captions to score, the caption file the run was trained on or None where none is at hand with
    that content). Without `given`, the run's own file, refused when it is gone or changed."""
    recorded = run["captions"]
    trained, sha = Path(recorded["captions"]), recorded["captions_sha256"]
    if given is not None:
        file = read_captions(given)
        if file.sha256 == sha:
            return file, file
        original = read_captions(trained) if trained.is_file() else None
        return file, original if original is not None and original.sha256 == sha else None
    if not trained.is_file():
        raise InputError(f"{run_dir}: its caption file {trained} is gone; name it (or a copy) with --captions")
    file = read_captions(trained)
    if file.sha256 != sha:
        raise InputError(f"{trained}: changed since {run_dir} was trained on it (sha256 {file.sha256[:12]}..., "
                         f"trained on {sha[:12]}...); name the captions to score with --captions")
    return file, file


def evaluate_retrieval(reader: CacheReader, run: dict[str, Any], run_dir: Path, split: str | None,
                       device: torch.device, weights: str, given: Path | None, quiet: bool,
                       pretrained: Path | None = None) -> Result:
    """Text-video retrieval of a trained head on a split: every caption of the split's videos through the trained
    prompts and the frozen text tower, against the videos (their test views averaged); the split from the caption
    file when it gives splits, else the store's."""
    file, trained_on = run_captions(run, run_dir, given)
    queries = captioned_split(reader, file, split or run["config"]["test_split"])
    head = build_for_store(reader, run["head"], run["options"], run["frames"], run["templates"], None, device,
                           pretrained=pretrained)
    load_weights(head, run_dir / weights)
    layout = head.sentences(queries.sentences)
    note(truncation_note(layout, path=file.path), quiet)
    dataset = CacheDataset(reader, head.request, queries.videos, run["frames"], train=False, device=device)
    video, text = retrieval_embeddings(head, dataset, layout, device, run["config"]["batch_size"], quiet=quiet)
    description = describe(reader, method=f"head {run['head']}", split=queries.scored, checkpoint=run_dir / weights,
                           held_out=held_out(reader, run, queries.videos, weights, trained_on),
                           options={**file.source, "weights": weights.removesuffix(".safetensors")})
    description["training"] = training_progress(run)
    return queries.result(description, text, video)
