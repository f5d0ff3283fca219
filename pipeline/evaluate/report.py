"""What an evaluation leaves on disk and prints.

Each evaluation gets its own folder, named after what was evaluated (`<dataset>-<split>-<method>...`, e.g.
`features-test-zero-shot-text4vis`), under the run folder's `eval/`, `--out`, or `./eval`. It holds
result.json (the record, results.py), predictions.csv and, for a single evaluation, the figures; a retrieval
holds ranks.csv (retrieval.py) instead of predictions and figures. The same
evaluation run again replaces its own folder's files; a folder holding another evaluation's result (or
anything that is not a result) is never overwritten: the new one goes to `<name>-2`, `<name>-3`, ...
Evaluations writing into the same folder at once take turns (an advisory lock on the folder itself, so no
lock file is left behind): choosing a subfolder and writing it is one step, and one that waits longer than
`LOCK_WAIT_S` stops with one line saying another evaluation is writing there.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.detection_files import write_submission
from clipcache.pipeline.evaluate.figures import figures
from clipcache.pipeline.evaluate.results import Result, identity, write_predictions
from clipcache.pipeline.evaluate.retrieval import format_ranks, write_ranks

RESULT, PREDICTIONS, RANKS, DETECTIONS = "result.json", "predictions.csv", "ranks.csv", "detections.json"
SHORT_PROTOCOLS = {"base-to-novel": "base-to-novel", "half-class zero-shot": "half-class"}
LOCK_WAIT_S = 60.0  # writing a result takes seconds: longer means the other evaluation is stuck or huge


def check_out(out: Path | None, named_by: str = "--out") -> None:
    """Refuse a results folder that is a file, before any work is done; `named_by` is the option that named it
    ("" for a folder derived from others, such as RUN/eval, so the message does not blame an option not given)."""
    if out is not None and out.exists() and not out.is_dir():
        raise InputError(f"{named_by + ' ' if named_by else ''}{out}: is a file; name a folder for the evaluation's "
                         "results with --out")


def folder_name(record: dict[str, Any]) -> str:
    """`<dataset>-<split>-<method>[-<protocol>][-<templates, captions or weights>][-<K>shot-<N>seeds]`, in
    characters safe in any file system."""
    split = Path(record["split"]).stem if Path(record["split"]).is_file() else record["split"]
    options = record["options"]
    parts = [record["dataset"], split, record["method"], SHORT_PROTOCOLS.get(record["protocol"], "")]
    parts += [Path(str(options.get(key) or "")).stem for key in ("templates", "captions", "weights")]
    if options.get("shots"):
        parts.append(f"{options['shots']}shot")
    if options.get("seeds"):
        parts.append(f"{options['seeds']}seeds")
    if options.get("halves"):
        parts.append(f"x{options['halves']}")
    if record["protocol"] == "base-to-novel":
        parts.append(f"seed{options['seed']}")
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", "-".join(p for p in parts if p)).strip("-.")


def _holds_other(folder: Path, record: dict[str, Any]) -> bool:
    """Whether `folder` holds anything but an earlier result of this same evaluation."""
    if not folder.exists():
        return False
    if not folder.is_dir():
        return True
    result = folder / RESULT
    if not result.is_file():
        return any(folder.iterdir())
    try:
        earlier = json.loads(result.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True
    return not isinstance(earlier, dict) or identity(earlier) != identity(record)


def output_folder(base: Path, record: dict[str, Any]) -> Path:
    """base/<name>, or the first of <name>-2, <name>-3, ... free for this evaluation."""
    name = folder_name(record)
    folder, n = base / name, 1
    while _holds_other(folder, record):
        n += 1
        folder = base / f"{name}-{n}"
    return folder


def write_result(result: Result, base: Path, reader: CacheReader) -> Path:
    """The evaluation's folder under `base` with predictions.csv, the figures (single evaluations) and
    result.json, each written beside and renamed into place, result.json last: a folder with a result.json
    is complete. A folder that cannot take them (read-only, full) is one line naming it."""
    check_out(base, named_by="")  # an --out given was checked before the evaluation; this is RUN/eval or ./eval
    folder = base
    try:
        base.mkdir(parents=True, exist_ok=True)
        with _turn(base):
            folder = output_folder(base, result.record)
            folder.mkdir(exist_ok=True)
            if result.retrieval is not None:
                paths = reader.column("path")
                _replace(folder / RANKS, lambda tmp: write_ranks(tmp, result.retrieval, paths))
            elif result.detections is not None:
                write_submission(folder / DETECTIONS, result.detections, result.detection_classes)
            else:
                _replace(folder / PREDICTIONS, lambda tmp: write_predictions(tmp, result.scores, reader))
            if result.confusion is not None:
                write_figures(folder, result.confusion, result.record["per_class"], title(result.record))
            text = json.dumps(result.record, indent=2)
            _replace(folder / RESULT, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{folder}: cannot write the results ({exc.strerror or exc}); name another folder "
                         "with --out") from None
    return folder


@contextmanager
def _turn(base: Path) -> Iterator[None]:
    """This process's turn at writing into `base`: an exclusive flock on the folder, waited for up to
    `LOCK_WAIT_S`."""
    handle = os.open(base, os.O_RDONLY)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InputError(f"{base}: another evaluation is writing there; run this one again once it "
                                     "is done, or name another folder with --out") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(handle)


def write_figures(folder: Path, confusion: np.ndarray, per_class: dict[str, float | None], title: str
                  ) -> list[Path]:
    """The figures of one classification (figures.py) as PNG files in `folder`."""
    written = []
    for name, figure in figures(confusion, per_class, title).items():
        _replace(folder / name, lambda tmp: figure.savefig(tmp, format="png"))  # noqa: B023 - called at once
        written.append(folder / name)
    return written


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write `path` beside it and rename it into place (nothing half-written stays behind on failure)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def title(record: dict[str, Any]) -> str:
    """What was evaluated, on which split, in a few words."""
    return f"{record['method']} on {record['dataset']} split {record['split']}: top-1 {record['top1']:.3f}"


def split_note(record: dict[str, Any]) -> str | None:
    """The one line on stderr when the split scored is not the one asked for, or not held out."""
    parts = []
    if record["split"] != record["split_requested"]:
        parts.append(f"{record['dataset']}: no split {record['split_requested']!r}, scored {record['split']!r}")
    if record["held_out"] is False:
        parts.append(f"WARNING: split {record['split']!r} includes videos that trained or selected this "
                     f"{record['method']}: its accuracy is not a held-out score")
    elif record["held_out"] is None:
        parts.append(f"split {record['split']!r} may not be held out from this {record['method']} (trained on "
                     "another store, or its training splits no longer resolve)")
    return "; ".join(parts) or None


def captions_note(record: dict[str, Any]) -> str | None:
    """The one line on stderr when a retrieval leaves captions or videos out (the result names them), repeated
    caption rows included."""
    if "unknown_videos" not in record:
        return None
    parts = []
    if record["unknown_captions"]:
        parts.append(f"{record['unknown_captions']} captions of {len(record['unknown_videos'])} videos the store "
                     "does not hold")
    if record["uncaptioned_videos"]:
        parts.append(f"{len(record['uncaptioned_videos'])} videos of split {record['split']!r} without a caption")
    if record.get("repeated_captions"):
        parts.append(f"{record['repeated_captions']} caption rows repeating an earlier row (the same video and "
                     "sentence, counted once)")
    if not parts:
        return None
    return f"{record['options']['captions']}: {' and '.join(parts)} left out (result.json names them)"


def _metric(record: dict[str, Any], key: str, label: str) -> str:
    if record.get(key) is None:
        return ""
    std = record.get(f"{key}_std")
    return f"  {label} {record[key]:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def format_report(record: dict[str, Any]) -> str:
    """One line: what was scored on which split, the numbers, and where the files are."""
    protocol = "" if record["protocol"] == "single" else f" ({record['protocol']}, {len(record['runs'])} runs)"
    held = {True: "", False: " [NOT held out]", None: " [held out: unknown]"}[record["held_out"]]
    training = record.get("training")
    if training and not training["complete"]:
        held += f" [unfinished run: {training['epochs_done']} of {training['epochs_planned']} epochs]"
    videos = f" ({record['videos']} videos)" if record.get("videos") is not None else ""
    if "captions" in record:
        videos = f" ({record['videos']} videos, {record['captions']} captions)"
    head = f"{record['method']}{protocol} on split {record['split']!r}{held}{videos}:"
    numbers = "".join(_metric(record, key, label) for key, label in (
        ("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean class accuracy"),
        ("base_top1", "base top-1"), ("novel_top1", "novel top-1"), ("harmonic_mean", "harmonic mean")))
    if "ranking" in record:
        numbers = "  " + format_ranks(record)
    if "average_map" in record:
        maps = [f"{key.removeprefix('map@')} {value:.4f}" for key, value in record.items() if key.startswith("map@")]
        numbers = (f"  mAP at tIoU {', '.join(maps)}  average {record['average_map']:.4f}  proposals AR@10 "
                   f"{record['proposal_ar@10']:.4f} AR@100 {record['proposal_ar@100']:.4f}")
    std = "  (± population std over the runs)" if "std" in record else ""
    where = f"  -> {record['output']}" if record.get("output") else ""
    return head + numbers + std + where
