"""A trained head on a split of a store: multi-view predictions and metrics, and whether the split is
really held out from that head."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.common import resolve_device
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.evaluate.results import Result, Scores, describe, single
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import BEST, check_compatible, load_weights, read_run
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.splits import evaluation_split, train_val_test


def held_out(reader: CacheReader, run: dict[str, Any], videos: np.ndarray, weights: str) -> bool | None:
    """Whether none of `videos` trained the head or selected its weights (validation selects the best
    epoch, and with early stopping the last one too); None when that cannot be known: a store other than
    the one the head was trained on, or training splits that no longer resolve."""
    if run["store_fingerprint"] != reader.settings.fingerprint():
        return None
    config = run["config"]
    try:
        fit = train_val_test(reader, config["train_split"], config["val_split"], config["test_split"],
                             config["shots"], config["seed"])
    except InputError:
        return None
    used = [fit["train"]] + ([fit["val"]] if weights == BEST or config.get("patience") else [])
    return not np.isin(videos, np.concatenate(used)).any()


def evaluate_checkpoint(store: Path, run_dir: Path, split: str | None = None, device: str = "auto",
                        weights: str = BEST, classes: tuple[str, ...] | None = None, quiet: bool = True) -> Result:
    """Multi-view metrics of a trained head on a split of `store` (default: the run's test split; any store
    made by the same model), over the run's classes or, for heads that score by class name (text, prompt),
    any other classes."""
    run = read_run(run_dir)
    reader = CacheReader(store)
    check_compatible(run, reader.settings, store)
    scored = evaluation_split(reader, split or run["config"]["test_split"])
    classes = classes or tuple(run["classes"])
    torch_device = resolve_device(device)
    class_file = Path(run["class_names"]) if run["class_names"] else None
    head = build_for_store(reader, run["head"], run["options"], run["frames"], run["templates"], class_file,
                           torch_device, classes)
    try:
        load_weights(head, run_dir / weights)
    except RuntimeError:
        raise InputError(f"{run_dir}: a {run['head']} head trained on {len(run['classes'])} classes cannot score "
                         f"{len(classes)} other classes") from None
    dataset = CacheDataset(reader, head.request, scored.videos, run["frames"], train=False, device=torch_device,
                           classes=classes)
    probs, labels = predict(head, dataset, torch_device, run["config"]["batch_size"], quiet=quiet)
    options = {"weights": weights.removesuffix(".safetensors"),
               "classes": list(classes) if classes != tuple(run["classes"]) else None}
    description = describe(reader, method=f"head {run['head']}", split=scored, checkpoint=run_dir / weights,
                           held_out=held_out(reader, run, dataset.videos, weights), options=options,
                           classes=len(classes))
    return single(description, Scores(dataset.videos, labels, probs, classes))
