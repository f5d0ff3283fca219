"""Stage two: one training loop for every head, reading only the cache.

AdamW with the head's recipe (`heads.recipes`: learning rate, weight decay, warm-up, cosine or constant
schedule, label smoothing, gradient clipping), bf16 autocast on GPU, validation (multi-view) every
epoch, best and last checkpoints, early stopping and exact resuming. A small training set is passed
over several times per epoch so that every run makes at least `--min-steps` optimiser steps. The loop
knows a head only through its `request`, `prepare` and `lr_scales`, and what it learns (classification, or
text-video retrieval with `--captions`) only through its `pipeline.train.task.Task`.

A run whose loss or weights stop being finite numbers stops at once (`Diverged`, one line naming the epoch and
step): nothing of that epoch is saved, so its weights are never published as best and metrics.jsonl stays
strict JSON; the run directory keeps its last finished epoch.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.heads import resolved_options
from clipcache.heads.base import Head
from clipcache.heads.recipes import RECIPES, RETRIEVAL_RECIPES, Schedule
from clipcache.pipeline.common import autocast, note, resolve_device
from clipcache.pipeline.evaluate.predict import to_device
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import (
    BEST,
    LAST,
    STATE,
    check_run_dir,
    load_state,
    model_identity,
    save_state,
    save_weights,
    weights_epoch,
    write_metrics,
    write_run,
)
from clipcache.pipeline.train.config import CYCLES, TrainConfig
from clipcache.pipeline.train.curves import write_curves
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.distributed import Ranks, start
from clipcache.pipeline.train.loader import Batches, batch_loader
from clipcache.pipeline.train.splits import left_out, left_out_note
from clipcache.pipeline.train.task import Task, check_retrieval_options, make_task

# options that may differ on --resume (the store is identified by its fingerprint and a checkpoint by its sha256,
# not their paths)
RESUMABLE_CHANGES = ("store", "out", "tiou", "epochs", "patience", "resume", "preload", "workers", "device", "quiet",
                     "pretrained", "threads")


SELECT_MIN_VIDEOS = 4  # fewer validation videos cannot select an epoch when stopping on convergence: the last is kept


class Diverged(InputError):
    """The loss or the weights became NaN or infinite (usually a learning rate too high for the head)."""

    def __init__(self, cfg: TrainConfig, what: str, epoch: int, step: int, total: int) -> None:
        super().__init__(f"{cfg.out}: {what} at epoch {epoch + 1}, step {step}/{total}; stopped without saving that "
                         f"epoch (the run keeps its last finished one): lower --lr (was {cfg.lr:g}) or --grad-clip "
                         "and train into another --out")


def with_recipe(cfg: TrainConfig) -> TrainConfig:
    """Options the user left unset take the head's recipe (its paper's where published, e.g. CoCa's), for
    retrieval its retrieval recipe. Without --epochs and --patience the run stops on convergence: the recipe's
    epochs become one cycle, and up to `CYCLES` of them are planned (`stopping`)."""
    recipe = asdict((RETRIEVAL_RECIPES if cfg.captions is not None else RECIPES)[cfg.head])
    converge = cfg.epochs is None and cfg.patience is None and cfg.cycle is None
    cfg = replace(cfg, **{k: v for k, v in recipe.items() if getattr(cfg, k) is None})
    if converge:
        cfg = replace(cfg, cycle=cfg.epochs, epochs=CYCLES * cfg.epochs)
    return replace(cfg, patience=cfg.patience or 0)


def _validate(cfg: TrainConfig) -> None:
    """What the options' declared limits (checked on construction) cannot say: open bounds, and the run folder."""
    if cfg.lr is not None and not cfg.lr > 0:
        raise InputError(f"--lr must be positive, got {cfg.lr}")
    if cfg.label_smoothing is not None and not 0 <= cfg.label_smoothing < 1:
        raise InputError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    check_retrieval_options(cfg)
    check_run_dir(cfg.out)


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, cycle: int, kind: Schedule
              ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant or cosine to 0 over the rest of the first `cycle` steps; a run that goes on
    (stopping on convergence) restarts the cosine at each further cycle (warm restarts, as SGDR), so every cycle
    ends decayed and can be compared with the last. A function of the step alone: resuming needs no more."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == Schedule.constant:
            return 1.0
        start, length = (warmup, cycle - warmup) if step < cycle else (0, cycle)
        return 0.5 * (1 + math.cos(math.pi * (step % cycle - start) / max(length, 1)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimizer(head: Head, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one group per learning-rate multiple the head asks for (`Head.lr_scales`); the fused
    kernel (one call for all parameters instead of a dozen per tensor: ~30% of a small head's step on CPU)."""
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, param in head.named_parameters():
        if param.requires_grad:
            groups.setdefault(head.lr_scales.get(name, 1.0), []).append(param)
    return torch.optim.AdamW([{"params": params, "lr": cfg.lr * scale} for scale, params in groups.items()],
                             lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


@dataclass
class Training:
    """What one run trains with, built once; `state()` and `restore()` are its resumable part."""

    cfg: TrainConfig
    head: Head
    train_set: CacheDataset
    val_set: CacheDataset
    loader: Batches
    shuffle: torch.Generator
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    passes: int  # over the training set per epoch
    ranks: Ranks
    model: nn.Module  # what the step calls: the head, or DDP around it

    @property
    def device(self) -> torch.device:
        return self.ranks.device

    @property
    def steps_per_epoch(self) -> int:
        return self.passes * len(self.loader)

    def state(self, run: dict[str, Any], rows: list[dict[str, Any]], stale: int) -> dict[str, Any]:
        """Everything a resumed run needs to repeat the rest exactly, random generators included
        (dropout draws from torch's)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.ranks.world > 1:  # collective: every rank calls state(), rank 0 saves it
            rng["ranks"] = self.ranks.gather_rng(rng["torch"])
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng, "epoch": run["epochs_done"], "stale": stale,
                "run": run, "metrics": rows}

    def restore(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ranks = state["rng"].get("ranks")
        torch.set_rng_state(ranks[self.ranks.rank] if ranks and len(ranks) == self.ranks.world
                            else state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def train_head(cfg: TrainConfig) -> dict[str, Any]:
    """Train, validate every epoch, keep the best and last weights; returns the run description."""
    _validate(cfg)
    ranks = start(resolve_device(cfg.device))
    device = ranks.device
    if ranks.world > 1 and cfg.captions is not None:
        raise InputError("--captions trains in one process: its contrastive loss spans the whole batch, which "
                         "the ranks would each see only a slice of")
    if not ranks.main:
        cfg = replace(cfg, quiet=True)  # rank 0 alone prints
    reader = CacheReader(cfg.store)
    cfg = with_recipe(cfg)
    task = make_task(cfg, reader)
    cfg = task.cfg  # a task may narrow the classes it trains (open-set localisation trains the seen ones)
    frames = task.frames()
    splits = task.splits()
    torch.manual_seed(cfg.seed)
    training = _build(cfg, reader, task, splits, frames, ranks)
    task.attach(training.head, training.train_set, training.val_set, cfg.quiet)
    classes = cfg.classes or reader.classes
    run = json.loads(json.dumps({  # plain JSON values (paths and choices as text): run.json and the state hold it
        "head": cfg.head, "options": resolved_options(cfg.head, cfg.head_options), "frames": frames,
        "templates": cfg.templates, "class_names": str(cfg.class_names.resolve()) if cfg.class_names else None,
        "classes": list(classes), "identity": model_identity(reader.settings),
        "store_fingerprint": reader.settings.fingerprint(),
        "request_layers": list(training.head.request.layers), "config": asdict(cfg),
        "splits": {name: int(len(videos)) for name, videos in splits.items()}, "left_out": left_out(reader),
        "features": training.train_set.where(), **task.run_fields(), "best": None, "epochs_done": 0,
    }, default=str))
    state = _previous_state(cfg)
    rows: list[dict[str, Any]] = []
    stale = 0
    if state is not None:
        run, rows, stale = _resumed(cfg, run, state), state["metrics"], int(state["stale"])
        training.restore(state)
        note(f"{cfg.out}: resumed after epoch {run['epochs_done']} of {cfg.epochs}"
             + (" (it had stopped early)" if run.get("stopped_early") else ""), cfg.quiet)
        if ranks.main:
            _publish(cfg.out, training.head, run, rows)  # whatever a kill cut short after the state was saved
    elif ranks.main:
        write_run(cfg.out, run)
    note(left_out_note(run["left_out"], str(cfg.store)), cfg.quiet)
    note(f"{run['splits']['train']} training and {len(training.val_set)} validation videos; features: "
         f"{run['features']}", cfg.quiet)
    note(_plan(cfg, training), cfg.quiet)
    if state is None:  # from every training batch, whichever rank reads it
        training.head.prepare(to_device(batch, device) for batch in _global_batches(training))
    with _progress(training, run["epochs_done"]) as bar:
        _epochs(training, task, run, rows, stale, bar)
    ranks.barrier()  # no rank returns before rank 0 has written the last epoch
    return run


def _progress(training: Training, done: int) -> tqdm:
    """One bar for the whole run: the steps of every planned epoch (validation and saving between epochs are in
    its measured rate), so its ETA is the run's (the cycle's, when stopping on convergence); validation shows no
    bar of its own."""
    cfg = training.cfg
    return tqdm(total=_planned(cfg, done) * training.steps_per_epoch, initial=done * training.steps_per_epoch,
                unit="step", leave=False, disable=cfg.quiet, file=sys.stderr, dynamic_ncols=True)


def _epochs(training: Training, task: Task, run: dict[str, Any], rows: list[dict[str, Any]], stale: int,
            bar: tqdm) -> None:
    """Train, validate, save and report each remaining epoch; stop early on convergence or --patience."""
    cfg, device, ranks = training.cfg, training.device, training.ranks
    for epoch in range(run["epochs_done"], run.get("stopped_early") or cfg.epochs):
        planned = _planned(cfg, epoch)
        bar.total = planned * training.steps_per_epoch
        bar.set_description(f"epoch {epoch + 1}/{planned}")
        loss, rate = _train_epoch(training, task, epoch, bar)
        bar.set_postfix_str("validating")
        row = {"epoch": epoch + 1, "step": (epoch + 1) * training.steps_per_epoch, "loss": loss,
               "lr": training.scheduler.get_last_lr()[0], "samples_per_s": rate,
               **task.validate(training.head, training.val_set, device, cfg.batch_size, cfg.workers, quiet=True)}
        rows.append(row)
        best = None if run["best"] is None else task.score(run["best"])
        stale = 0 if best is None or task.score(row)[0] > best[0] else stale + 1  # --patience
        if best is None or run["best"]["epoch"] < _first_selectable(cfg, training) or task.score(row) > best:
            run["best"] = row
        run["epochs_done"] = epoch + 1
        run["stopping"] = _stopping(cfg, task, rows, stale, run["best"])
        if run["stopping"]["rule"] in ("converged", "patience"):
            run["stopped_early"] = epoch + 1
        state = training.state(run, rows, stale)
        if ranks.main:
            save_state(cfg.out, state)  # the epoch is done once this file is replaced
            _publish(cfg.out, training.head, run, rows)
        note(f"epoch {epoch + 1}/{planned}  step {row['step']}/{planned * training.steps_per_epoch}  "
             f"loss {loss:.4f}  lr {row['lr']:.2e}  {task.describe(row)}  {rate:.0f} samples/s", cfg.quiet)
        if run["stopping"]["rule"] != "training":
            note(f"{cfg.out}: {run['stopping']['line']}", cfg.quiet)
        if "stopped_early" in run:
            break


def _planned(cfg: TrainConfig, epoch: int) -> int:
    """The epochs planned so far while epoch `epoch` (from 0) trains: --epochs, or the end of its cycle (the
    progress bar and the epoch lines count to it, so their ETA is that of the cycle under way)."""
    return min(cfg.epochs, cfg.cycle * (epoch // cfg.cycle + 1)) if cfg.cycle else cfg.epochs


def _first_selectable(cfg: TrainConfig, training: Training) -> int:
    """The first epoch that may be kept as best (before it, each epoch stands in as best, so best.safetensors
    always exists): every epoch with --epochs; half a cycle in when the run stops on convergence; none (the last
    weights are kept) when validation has fewer than `SELECT_MIN_VIDEOS` videos. Measured, proposals head, 1
    held-out validation video, seeds 0-1: on 16 videos with 3 short instances each the best epoch (13 of 20) gave
    test mAP@0.5 0.60 / 0.86 where the last gave 0.77 / 0.87; on the localisation tests' store best and last tied
    (recall@10@0.5 1.0), and validation AR@10 fell from 0.7 to 0.3 over epochs where test recall stayed 1.0."""
    if not cfg.cycle:
        return 1
    return math.ceil(cfg.cycle / 2) if len(training.val_set.videos) >= SELECT_MIN_VIDEOS else cfg.epochs + 1


def _still_learning(task: Task, rows: list[dict[str, Any]], window: int) -> bool:
    """Whether validation's first score (what `--patience` watches), averaged over the last `window` epochs, beat
    its average over the `window` before. Averaged, because a small validation split is noisy: on 24 caption
    queries the best single epoch often came 6 epochs before a cycle's end while the average still rose by 0.12
    to 0.18 per window (and more training then raised test R@1)."""
    scores = [task.score(row)[0] for row in rows]
    return len(scores) < 2 * window or sum(scores[-window:]) > sum(scores[-2 * window:-window])


def _stopping(cfg: TrainConfig, task: Task, rows: list[dict[str, Any]], stale: int, best: dict[str, Any]
              ) -> dict[str, Any]:
    """Why the run stops after the epoch just finished (`rule` "training" while it goes on), from the options
    and the metrics rows alone, which the state holds: a resumed run, and every rank, decides the same.

    Without --epochs and --patience the run trains in cycles of the recipe's epochs and ends a cycle by going on
    only while validation still improved in the cycle's last quarter, up to `CYCLES` cycles. Measured (tiny
    model, prompt --captions on 12 kinds, 48 training videos): one cycle of 300 steps ended still rising (best
    epoch 14-18 of 20) with test t2v R@1 0.75 / 0.67 / 0.75 on seeds 0-2, a fixed 1,200 steps 0.79 / 0.67 / 0.92,
    and this rule stopped converged after 2 cycles (600 steps) on each seed with 0.79 / 0.67 / 0.92."""
    epoch, label = len(rows), task.selected_by["label"]
    found = f"kept as best: {label} {best[task.selected_by['field']]:.4f} at epoch {best['epoch']}"
    window = math.ceil(cfg.cycle / 4) if cfg.cycle else 0
    if cfg.patience and stale >= cfg.patience:
        rule, why = "patience", (f"stopped early at epoch {epoch} of {cfg.epochs}: no better {label} in {stale} "
                                 f"epochs (--patience {cfg.patience})")
    elif epoch >= cfg.epochs:
        rule, why = ("budget", f"budget reached: {epoch} epochs ({CYCLES} cycles of {cfg.cycle})") if cfg.cycle \
            else ("epochs", f"trained the {epoch} epochs given")
    elif cfg.cycle and epoch % cfg.cycle == 0 and not _still_learning(task, rows, window):
        rule, why = "converged", (f"converged at epoch {epoch} (cycle {epoch // cfg.cycle} of at most {CYCLES}): "
                                  f"mean {label} of its last {window} epochs no higher than of the {window} before")
    else:
        return {"rule": "training", "epoch": epoch, "why": "", "line": ""}
    return {"rule": rule, "epoch": epoch, "why": why, "line": f"{why}; {found}"}


def _build(cfg: TrainConfig, reader: CacheReader, task: Task, splits: dict[str, Any], frames: int, ranks: Ranks
           ) -> Training:
    device = ranks.device
    head = build_for_store(reader, cfg.head, cfg.head_options, frames, cfg.templates, cfg.class_names, device,
                           cfg.classes, cfg.pretrained)
    train_set, val_set = task.datasets(head, splits, frames, cfg, device)
    for name, dataset in (("training", train_set), ("validation", val_set)):
        if len(dataset.videos) == 0:
            raise InputError(f"{reader.path}: no {name} videos of the classes being trained; name other splits "
                             "with --train-split/--val-split")
    shuffle = torch.Generator()
    if len(train_set) < ranks.world or cfg.batch_size < ranks.world:
        raise InputError(f"{ranks.world} ranks need at least as many training videos and --batch-size (each rank "
                         f"reads its share of every batch); got {len(train_set)} videos, batch {cfg.batch_size}")
    loader = _training_batches(cfg, train_set, shuffle, ranks)
    optimizer = _optimizer(head, cfg)
    cycle = cfg.cycle or cfg.epochs  # --min-steps and the schedule are the recipe's, per cycle
    passes = max(1, math.ceil(cfg.min_steps / (cycle * len(loader))))
    steps_per_epoch = passes * len(loader)
    scheduler = _schedule(optimizer, round(cfg.warmup_epochs * steps_per_epoch), cycle * steps_per_epoch,
                          cfg.schedule)
    return Training(cfg, head, train_set, val_set, loader, shuffle, optimizer, scheduler, passes, ranks,
                    ranks.wrap(head))


def _training_batches(cfg: TrainConfig, train_set: CacheDataset, shuffle: torch.Generator, ranks: Ranks
                      ) -> Batches:
    """Shuffled batches of --batch-size (a smaller set is one batch), this rank's slice of each."""
    return batch_loader(train_set, cfg.batch_size, shuffle=True, generator=shuffle,
                        drop_last=len(train_set) > cfg.batch_size, workers=cfg.workers,
                        pin_memory=ranks.device.type == "cuda", rank=ranks.rank, world=ranks.world)


def _global_batches(training: Training) -> Batches:
    """The training batches as one process sees them (every rank's slices together)."""
    if training.ranks.world == 1:
        return training.loader
    return _training_batches(training.cfg, training.train_set, training.shuffle, Ranks(device=training.device))


def _previous_state(cfg: TrainConfig) -> dict[str, Any] | None:
    """The state to continue from (with --resume), or None to start; a finished run is never overwritten."""
    if not cfg.resume:
        if (cfg.out / STATE).exists() or (cfg.out / LAST).exists():
            raise InputError(f"{cfg.out}: holds a run already; use --resume to continue it or another --out")
        return None
    state = load_state(cfg.out)
    if state is None:
        note(f"{cfg.out}: no finished epoch to resume from; starting from the beginning", cfg.quiet)
    return state


def _resumed(cfg: TrainConfig, run: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """The saved run description, after checking it was trained the same way (same head, same store)."""
    previous = state["run"]
    if previous["head"] != run["head"] or previous["store_fingerprint"] != run["store_fingerprint"]:
        raise InputError(f"{cfg.out}: was trained with head {previous['head']} on another store; cannot resume")
    if previous.get("captions") != run.get("captions"):  # a caption file is recorded by its content's hash
        before = previous.get("captions") or {"captions": None, "captions_sha256": None}
        raise InputError(f"{cfg.out}: was trained with other captions ({before['captions']}, sha256 "
                         f"{before['captions_sha256']}); resume with the same caption file or train into another --out")
    now = run["config"]
    changed = [f"{key}: {previous['config'].get(key)} -> {value}" for key, value in now.items()
               if key not in RESUMABLE_CHANGES and previous["config"].get(key) != value]
    if changed:
        raise InputError(f"{cfg.out}: was trained with other options ({'; '.join(changed)}); resume with the "
                         "same ones or train into another --out")
    previous["config"].update({key: now[key] for key in RESUMABLE_CHANGES})
    return previous


def _publish(out: Path, head: Head, run: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The files derived from the state: last weights, best weights when this epoch is the best, the
    metrics and run.json. Written after the state, and again on --resume."""
    epoch = run["epochs_done"]
    save_weights(head, out / LAST, epoch)
    best = run["best"]["epoch"]
    if best == epoch:
        save_weights(head, out / BEST, epoch)
    elif weights_epoch(out / BEST) != best:
        note(f"{out / BEST}: missing or not from the best epoch {best}; written again when validation improves")
    write_metrics(out, rows)
    write_curves(out, rows, run["config"]["quiet"])
    write_run(out, run)


def _plan(cfg: TrainConfig, training: Training) -> str:
    """The one line that says how the run will train."""
    batches, passes = len(training.loader), training.passes
    repeats = f" x {passes} passes" if passes > 1 else ""
    epochs = cfg.cycle or cfg.epochs
    more = (f" per cycle, another cycle while validation still improves, at most {cfg.epochs} epochs" if cfg.cycle
            else "")
    return (f"{cfg.head}: batch {min(cfg.batch_size, len(training.train_set))}, {batches} steps per pass{repeats} "
            f"x {epochs} epochs = {epochs * training.steps_per_epoch} steps{more} (--min-steps {cfg.min_steps}); "
            f"AdamW lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, {cfg.warmup_epochs:g} warm-up epochs, "
            f"{cfg.schedule} schedule")


def _train_epoch(training: Training, task: Task, epoch: int, bar: tqdm) -> tuple[float, float]:
    """`passes` passes over the training set, each step counted on the run's `bar`; returns (mean loss, samples
    per second). Each pass draws its order, views, frames (and the task's draws, e.g. captions) from (seed, pass
    index) only, so a resumed run repeats them exactly."""
    model, cfg, optimizer, ranks = training.model, training.cfg, training.optimizer, training.ranks
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total_steps = cfg.epochs * training.steps_per_epoch
    step = epoch * training.steps_per_epoch
    model.train()
    total_loss, samples, began = 0.0, 0, time.perf_counter()
    for index in range(epoch * training.passes, (epoch + 1) * training.passes):
        training.train_set.set_epoch(index)
        task.set_pass(index)
        training.shuffle.manual_seed(cfg.seed * 100_003 + index)
        for batch in training.loader:
            batch = to_device(batch, training.device)
            with autocast(training.device):
                loss = task.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            (loss * ranks.share(len(batch["video"]))).backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            training.scheduler.step()
            step += 1
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(cfg, f"the training loss became {value}", epoch, step, total_steps)
            total_loss += value * len(batch["video"])
            samples += len(batch["video"])
            bar.update()
            bar.set_postfix(loss=f"{total_loss / samples:.4f}")
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise Diverged(cfg, "the weights became non-finite", epoch, step, total_steps)
    total_loss, samples = ranks.sum(total_loss, samples)
    return total_loss / max(samples, 1), samples / (time.perf_counter() - began)
