"""`--format npy`: per video `<stem>.npy` (T, C) float32 features, `<stem>_fps.npy` and
`<stem>_timestamps_ms.npy` (T,), the files video_features writes, for any store.

The rate is the store's F for a dense store made at a fixed rate, else the video's own decoded rate (a store of
every frame, or a store of clips, whose frames are chosen per video); the timestamps are the stored frames' times.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipcache.pipeline.export.features import Series, SeriesReader
from clipcache.pipeline.export.folder import save_npy

SUFFIXES = (".npy", "_fps.npy", "_timestamps_ms.npy")


class NpyExport:
    def __init__(self, series: SeriesReader, out: Path) -> None:
        self.series, self.out = series, out
        self.rate = series.reader.settings.fps if series.reader.settings.dense else 0.0

    @staticmethod
    def files(stems: Sequence[str]) -> list[str]:
        return [f"{stem}{suffix}" for stem in stems for suffix in SUFFIXES]

    def add(self, video: int, stem: str, series: Series, where: str) -> None:
        fps = self.rate or float(self.series.native_fps[video])
        save_npy(self.out / f"{stem}_timestamps_ms.npy", series.times * 1000)
        save_npy(self.out / f"{stem}_fps.npy", np.array(fps))
        save_npy(self.out / f"{stem}.npy", series.values)

    def finish(self) -> list[str]:
        return []
