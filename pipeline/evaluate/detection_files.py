"""Detection and proposal files other tools read and write, so clipcache's detections can be scored elsewhere
and other detectors' proposals classified here.

- Detections are written in ActivityNet's submission format, which its official evaluation (and ActionFormer's,
  OpenTAD's) read: `{"version": ..., "results": {video: [{"label", "score", "segment": [start, end]}]},
  "external_data": {}}`, times in seconds, a video's detections in the order given.
- Proposals are read from the same JSON layout as BMN writes it (`results`, each entry a `segment`
  and a `score`, `label` optional and ignored for proposals); ActionFormer's `scores` key is taken for `score`.
  Or from a CSV `video,start,end,score` (a header line naming those columns is optional).

A bad file raises InputError with one line: the file and what is wrong in it.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.pipeline.evaluate.detection import Segments

VERSION = "VERSION 1.3"  # ActivityNet v1.3's submission version string
CSV_COLUMNS = ("video", "start", "end", "score")


def write_submission(path: Path, detections: Segments, classes: Sequence[str] | None = None,
                     version: str = VERSION) -> None:
    """Detections as an ActivityNet submission; labels are written as `classes[label]` when classes are given
    (labels are indices), else as they are (labels are names). The file is replaced whole (written beside it,
    then renamed), so a reader never meets half of one."""
    results: dict[str, list[dict[str, Any]]] = {}
    for i in range(len(detections)):
        label = detections.label[i]
        label = label.item() if isinstance(label, np.generic) else label
        results.setdefault(str(detections.video[i]), []).append({
            "label": classes[int(label)] if classes is not None else label,
            "score": float(detections.score[i]),
            "segment": [float(detections.start[i]), float(detections.end[i])]})
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps({"version": version, "results": results, "external_data": {}}))
    partial.replace(path)


def read_submission(path: Path, classes: Sequence[str] | None = None) -> Segments:
    """Detections from an ActivityNet submission (labels as names, or as indices into `classes` when given)."""
    index = {name: i for i, name in enumerate(classes)} if classes is not None else None
    rows = _result_rows(path, need_label=True)
    if index is not None:
        unknown = sorted({str(r[3]) for r in rows if r[3] not in index})
        if unknown:
            raise InputError(f"{path}: labels not among the classes: {', '.join(unknown[:5])}"
                             + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        rows = [(v, s, e, index[label], score) for v, s, e, label, score in rows]
    return _segments(path, rows)


def read_proposals(path: Path) -> Segments:
    """Proposals (video, start, end, score) from a result JSON or a CSV, told apart by the file's first
    character (`{` is JSON)."""
    path = Path(path)
    text = _text(path)
    if text.lstrip().startswith("{"):
        rows = [(v, s, e, None, score) for v, s, e, _, score in _result_rows(path, need_label=False, text=text)]
    else:
        rows = _csv_rows(path, text)
    if not rows:
        raise InputError(f"{path}: no proposals in it")
    return _segments(path, rows)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a detection or proposal file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def _result_rows(path: Path, need_label: bool, text: str | None = None) -> list[tuple[str, float, float, Any, float]]:
    """(video, start, end, label, score) of every entry of a `results` JSON, checked."""
    path = Path(path)
    try:
        data = json.loads(_text(path) if text is None else text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise InputError(f"{path}: expected an object with \"results\": {{video: [entries]}}")
    rows = []
    for video, entries in data["results"].items():
        if not isinstance(entries, list):
            raise InputError(f"{path}: results of video {video!r} are not a list")
        for n, entry in enumerate(entries):
            where = f"{path}: video {video!r} entry {n}"
            if not isinstance(entry, dict):
                raise InputError(f"{where} is not an object")
            segment = entry.get("segment")
            if not (isinstance(segment, list) and len(segment) == 2):
                raise InputError(f"{where}: \"segment\" must be [start, end]")
            score = entry.get("score", entry.get("scores"))
            if need_label and "label" not in entry:
                raise InputError(f"{where}: no \"label\"")
            label = entry.get("label")
            if need_label and not isinstance(label, (str, int)):
                raise InputError(f"{where}: \"label\" must be a class name")
            start, end, score = (_number(where, name, value) for name, value in
                                 (("start", segment[0]), ("end", segment[1]), ("score", score)))
            rows.append((str(video), start, end, label, score))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[str, float, float, Any, float]]:
    lines = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if lines and tuple(cell.strip().lower() for cell in lines[0]) == CSV_COLUMNS:
        lines = lines[1:]
    rows = []
    for n, row in enumerate(lines, 1):
        where = f"{path}: row {n}"
        if len(row) != len(CSV_COLUMNS):
            raise InputError(f"{where} has {len(row)} columns, expected {','.join(CSV_COLUMNS)}")
        video, *numbers = (cell.strip() for cell in row)
        start, end, score = (_number(where, name, value) for name, value in zip(CSV_COLUMNS[1:], numbers))
        rows.append((video, start, end, None, score))
    return rows


def _number(where: str, name: str, value: Any) -> float:
    """A finite number (JSON number or numeric text), or InputError naming the field."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise InputError(f"{where}: {name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise InputError(f"{where}: {name} {value!r} is not a finite number")
    return number


def _segments(path: Path, rows: list[tuple[str, float, float, Any, float]]) -> Segments:
    inverted = [r for r in rows if r[2] < r[1]]
    if inverted:
        video, start, end = inverted[0][:3]
        raise InputError(f"{path}: {len(inverted)} segments end before they start (first: {video} {start}-{end})")
    video, start, end, label, score = (list(column) for column in zip(*rows)) if rows else ([], [], [], [], [])
    labels = None if all(x is None for x in label) else np.asarray(label)
    return Segments.of(np.asarray(video, dtype=str), start, end, labels, score)
