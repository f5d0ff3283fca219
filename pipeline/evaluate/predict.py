"""Predictions of a head over a dataset: features moved to the device, the softmax averaged over each
video's test views."""
from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from clipcache import InputError
from clipcache.pipeline.common import autocast
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loader import batch_loader


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Features travel as stored (float16, or int8 with per-token scales) and become float32 on the
    device, dequantised there (autocast then picks bf16 on GPU)."""
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    scales = moved.pop("token_scales", None)
    if scales is not None:
        moved["tokens"] = moved["tokens"].float() * scales.unsqueeze(-1)
    return {k: v.float() if v.is_floating_point() else v for k, v in moved.items()}


@torch.no_grad()
def view_sums(per_item: Callable[[dict[str, torch.Tensor]], torch.Tensor], dataset: CacheDataset,
              device: torch.device, batch_size: int = 256, workers: int = 0, quiet: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
    """(sums (N, K), views (N,)) per video of the dataset: `per_item`'s rows (K values per (video, view) item of a
    batch on the device) summed over the video's test views, and how many there were."""
    if len(dataset) == 0:
        raise InputError(f"{dataset.path}: no videos to evaluate")
    totals: np.ndarray | None = None
    counts = np.zeros(len(dataset.videos))
    batches = batch_loader(dataset, batch_size, workers=workers)
    bar = tqdm(total=len(batches), desc="evaluate", unit="batch", leave=False, disable=quiet, file=sys.stderr)
    for batch in batches:
        rows, on_device = batch["video"].numpy(), to_device(batch, device)
        del batch  # its memory may take the batch after next while this one is scored
        with autocast(device):
            values = per_item(on_device).float().cpu().numpy()
        if totals is None:
            totals = np.zeros((len(dataset.videos), values.shape[1]))
        np.add.at(totals, rows, values)
        np.add.at(counts, rows, 1)
        bar.update()
    bar.close()
    return totals, counts


def predict(head: torch.nn.Module, dataset: CacheDataset, device: torch.device, batch_size: int = 256,
            workers: int = 0, quiet: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), labels (N,)) per video: the softmax averaged over its test views.
    `batch_size` counts (video, view) items: token heads want the training batch size here."""
    head.eval()
    totals, counts = view_sums(lambda batch: head(batch).float().softmax(-1), dataset, device, batch_size, workers,
                               quiet)
    return totals / counts[:, None], dataset.labels
