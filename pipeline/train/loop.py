"""Stage two: one training loop for every head, reading only the cache.

AdamW with linear warm-up and cosine decay, label smoothing, gradient clipping, bf16 autocast on
GPU, validation (multi-view) every epoch, best and last checkpoints, early stopping and resuming.
The loop knows a head only through its `request` and its logits.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.heads import head_class
from clipcache.pipeline.common import autocast, note, resolve_device
from clipcache.pipeline.evaluate.metrics import classification_metrics
from clipcache.pipeline.evaluate.predict import predict, to_device
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import (
    BEST,
    LAST,
    append_metrics,
    load_state,
    model_identity,
    read_run,
    save_state,
    save_weights,
    truncate_metrics,
    write_run,
)
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.dataset import CacheDataset, batch_loader
from clipcache.pipeline.train.splits import left_out, left_out_note, train_val_test

# options that may differ on --resume (the store is identified by its fingerprint, not its path)
RESUMABLE_CHANGES = ("store", "out", "epochs", "patience", "resume", "preload", "workers", "device", "quiet")

def with_recipe(cfg: TrainConfig) -> TrainConfig:
    """Options the user left unset take the head's recipe (its paper's where published, e.g. CoCa's)."""
    recipe = asdict(head_class(cfg.head).recipe)
    return replace(cfg, **{k: v for k, v in recipe.items() if getattr(cfg, k) is None})


