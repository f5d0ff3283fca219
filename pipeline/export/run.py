"""`clipcache export`: a store's features as files other tools read (see actionformer.py and npy.py)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.common import note
from clipcache.pipeline.export.actionformer import ActionFormerExport
from clipcache.pipeline.export.config import ExportConfig, ExportFormat
from clipcache.pipeline.export.features import SeriesReader, choose_features, stems
from clipcache.pipeline.export.folder import prepare
from clipcache.pipeline.export.npy import NpyExport


@dataclass
class ExportSummary:
    out: Path
    format: str
    exported: int = 0  # videos written
    not_done: int = 0  # failed, missing or pending in the store: nothing to export
    bad: list[str] = field(default_factory=list)  # one line per video left out for a reason of its own
    lines: list[str] = field(default_factory=list)  # what the format reports (segments, settings)

    def __str__(self) -> str:
        head = (f"exported {self.exported} videos ({self.format}) to {self.out}; {len(self.bad)} left out for bad "
                f"input, {self.not_done} not done in the store")
        return "\n".join([head, *self.lines])


def export(cfg: ExportConfig) -> ExportSummary:
    """Export every done video of the store; a video that cannot be (damage, no even frame rate) is one line on
    stderr and left out, the rest goes on."""
    reader = CacheReader(cfg.store)
    choice = choose_features(cfg.features, reader)
    series = SeriesReader(reader, choice)
    writer = ActionFormerExport(reader, choice, cfg.out) if cfg.format == ExportFormat.actionformer else \
        NpyExport(series, cfg.out)
    done = reader.done
    if not len(done):
        raise InputError(f"{reader.path}: no video is done, nothing to export")
    named = stems(reader, done)
    prepare(cfg.out, writer.files(list(named.values())), cfg.overwrite)
    summary = ExportSummary(cfg.out, str(cfg.format), not_done=reader.num_videos - len(done))
    paths = reader.column("path")
    bar = tqdm(total=len(done), unit="video", desc="export", disable=cfg.quiet, file=sys.stderr)
    for video in done:
        where = f"{reader.path}: video {video} ({PurePosixPath(str(paths[video])).name})"
        try:
            writer.add(int(video), named[int(video)], series.read(int(video)), where)
            summary.exported += 1
        except InputError as error:  # damage, or a video this format cannot hold: it alone is left out
            summary.bad.append(str(error))
            note(str(error), cfg.quiet)
        bar.update()
    bar.close()
    summary.lines = writer.finish()
    return summary
