"""Progress of a dense extraction in seconds of video, so its rate and ETA cover the whole run: a count of
videos says little when one video is two hours long and the next two minutes."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from clipcache.pipeline.extract.decode_pool import Outcome
from clipcache.pipeline.extract.dense_frames import estimate


class DenseProgress:
    """A bar over the videos' durations as their containers state them (an estimate: the decoded length
    replaces it when a video ends), with the samples stored per second of wall time."""

    def __init__(self, paths: list[Path], fps: float | None, disable: bool, rank: int | None) -> None:
        self.stated = [(estimate(path, fps) or (0.0, 0))[0] if not disable else 0.0 for path in paths]
        self.index = {str(path): k for k, path in enumerate(paths)}
        self.reached = [0.0] * len(paths)
        self.samples, self.began = 0, time.monotonic()
        self.bar = tqdm(total=round(sum(self.stated)), unit="s", unit_scale=True, dynamic_ncols=True,
                        desc="extract" if rank is None else f"extract[{rank}]", file=sys.stderr, disable=disable,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s of video [{elapsed}<{remaining}{postfix}]")

    def update(self, outcome: Outcome) -> None:
        k = self.index[str(outcome.task.path)]
        if not outcome.final:
            self.samples += len(outcome.video.time)
            now = max(float(outcome.video.time[-1]), self.reached[k])
        else:  # ended (or failed): count what its container stated, so the total stays the estimate's
            now = max(self.stated[k], self.reached[k])
        if now > self.stated[k]:  # longer than its container says: the total grows by the difference
            self.bar.total += now - self.stated[k]
            self.stated[k] = now
        self.bar.update(now - self.reached[k])
        self.reached[k] = now
        rate = self.samples / max(time.monotonic() - self.began, 1e-9)
        self.bar.set_postfix_str(f"{rate:.1f} frames/s", refresh=False)

    def close(self) -> None:
        self.bar.close()
