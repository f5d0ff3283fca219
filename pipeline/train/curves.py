"""Training curves as TensorBoard event files beside metrics.jsonl, where many people look for them.

Optional: torch.utils.tensorboard needs the `tensorboard` package; without it a run says so once (at its first
epoch) and keeps metrics.jsonl alone. The rows are metrics.jsonl's, appended to one event file per process as
epochs finish. A process that takes over a run directory which already holds event files (a --resume) starts its
file by purging every step from the first row on and writes all rows again: TensorBoard then shows each epoch once,
as the state holds it, even when a kill came between an epoch's state and its curves. Event files are only ever
added (TensorBoard stops following a file that is deleted under it).
"""
from __future__ import annotations

import atexit
import functools
from pathlib import Path
from typing import Any

from clipcache.pipeline.common import note

EVENTS = "events.out.tfevents.*"  # what TensorBoard's writer names its files
AXES = ("epoch", "step")  # the x axis (step) and its epoch, not curves of their own
ABSENT = ("tensorboard is not installed: training curves are in metrics.jsonl only "
          "(pip install tensorboard for TensorBoard event files beside it)")
_open: dict[str, Any] = {}  # the one writer a process keeps open: its run directory and the rows it has written


@functools.cache
def _summary_writer() -> type | None:
    """torch's SummaryWriter, or None without the tensorboard package (looked up once per process)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def curve_name(key: str) -> str:
    """A metrics.jsonl key as a TensorBoard tag: val_top1 -> val/top1, loss -> train/loss."""
    return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"


def write_curves(run_dir: Path, rows: list[dict[str, Any]], quiet: bool = False) -> None:
    """The numeric values of the rows not yet written, as scalars at each row's step; flushed to disk."""
    writer_class = _summary_writer()
    if writer_class is None:
        note(ABSENT if len(rows) == 1 else None, quiet)
        return
    if _open.get("run_dir") != run_dir or len(rows) < _open["written"]:
        close_curves()
        purge = rows[0]["step"] if any(run_dir.glob(EVENTS)) else None  # earlier processes' rows: replaced
        _open.update(run_dir=run_dir, writer=writer_class(log_dir=str(run_dir), purge_step=purge), written=0)
    writer = _open["writer"]
    for row in rows[_open["written"]:]:
        for key, value in row.items():
            if key not in AXES and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(curve_name(key), value, row["step"])
    writer.flush()
    _open["written"] = len(rows)


@atexit.register
def close_curves() -> None:
    """Close the open event file (at exit, or when the process moves on to another run directory)."""
    if _open:
        _open.pop("writer").close()
        _open.clear()
