"""Evaluation protocols of the papers: few-shot over seeds, base-to-novel, half-class zero-shot."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cache.reader import CacheReader
from heads import HEADS
from pipeline.evaluate import evaluate_checkpoint, zero_shot
from pipeline.train import TrainConfig, train_head


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def few_shot(cfg: TrainConfig, shots: int, seeds: int, split: str = "test") -> dict[str, Any]:
    """K-shot training sets drawn with seeds 0..n-1, one run each (out/seed-<s>); test top-1 mean ± std."""
    runs = []
    for seed in range(seeds):
        run_dir = cfg.out / f"seed-{seed}"
        train_head(replace(cfg, shots=shots, seed=seed, out=run_dir))
        runs.append(evaluate_checkpoint(cfg.store, run_dir, split, cfg.device))
    return {"protocol": f"{shots}-shot x {seeds} seeds", "head": cfg.head,
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
        raise ValueError(f"{reader.path}: base-to-novel needs at least two classes")
    return base, novel


def base_to_novel(cfg: TrainConfig, seed: int = 0, split: str = "test") -> dict[str, Any]:
    """Train on the base half of the classes, then test base and novel classes separately and report
    their harmonic mean; only heads that score class names (text, prompt) can meet novel classes."""
    kind = HEADS.get(cfg.head)
    if not (getattr(kind, "uses_text", False) or getattr(kind, "uses_text_tower", False)):
        raise ValueError(f"--head {cfg.head}: base-to-novel needs a head that scores class names (text, prompt)")
    base, novel = _halves(CacheReader(cfg.store), seed)
    train_head(replace(cfg, classes=base))
    scores = [evaluate_checkpoint(cfg.store, cfg.out, split, cfg.device, classes=half)["top1"] for half in (base, novel)]
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
