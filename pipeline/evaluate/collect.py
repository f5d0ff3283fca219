"""`clipcache results`: many result.json files (any store, method, protocol) in one table, CSV or markdown, so
evaluations are compared without opening each folder (as CLIP_benchmark's users aggregate theirs)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from clipcache import InputError
from clipcache.pipeline.evaluate.report import RESULT
from clipcache.pipeline.evaluate.results import LAYOUT

# what names a row, then the numbers; a column is shown when any record has a value in it
NAMING = ("dataset", "split", "method", "protocol", "model", "pretrained", "held_out", "videos")
NUMBERS = ("top1", "top5", "mean_class_accuracy", "base_top1", "novel_top1", "harmonic_mean",
           "t2v_r1", "t2v_r5", "t2v_r10", "t2v_median_rank", "v2t_r1", "v2t_r5", "v2t_r10", "v2t_median_rank")


def result_files(paths: tuple[Path, ...]) -> list[Path]:
    """Each path's result.json: the file itself, or every result.json under a folder, in path order."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob(RESULT))
        else:
            raise InputError(f"{path}: no such file or folder")
    if not found:
        raise InputError(f"no {RESULT} under {', '.join(map(str, paths))}")
    return list(dict.fromkeys(found))


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable result file ({exc})") from None
    if not isinstance(record, dict) or not str(record.get("layout", "")).startswith(LAYOUT.split("/")[0]):
        raise InputError(f"{path}: not a clipcache result (no layout {LAYOUT})")
    return record


def table(records: list[tuple[Path, dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """The columns (those with a value in some record; a protocol's std beside each mean) and one row per
    record, with its folder last."""
    numbers = [key for key in NUMBERS if any(r.get(key) is not None for _, r in records)]
    columns = [key for key in NAMING if any(r.get(key) is not None for _, r in records)]
    for key in numbers:
        columns.append(key)
        if any(r.get(f"{key}_std") is not None for _, r in records):
            columns.append(f"{key}_std")
    rows = [[record.get(key) for key in columns] + [str(path.parent)] for path, record in records]
    return columns + ["folder"], rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def collect(paths: tuple[Path, ...], form: str = "markdown") -> str:
    """The table of every result under `paths`, as CSV (`form` "csv") or a markdown table."""
    columns, rows = table([(path, read_record(path)) for path in result_files(paths)])
    if form == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(v) for v in row] for row in rows])
        return text.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)
