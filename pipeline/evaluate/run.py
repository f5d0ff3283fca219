"""`clipcache eval`: the one entry that reads an EvalConfig, runs what it names and writes its results."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.common import note, use_compute_threads
from clipcache.pipeline.evaluate.config import EvalConfig
from clipcache.pipeline.evaluate.head import evaluate_checkpoint
from clipcache.pipeline.evaluate.protocols import half_class_zero_shot, zero_shot_base_to_novel
from clipcache.pipeline.evaluate.report import captions_note, check_out, split_note, write_result
from clipcache.pipeline.evaluate.results import Result
from clipcache.pipeline.evaluate.zero_shot import zero_shot, zero_shot_retrieval
from clipcache.pipeline.train.splits import ALL, TEST, Drawn, drawn_note, left_out_note

DEFAULT_OUT = Path("eval")  # zero-shot and probe results without --out: ./eval/<what was evaluated>/


def _check(cfg: EvalConfig) -> None:
    """Refuse contradictory or out-of-range options before any work."""
    if cfg.captions is not None and not cfg.zero_shot and cfg.checkpoint is None:
        raise InputError("--captions scores text-video retrieval: add --zero-shot, or --checkpoint of a retrieval run")
    if sum([cfg.checkpoint is not None, cfg.zero_shot, cfg.probe is not None, cfg.proposals is not None]) != 1:
        raise InputError("choose exactly one of --checkpoint, --zero-shot, --probe linear, --proposals FILE")
    if (cfg.half_classes or cfg.base_to_novel) and not cfg.zero_shot:
        raise InputError("--half-classes and --base-to-novel are zero-shot protocols: add --zero-shot")
    if cfg.captions is not None and (cfg.half_classes or cfg.base_to_novel):
        raise InputError("--half-classes and --base-to-novel are classification protocols: not with --captions")
    if cfg.half_classes and cfg.base_to_novel:
        raise InputError("choose one of --half-classes and --base-to-novel")
    for name in ("shots", "seeds"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")
    if cfg.split_fractions is not None and (cfg.checkpoint is not None or cfg.captions is not None):
        raise InputError("--split-fractions draws the splits of zero-shot and probe classification; a run is "
                         "scored on the splits it was trained on (drawn at 0.7,0.1,0.2 for a store without splits)")
    if cfg.half_classes < 0:
        raise InputError(f"--half-classes must be at least 1, got {cfg.half_classes}")
    check_out(cfg.out)


def _run(cfg: EvalConfig) -> Result:
    split, moved, fractions = cfg.split or TEST, cfg.pretrained, cfg.split_fractions
    if cfg.proposals is not None:
        from clipcache.pipeline.localize.evaluate import localise_from_file  # it imports evaluate.head, like us
        return localise_from_file(cfg)
    if cfg.checkpoint is not None:
        return evaluate_checkpoint(cfg.store, cfg.checkpoint, cfg.split, cfg.device, f"{cfg.weights}.safetensors",
                                   quiet=cfg.quiet, captions=cfg.captions, pretrained=moved,
                                   text=(cfg.templates, cfg.class_names, cfg.tiou), classifier=cfg.classifier)
    if cfg.half_classes:
        return half_class_zero_shot(cfg.store, cfg.half_classes, split, cfg.templates, cfg.class_names, cfg.device,
                                    cfg.quiet, moved, fractions)
    if cfg.base_to_novel:
        return zero_shot_base_to_novel(cfg.store, 0, split, cfg.templates, cfg.class_names, cfg.device, cfg.quiet,
                                       moved, fractions)
    if cfg.captions is not None:
        return zero_shot_retrieval(cfg.store, cfg.captions, split, cfg.device, cfg.quiet, moved)
    if cfg.zero_shot:
        return zero_shot(cfg.store, split, cfg.templates, cfg.class_names, cfg.device, quiet=cfg.quiet,
                         pretrained=moved, fractions=fractions)
    from clipcache.pipeline.evaluate.probe import linear_probe  # scikit-learn: ~0.8 s of start-up, for the probe only

    return linear_probe(CacheReader(cfg.store), cfg.train_split, cfg.val_split, split, cfg.shots, cfg.seeds,
                        fractions)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """A trained head (--checkpoint: classification, or retrieval for a run trained with --captions), zero-shot
    CLIP (classification, or retrieval with --captions), a linear probe, or a zero-shot protocol; writes the
    result into its own folder and returns the record with `output`, that folder."""
    _check(cfg)
    use_compute_threads(cfg.threads)
    result = _run(cfg)
    record = result.record
    note(left_out_note(record["left_out"], str(cfg.store)), cfg.quiet)
    note(split_note(record), cfg.quiet)
    if record.get("split_drawn") and record["split"] != ALL:
        note(drawn_note(cfg.store, Drawn(tuple(record["split_drawn"]["fractions"]))), cfg.quiet)
    note(captions_note(record), cfg.quiet)
    base = cfg.out or (cfg.checkpoint / "eval" if cfg.checkpoint is not None else DEFAULT_OUT)
    record["output"] = str(write_result(result, base, CacheReader(cfg.store)))
    return record
