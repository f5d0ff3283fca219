"""What an evaluation leaves on disk: report.json and the figures."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


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


def format_report(report: dict[str, Any]) -> str:
    """The printed form of an evaluation: one line, or the whole record for a protocol over several runs."""
    if "protocol" in report:
        return json.dumps(report, indent=2)
    std = f" ± {report['top1_std']:.4f}" if "top1_std" in report else ""
    return (f"{report['kind']}: top-1 {report['top1']:.4f}{std}  top-5 {report['top5']:.4f}  "
            f"mean class accuracy {report['mean_class_accuracy']:.4f}")
