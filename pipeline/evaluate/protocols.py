"""Evaluation protocols of the papers: few-shot over seeds, base-to-novel, half-class zero-shot."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.heads import head_class
from clipcache.pipeline.evaluate.head import evaluate_checkpoint
from clipcache.pipeline.evaluate.zero_shot import zero_shot
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loop import train_head


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def run_train_head(cfg: TrainConfig) -> dict[str, Any]:
    """`clipcache train-head`: one run, or the protocol its options name (K-shot over seeds, base-to-novel)."""
    if cfg.base_to_novel:
        return base_to_novel(cfg)
    if cfg.shots and cfg.seeds > 1:
        return few_shot(cfg)
    return train_head(cfg)


def few_shot(cfg: TrainConfig, split: str = "test") -> dict[str, Any]:
    """K-shot training sets drawn with seeds 0..n-1, one run each (out/seed-<s>); test top-1 mean ± std."""
    runs = []
    for seed in range(cfg.seeds):
        run_dir = cfg.out / f"seed-{seed}"
        train_head(replace(cfg, seed=seed, out=run_dir))
        runs.append(evaluate_checkpoint(cfg.store, run_dir, split, cfg.device))
    return {"protocol": f"{cfg.shots}-shot x {cfg.seeds} seeds", "head": cfg.head,
            "top1": _mean_std([r["top1"] for r in runs]), "top5": _mean_std([r["top5"] for r in runs]),
            "runs": [{"seed": s, "top1": r["top1"]} for s, r in enumerate(runs)]}


def split_classes(classes: tuple[str, ...], seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A random half of the classes (seeded) and the rest, each in the store's order."""
    chosen = set(np.random.default_rng(seed).permutation(len(classes))[: len(classes) // 2].tolist())
    base = tuple(c for i, c in enumerate(classes) if i in chosen)
    return base, tuple(c for c in classes if c not in base)


def _harmonic(base: float, novel: float) -> float:
    return 2 * base * novel / (base + novel) if base + novel > 0 else 0.0


def _base_novel_report(method: str, base: tuple[str, ...], novel: tuple[str, ...], scores: list[float]
                       ) -> dict[str, Any]:
    return {"protocol": "base-to-novel", "method": method, "base_classes": list(base), "novel_classes": list(novel),
            "base_top1": scores[0], "novel_top1": scores[1], "harmonic_mean": _harmonic(*scores)}


def _halves(reader: CacheReader, seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    base, novel = split_classes(reader.classes, seed)
    if not base or not novel:
        raise InputError(f"{reader.path}: base-to-novel needs at least two classes")
    return base, novel


def base_to_novel(cfg: TrainConfig, split: str = "test") -> dict[str, Any]:
    """Train on the base half of the classes, then test base and novel classes separately and report
    their harmonic mean; only heads that score class names (text, prompt) can meet novel classes."""
    if not head_class(cfg.head).scores_class_names():
        raise InputError(f"--head {cfg.head}: base-to-novel needs a head that scores class names (text, prompt)")
    base, novel = _halves(CacheReader(cfg.store), cfg.seed)
    train_head(replace(cfg, classes=base))
    scores = [evaluate_checkpoint(cfg.store, cfg.out, split, cfg.device, classes=half)["top1"]
              for half in (base, novel)]
    return _base_novel_report(f"head {cfg.head}", base, novel, scores)


def zero_shot_base_to_novel(store: Path, seed: int = 0, split: str = "test", templates: str = "text4vis",
                            names_file: Path | None = None, device: str = "auto") -> dict[str, Any]:
    """The untrained reference on the same base and novel halves as `base_to_novel` with this seed."""
    base, novel = _halves(CacheReader(store), seed)
    scores = [zero_shot(store, split, templates, names_file, device, half)["top1"] for half in (base, novel)]
    return _base_novel_report("zero-shot", base, novel, scores)


def half_class_zero_shot(store: Path, halves: int, split: str = "test", templates: str = "text4vis",
                         names_file: Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Text4Vis's protocol: zero-shot top-1 on N random halves of the classes, mean ± std."""
    classes = CacheReader(store).classes
    scores = [zero_shot(store, split, templates, names_file, device, split_classes(classes, seed)[0])["top1"]
              for seed in range(halves)]
    return {"protocol": f"half-class zero-shot x {halves}", "top1": _mean_std(scores), "runs": scores}


def format_training(result: dict[str, Any]) -> str:
    """The printed form of `run_train_head`: one line for a run, the whole record for a protocol."""
    if "protocol" in result:
        return json.dumps(result, indent=2)
    best = result["best"]
    return (f"{result['config']['out']}: {result['epochs_done']} epochs, best val top-1 {best['val_top1']:.4f} "
            f"at epoch {best['epoch']}")
