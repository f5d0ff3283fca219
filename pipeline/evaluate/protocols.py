"""Evaluation protocols of the papers: few-shot over seeds, base-to-novel, half-class zero-shot. Each gives
one record (results.py) whose `runs` hold every run's numbers, and its predictions per run."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.cache.location import Store
from clipcache.cache.reader import CacheReader
from clipcache.heads import head_class
from clipcache.pipeline.common import launched, note, use_compute_threads
from clipcache.pipeline.evaluate.head import evaluate_checkpoint
from clipcache.pipeline.evaluate.report import format_report, split_note, write_result
from clipcache.pipeline.evaluate.results import Result, over_runs, protocol_description, run_metrics
from clipcache.pipeline.evaluate.zero_shot import zero_shot
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loop import train_head
from clipcache.pipeline.train.splits import drawn_note, store_splits


def run_train_head(cfg: TrainConfig) -> dict[str, Any]:
    """`clipcache train-head`: one run, or the protocol its options name (K-shot over seeds, base-to-novel),
    whose result goes to OUT/eval/<what was evaluated>/; computed on --threads torch threads (default: by
    `compute_threads`)."""
    use_compute_threads(cfg.threads)
    if cfg.captions is None and not Path(cfg.train_split).is_file():
        note(drawn_note(cfg.store, store_splits(CacheReader(cfg.store), cfg.split_fractions)[1]), cfg.quiet)
    if launched() and (cfg.base_to_novel or (cfg.shots and cfg.seeds > 1) or cfg.class_splits > 1):
        raise InputError("--base-to-novel, --shots with several --seeds and --class-splits run in one process; "
                         "start them without torchrun")
    if cfg.base_to_novel:
        result = base_to_novel(cfg)
    elif cfg.class_splits > 1:
        from clipcache.pipeline.localize.open_set import open_set_protocol  # imports train and evaluate, as we do
        result = open_set_protocol(cfg)
    elif cfg.shots and cfg.seeds > 1:
        result = few_shot(cfg)
    else:
        return train_head(cfg)
    note(split_note(result.record), cfg.quiet)
    result.record["output"] = str(write_result(result, cfg.out / "eval", CacheReader(cfg.store)))
    return result.record


def _named(result: Result, run: str) -> Result:
    for scores in result.scores:
        scores.run = run
    return result


def few_shot(cfg: TrainConfig) -> Result:
    """K-shot training sets drawn with seeds 0..n-1, one run each (out/seed-<s>) scored on the run's test
    split; mean and std over the seeds."""
    results = []
    for seed in range(cfg.seeds):
        run_dir = cfg.out / f"seed-{seed}"
        train_head(replace(cfg, seed=seed, out=run_dir))
        results.append(_named(evaluate_checkpoint(cfg.store, run_dir, None, cfg.device, quiet=cfg.quiet,
                                                  pretrained=cfg.pretrained), f"seed-{seed}"))
    options = {"shots": cfg.shots, "seeds": cfg.seeds, "weights": "best", "train_split": cfg.train_split,
               "val_split": cfg.val_split}
    description = protocol_description(results, "few-shot", options, checkpoint=None)
    runs = [run_metrics(r, seed=s, checkpoint=r.record["checkpoint"]) for s, r in enumerate(results)]
    return over_runs(description, runs, [s for r in results for s in r.scores])


def split_classes(classes: tuple[str, ...], seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A random half of the classes (seeded) and the rest, each in the store's order."""
    chosen = set(np.random.default_rng(seed).permutation(len(classes))[: len(classes) // 2].tolist())
    base = tuple(c for i, c in enumerate(classes) if i in chosen)
    return base, tuple(c for c in classes if c not in base)


def harmonic_mean(base: float, novel: float) -> float:
    return 2 * base * novel / (base + novel) if base + novel > 0 else 0.0


def _halves(reader: CacheReader, seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    base, novel = split_classes(reader.classes, seed)
    if not base or not novel:
        raise InputError(f"{reader.path}: base-to-novel needs at least two classes")
    return base, novel


def _base_novel_result(halves: tuple[tuple[str, ...], tuple[str, ...]], results: list[Result], seed: int,
                       options: dict[str, Any]) -> Result:
    """Base and novel top-1 and their harmonic mean; each half's numbers and classes in `runs`."""
    base, novel = (_named(r, name) for r, name in zip(results, ("base", "novel")))
    options = {**options, "seed": seed, "base_classes": list(halves[0]), "novel_classes": list(halves[1])}
    record = protocol_description(results, "base-to-novel", options)
    scores = (base.record["top1"], novel.record["top1"])
    record.update(base_top1=scores[0], novel_top1=scores[1], harmonic_mean=harmonic_mean(*scores),
                  runs=[run_metrics(r, classes=name) for r, name in zip(results, ("base", "novel"))])
    return Result(record, [s for r in results for s in r.scores])


def base_to_novel(cfg: TrainConfig) -> Result:
    """Train on the base half of the classes, then test base and novel classes separately and report
    their harmonic mean; only heads that score class names (text, prompt) can meet novel classes."""
    if not head_class(cfg.head).scores_class_names():
        raise InputError(f"--head {cfg.head}: base-to-novel needs a head that scores class names (text, prompt)")
    halves = _halves(CacheReader(cfg.store), cfg.seed)
    train_head(replace(cfg, classes=halves[0]))
    results = [evaluate_checkpoint(cfg.store, cfg.out, None, cfg.device, classes=half, quiet=cfg.quiet,
                                   pretrained=cfg.pretrained) for half in halves]
    return _base_novel_result(halves, results, cfg.seed, {"weights": "best"})


def zero_shot_base_to_novel(store: Store, seed: int = 0, split: str = "test", templates: str = "text4vis",
                            names_file: Path | None = None, device: str = "auto", quiet: bool = True,
                            pretrained: Path | None = None, fractions: tuple[float, float, float] | None = None
                            ) -> Result:
    """The untrained reference on the same base and novel halves as `base_to_novel` with this seed."""
    halves = _halves(CacheReader(store), seed)
    results = [zero_shot(store, split, templates, names_file, device, half, quiet, pretrained, fractions)
               for half in halves]
    return _base_novel_result(halves, results, seed, {"templates": templates, "class_names": names_file})


def half_class_zero_shot(store: Store, halves: int, split: str = "test", templates: str = "text4vis",
                         names_file: Path | None = None, device: str = "auto", quiet: bool = True,
                         pretrained: Path | None = None, fractions: tuple[float, float, float] | None = None
                         ) -> Result:
    """Text4Vis's protocol: zero-shot top-1 on N random halves of the classes (seeds 0..N-1), mean ± std."""
    classes = CacheReader(store).classes
    results = [_named(zero_shot(store, split, templates, names_file, device, split_classes(classes, seed)[0],
                                quiet, pretrained, fractions), f"half-{seed}") for seed in range(halves)]
    options = {"templates": templates, "class_names": names_file, "halves": halves}
    description = protocol_description(results, "half-class zero-shot", options)
    runs = [run_metrics(r, seed=s, classes=r.record["options"]["classes"]) for s, r in enumerate(results)]
    return over_runs(description, runs, [s for r in results for s in r.scores])


def format_training(result: dict[str, Any]) -> str:
    """The printed form of `run_train_head`: one line for a run or for a protocol."""
    if "protocol" in result:
        return format_report(result)
    best = result["best"]
    selected = result.get("selected_by", {"field": "val_top1", "label": "val top-1"})  # runs before retrieval
    stopping = result.get("stopping", {}).get("why")  # runs before stopping on convergence have none
    return (f"{result['config']['out']}: {result['epochs_done']} epochs, best {selected['label']} "
            f"{best[selected['field']]:.4f} at epoch {best['epoch']}" + (f" ({stopping})" if stopping else ""))
