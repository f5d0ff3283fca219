"""Multi-view prediction and the standard video-classification metrics."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cache.dataset import CacheDataset, batch_loader


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the heads' matmuls), a no-op on CPU where fp32 is faster and exact."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Features travel as stored (float16, or int8 with per-token scales) and become float32 on the
    device, dequantised there (autocast then picks bf16 on GPU)."""
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    scales = moved.pop("token_scales", None)
    if scales is not None:
        moved["tokens"] = moved["tokens"].float() * scales.unsqueeze(-1)
    return {k: v.float() if v.is_floating_point() else v for k, v in moved.items()}


@torch.no_grad()
def predict(head: torch.nn.Module, dataset: CacheDataset, device: torch.device, batch_size: int = 256,
            workers: int = 0, quiet: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), labels (N,)) per video: the softmax averaged over its test views.
    `batch_size` counts (video, view) items: token heads want the training batch size here."""
    if len(dataset) == 0:
        raise ValueError(f"{dataset.path}: no videos to evaluate")
    head.eval()
    totals: np.ndarray | None = None
    counts = np.zeros(len(dataset.videos))
    batches = batch_loader(dataset, batch_size, workers=workers)
    for batch in tqdm(batches, desc="evaluate", unit="batch", leave=False, disable=quiet, file=sys.stderr):
        with autocast(device):
            logits = head(to_device(batch, device))
        probs = logits.float().softmax(-1).cpu().numpy()
        if totals is None:
            totals = np.zeros((len(dataset.videos), probs.shape[1]))
        rows = batch["video"].numpy()
        np.add.at(totals, rows, probs)
        np.add.at(counts, rows, 1)
    return totals / counts[:, None], dataset.labels


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """top-1, top-5, mean class accuracy, per-class accuracy and the confusion matrix."""
    ranked = np.argsort(-probs, axis=1)
    top1 = ranked[:, 0] == labels
    top5 = (ranked[:, : min(5, probs.shape[1])] == labels[:, None]).any(axis=1)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    present = confusion.sum(axis=1) > 0
    per_class = np.where(present, np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1), np.nan)
    return {
        "videos": int(len(labels)),
        "top1": float(top1.mean()) if len(labels) else 0.0,
        "top5": float(top5.mean()) if len(labels) else 0.0,
        "mean_class_accuracy": float(np.nanmean(per_class)) if present.any() else 0.0,
        "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class)},
        "confusion": confusion.tolist(),
    }
