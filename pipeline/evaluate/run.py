"""`clipcache eval`: the one entry that reads an EvalConfig and runs what it names."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.common import note
from clipcache.pipeline.evaluate.config import EvalConfig
from clipcache.pipeline.evaluate.head import evaluate_checkpoint
from clipcache.pipeline.evaluate.probe import linear_probe
from clipcache.pipeline.evaluate.protocols import half_class_zero_shot, zero_shot_base_to_novel
from clipcache.pipeline.evaluate.report import write_report
from clipcache.pipeline.evaluate.zero_shot import zero_shot
from clipcache.pipeline.train.splits import left_out_note


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """A trained head (--checkpoint), zero-shot CLIP or a linear probe; writes the report and figures of a
    single evaluation and returns the result."""
    chosen = [cfg.checkpoint is not None, cfg.zero_shot, cfg.probe is not None]
    if sum(chosen) != 1:
        raise InputError("choose exactly one of --checkpoint, --zero-shot, --probe linear")
    split = cfg.split or "test"
    if cfg.checkpoint is not None:
        report = evaluate_checkpoint(cfg.store, cfg.checkpoint, cfg.split, cfg.device, f"{cfg.weights}.safetensors",
                                     quiet=cfg.quiet)
    elif cfg.half_classes:
        return half_class_zero_shot(cfg.store, cfg.half_classes, split, cfg.templates, cfg.class_names, cfg.device)
    elif cfg.zero_shot and cfg.base_to_novel:
        return zero_shot_base_to_novel(cfg.store, 0, split, cfg.templates, cfg.class_names, cfg.device)
    elif cfg.zero_shot:
        report = zero_shot(cfg.store, split, cfg.templates, cfg.class_names, cfg.device, quiet=cfg.quiet)
    else:
        report = linear_probe(CacheReader(cfg.store), cfg.train_split, cfg.val_split, split, cfg.shots, cfg.seeds)
    note(left_out_note(report["left_out"], str(cfg.store)), cfg.quiet)
    if "confusion" in report:
        write_report(report, cfg.out or cfg.checkpoint or Path("eval"))
    return report
