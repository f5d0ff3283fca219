"""A trained head on a split of a store: multi-view predictions and metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.common import resolve_device
from clipcache.pipeline.evaluate.metrics import classification_metrics
from clipcache.pipeline.evaluate.predict import predict
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import BEST, check_compatible, load_weights, read_run
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.splits import evaluation_videos, left_out


def evaluate_checkpoint(store: Path, run_dir: Path, split: str | None = None, device: str = "auto",
                        weights: str = BEST, classes: tuple[str, ...] | None = None, quiet: bool = True
                        ) -> dict[str, Any]:
    """Multi-view metrics of a trained head on a split of `store` (default: the run's test split; any store
    made by the same model), over the run's classes or, for heads that score by class name (text, prompt),
    any other classes."""
    run = read_run(run_dir)
    reader = CacheReader(store)
    check_compatible(run, reader.settings, store)
    split = split or run["config"]["test_split"]
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
    dataset = CacheDataset(reader, head.request, evaluation_videos(reader, split), run["frames"], train=False,
                           device=torch_device, classes=classes)
    probs, labels = predict(head, dataset, torch_device, run["config"]["batch_size"], quiet=quiet)
    return {"kind": f"head {run['head']}", "store": str(store), "split": split, "checkpoint": str(run_dir / weights),
            "left_out": left_out(reader), **classification_metrics(probs, labels, classes)}
