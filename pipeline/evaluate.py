"""Evaluation of a trained head or of zero-shot text classification: metrics, JSON report, figures."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.dataset import CacheDataset
from cache.reader import CacheReader
from cache.splits import evaluation_videos, left_out
from pipeline.checkpoint import BEST, check_compatible, load_weights, read_run
from pipeline.context import head_context
from pipeline.encoder import resolve_device
from pipeline.metrics import classification_metrics, predict
from pipeline.text_embeddings import text_embeddings
from pipeline.train import build_for_store
from heads.text import TextHead


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
        raise ValueError(f"{run_dir}: a {run['head']} head trained on {len(run['classes'])} classes cannot score "
                         f"{len(classes)} other classes") from None
    dataset = CacheDataset(reader, head.request, evaluation_videos(reader, split), run["frames"], train=False,
                           device=torch_device, classes=classes)
    probs, labels = predict(head, dataset, torch_device, run["config"]["batch_size"], quiet=quiet)
    return {"kind": f"head {run['head']}", "store": str(store), "split": split, "checkpoint": str(run_dir / weights),
            "left_out": left_out(reader), **classification_metrics(probs, labels, classes)}


def zero_shot(store: Path, split: str = "test", templates: str = "text4vis", names_file: Path | None = None,
              device: str = "auto", classes: tuple[str, ...] | None = None, quiet: bool = True) -> dict[str, Any]:
    """CLIP's zero-shot classifier: cosine between frame-mean video and class-name embeddings, no training."""
    reader = CacheReader(store)
    torch_device = resolve_device(device)
    text = text_embeddings(reader, templates, names_file, torch_device)
    ctx = head_context(reader, reader.settings.frames, text, classes)
    head = TextHead(ctx, depth=0, learn_scale=False).to(torch_device)
    dataset = CacheDataset(reader, head.request, evaluation_videos(reader, split), reader.settings.frames,
                           train=False, device=torch_device, classes=ctx.classes)
    probs, labels = predict(head, dataset, torch_device, quiet=quiet)
    return {"kind": "zero-shot", "store": str(store), "split": split, "templates": templates,
            "left_out": left_out(reader), **classification_metrics(probs, labels, ctx.classes)}


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """report.json, confusion.png and per_class.png in `out`."""
    classes = tuple(report["per_class"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json"]
    written[0].write_text(json.dumps(report, indent=2))
    size = max(4.0, 0.35 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(np.asarray(report["confusion"]), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{report['kind']}: top-1 {report['top1']:.3f}")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(classes) + 2), 3.5))
    accuracy = [report["per_class"][c] or 0.0 for c in classes]
    ax.bar(range(len(classes)), accuracy)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(out / "per_class.png", dpi=120)
    plt.close(fig)
    return written + [out / "confusion.png", out / "per_class.png"]
