"""Training curves as TensorBoard event files beside metrics.jsonl, where many people look for them.

Optional: without the `tensorboard` package a run says so once (at its first epoch) and keeps metrics.jsonl
alone. Each process appends to an event file of its own, in the calling thread (no writer thread: a full disk
is the run's own one-line error, as for metrics.jsonl): its first write holds every row so far, later writes
the row just finished. A process that takes over a run directory which already holds event files (a --resume)
starts its file with a session start at its first row's step, so TensorBoard drops the earlier files' points
from there on and shows each epoch once, as the state holds it. Event files are only ever added (TensorBoard
stops following a file that is deleted under it).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from clipcache.pipeline.common import note
from clipcache.pipeline.train.checkpoint import disk_refusal

EVENTS = "events.out.tfevents.*"  # how TensorBoard names event files
AXES = ("epoch", "step")  # the x axis (step) and its epoch, not curves of their own
ABSENT = ("tensorboard is not installed: training curves are in metrics.jsonl only "
          "(pip install tensorboard for TensorBoard event files beside it)")


def curve_name(key: str) -> str:
    """A metrics.jsonl key as a TensorBoard tag: val_top1 -> val/top1, loss -> train/loss."""
    return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"


def write_curves(run_dir: Path, rows: list[dict[str, Any]], quiet: bool = False) -> None:
    """Append this process's new rows (all of them on its first write) to its event file in `run_dir`."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        note(ABSENT if len(rows) == 1 else None, quiet)
        return
    mine = f".{socket.gethostname()}.{os.getpid()}.clipcache"
    own = [path for path in run_dir.glob(EVENTS) if path.name.endswith(mine)]
    events = []
    if not own:
        events.append(event_pb2.Event(file_version="brain.Event:2"))
        if any(run_dir.glob(EVENTS)):  # earlier processes' points from this step on are replaced by ours
            events.append(event_pb2.Event(step=rows[0]["step"],
                                          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    for row in rows if not own else rows[-1:]:
        values = [summary_pb2.Summary.Value(tag=curve_name(key), simple_value=float(value))
                  for key, value in row.items()
                  if key not in AXES and isinstance(value, (int, float)) and not isinstance(value, bool)]
        events.append(event_pb2.Event(step=row["step"], summary=summary_pb2.Summary(value=values)))
    path = own[0] if own else run_dir / f"events.out.tfevents.{int(time.time())}{mine}"
    try:
        with open(path, "ab") as file:
            writer = RecordWriter(file)
            for event in events:
                event.wall_time = event.wall_time or time.time()
                writer.write(event.SerializeToString())
    except OSError as exc:
        raise disk_refusal(exc, path) from None