def _validate(cfg: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "shots"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.lr is not None and cfg.lr <= 0:
        raise InputError(f"--lr must be positive, got {cfg.lr}")
    if cfg.label_smoothing is not None and not 0 <= cfg.label_smoothing < 1:
        raise InputError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_head(cfg: TrainConfig) -> dict[str, Any]:
    """Train, validate every epoch, keep the best and last weights; returns the run description."""
    _validate(cfg)
    cfg = with_recipe(cfg)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    reader = CacheReader(cfg.store)
    frames = cfg.frames or reader.settings.frames
    splits = train_val_test(reader, cfg.train_split, cfg.val_split, cfg.test_split, cfg.shots, cfg.seed)
    head = build_for_store(reader, cfg.head, cfg.head_options, frames, cfg.templates, cfg.class_names, device,
                           cfg.classes)
    train_set = CacheDataset(reader, head.request, splits["train"], frames, train=True, preload=cfg.preload,
                             device=device, seed=cfg.seed, classes=cfg.classes)
    val_set = CacheDataset(reader, head.request, splits["val"], frames, train=False, preload=cfg.preload,
                           device=device, classes=cfg.classes)
    classes = cfg.classes or reader.classes
    shuffle = torch.Generator()
    loader = batch_loader(train_set, cfg.batch_size, shuffle=True, generator=shuffle,
                          drop_last=len(train_set) > cfg.batch_size, workers=cfg.workers,
                          pin_memory=device.type == "cuda")
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(loader)
    scheduler = _schedule(optimizer, int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    run = {
        "head": cfg.head, "options": cfg.head_options, "frames": frames, "templates": cfg.templates,
        "class_names": str(cfg.class_names.resolve()) if cfg.class_names else None, "classes": list(classes),
        "identity": model_identity(reader.settings), "store_fingerprint": reader.settings.fingerprint(),
        "request_layers": list(head.request.layers),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "splits": {name: int(len(videos)) for name, videos in splits.items()}, "left_out": left_out(reader),
        "features": _where(train_set), "best": None, "epochs_done": 0,
    }
    start_epoch, stale = 0, 0
    if cfg.resume:
        run, start_epoch, stale = _restore(cfg, run, head, optimizer, scheduler)
    elif (cfg.out / LAST).exists() or (cfg.out / "state.pt").exists():
        raise InputError(f"{cfg.out}: holds a run already; use --resume to continue it or another --out")
    write_run(cfg.out, run)
    note(left_out_note(run["left_out"], str(cfg.store)), cfg.quiet)
    note(f"{run['splits']['train']} training and {run['splits']['val']} validation videos; features: "
              f"{run['features']}", cfg.quiet)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for epoch in range(start_epoch, cfg.epochs):
        train_set.set_epoch(epoch)
        shuffle.manual_seed(cfg.seed * 100_003 + epoch)  # the order depends on the epoch only: resumable
        loss, rate = _train_epoch(head, loader, optimizer, scheduler, criterion, params, cfg, device, epoch)
        probs, labels = predict(head, val_set, device, cfg.batch_size, cfg.workers, cfg.quiet)
        metrics = classification_metrics(probs, labels, classes)
        row = {"epoch": epoch + 1, "loss": loss, "lr": scheduler.get_last_lr()[0], "samples_per_s": rate,
               "val_top1": metrics["top1"], "val_top5": metrics["top5"],
               "val_mean_class_accuracy": metrics["mean_class_accuracy"]}
        append_metrics(cfg.out, row)
        improved = run["best"] is None or metrics["top1"] > run["best"]["val_top1"]
        if improved:
            run["best"], stale = row, 0
            save_weights(head, cfg.out / BEST)
        else:
            stale += 1
        run["epochs_done"] = epoch + 1
        save_weights(head, cfg.out / LAST)
        save_state(cfg.out, {"head": head.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "stale": stale,
                             "best": run["best"]})
        write_run(cfg.out, run)
        note(f"epoch {epoch + 1}/{cfg.epochs}  loss {loss:.4f}  val top-1 {metrics['top1']:.3f}"
                  f"  {rate:.0f} samples/s", cfg.quiet)
        if cfg.patience and stale >= cfg.patience:
            run["stopped_early"] = epoch + 1
            write_run(cfg.out, run)
            break
    return run


def _where(dataset: CacheDataset) -> str:
    size = f"{dataset.feature_bytes() / 1e6:.2f} MB"
    return f"{size} preloaded on {dataset.placement}" if dataset.placement else f"{size} streamed from the store"


def _restore(cfg: TrainConfig, run: dict[str, Any], head: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LambdaLR) -> tuple[dict[str, Any], int, int]:
    """Continue a run from its last finished epoch (same head, same store), even after a kill."""
    previous = read_run(cfg.out)
    if previous["head"] != run["head"] or previous["store_fingerprint"] != run["store_fingerprint"]:
        raise InputError(f"{cfg.out}: was trained with head {previous['head']} on another store; cannot resume")
    now = json.loads(json.dumps(run["config"]))
    changed = [f"{key}: {previous['config'].get(key)} -> {value}" for key, value in now.items()
               if key not in RESUMABLE_CHANGES and previous["config"].get(key) != value]
    if changed:
        raise InputError(f"{cfg.out}: was trained with other options ({'; '.join(changed)}); resume with the "
                         "same ones or train into another --out")
    state = load_state(cfg.out)
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    epoch = int(state["epoch"])
    truncate_metrics(cfg.out, epoch)  # rows written after the last saved state are redone
    previous.update(best=state["best"], epochs_done=epoch)
    previous["config"].update({key: now[key] for key in RESUMABLE_CHANGES})
    return previous, epoch, int(state["stale"])


def _train_epoch(head: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LambdaLR, criterion: torch.nn.Module,
                 params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device,
                 epoch: int) -> tuple[float, float]:
    """One pass; returns (mean loss, samples per second)."""
    head.train()
    total_loss, samples, began = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=cfg.quiet, file=sys.stderr)
    for batch in bar:
        batch = to_device(batch, device)
        with autocast(device):
            loss = criterion(head(batch).float(), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(batch["label"])
        samples += len(batch["label"])
        bar.set_postfix(samples_per_s=f"{samples / (time.perf_counter() - began):.0f}")
    return total_loss / max(samples, 1), samples / (time.perf_counter() - began)

