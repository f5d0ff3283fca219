"""What a decode worker does for a dense store: a video's pieces as they are decoded, then its summary."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clipcache.cache.dense import DENSE_CHUNK
from clipcache.pipeline.extract.dense_frames import DenseFrames, DensePiece
from clipcache.pipeline.extract.video import VideoInfo
from clipcache.pipeline.extract.views import ViewRecipe


@dataclass(frozen=True)
class DenseDone:
    """The end of a video: what its decoder found, and how many samples it gave."""

    info: VideoInfo
    notes: list[str]
    samples: int


@dataclass(frozen=True)
class DenseRecipe:
    """Every video at `fps` samples per second (None: every frame), in pieces of whole store chunks, so
    the writer appends without rewriting a chunk and memory stays bounded (see decode_pool.Recipe)."""

    fps: float | None
    views: ViewRecipe
    piece: int = 4 * DENSE_CHUNK  # whole chunks; fewer, larger appends (each zarr call costs ~1 ms of the CPU)

    def prepare(self, path: Path, index: int) -> Iterator[DensePiece | DenseDone]:
        frames = DenseFrames(path, self.fps, self.views, self.piece)
        samples = 0
        for piece in frames:
            samples += len(piece.time)
            yield piece
        yield DenseDone(frames.info, frames.notes, samples)
