"""One shard group's decoded videos to a GroupResult: the table columns, and the encoder's features
for the videos that decoded."""
from __future__ import annotations

import numpy as np
import torch

from clipcache.cache.schema import DONE, FAILED, MISSING, StoreSettings
from clipcache.cache.writer import GroupResult
from clipcache.pipeline.extract.decode_pool import Outcome
from clipcache.pipeline.extract.encoder import FrozenImageEncoder
from clipcache.pipeline.extract.plan import GroupWork
from clipcache.pipeline.extract.sources import VideoEntry
from clipcache.pipeline.extract.video import VideoInfo

NOT_FOUND = "listed but not found under the input folder"


class GroupEncoder:
    """Turns the prepared videos of one shard group into a GroupResult."""

    def __init__(self, encoder: FrozenImageEncoder, settings: StoreSettings, batch_size: int,
                 entries: tuple[VideoEntry, ...]) -> None:
        self.encoder, self.settings, self.batch_size = encoder, settings, batch_size
        self.paths = [entry.path for entry in entries]
        self.notes = [[entry.note] if entry.note else [] for entry in entries]
        self.dtype = np.float16 if encoder.device.type == "cuda" else np.float32  # what the encoder hands back

    def __call__(self, work: GroupWork, outcomes: dict[int, Outcome]) -> GroupResult:
        """Videos of `work.redo` from their outcomes, kept videos as placeholders the writer replaces with
        their stored values, and every other video of the group recorded missing."""
        s = self.settings
        result = new_result(s, work, self.paths)
        n, v, t = len(result.status), s.views, s.frames
        result.frame_index = np.zeros((n, v, t), np.int32)
        result.tokens = {layer: np.zeros((n, v, t, s.tokens, s.width), self.dtype) for layer in s.layers}
        result.pooled = np.zeros((n, v, t, s.embed_dim), self.dtype)
        start = s.group_range(work.group)[0]
        good = []
        for i in work.redo:
            row, outcome = i - start, outcomes[i]
            if outcome.video is None:
                fail(result, row, outcome.error)
                continue
            record(result, row, outcome.video.info, self.notes[i] + outcome.video.notes)
            result.frame_index[row] = outcome.video.frame_index
            good.append(row)
        if good:
            pixels = torch.from_numpy(np.stack([outcomes[start + row].video.pixels for row in good]))
            tokens, pooled = encode_frames(self.encoder, pixels.reshape(-1, s.image_size, s.image_size, 3),
                                           self.batch_size)
            shape = (len(good), s.views, s.frames)
            for layer, value in tokens.items():
                result.tokens[layer][good] = value.numpy().reshape(*shape, s.tokens, s.width)
            result.pooled[good] = pooled.numpy().reshape(*shape, s.embed_dim)
        return result


def new_result(settings: StoreSettings, work: GroupWork, paths: list[str]) -> GroupResult:
    """The table of one shard group before its videos are recorded: every row missing (rows `work.keep`
    marks are placeholders the writer replaces with their stored values)."""
    start, stop = settings.group_range(work.group)
    n = stop - start
    return GroupResult(
        group=work.group, status=np.full(n, MISSING, np.uint8), error=[NOT_FOUND] * n, note=[""] * n,
        fps=np.zeros(n, np.float32), num_frames=np.zeros(n, np.int32), width=np.zeros(n, np.int32),
        height=np.zeros(n, np.int32), duration=np.zeros(n, np.float32),
        samples=np.zeros(n, np.int32) if settings.dense else None, path=paths[start:stop], keep=work.keep,
    )


def record(result: GroupResult, row: int, info: VideoInfo, notes: list[str]) -> None:
    """A video that decoded: done, with what its decoder found."""
    result.status[row], result.error[row], result.note[row] = DONE, "", "; ".join(notes)
    result.fps[row], result.num_frames[row], result.duration[row] = info.fps, info.num_frames, info.duration
    result.width[row], result.height[row] = info.width, info.height


def fail(result: GroupResult, row: int, error: str | None) -> None:
    result.status[row], result.error[row] = FAILED, error or "unknown error"


def encode_frames(encoder: FrozenImageEncoder, frames: torch.Tensor, batch_size: int
                  ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """(n, S, S, 3) uint8 frames -> ({block: (n, L, D)}, (n, E)). Every batch the encoder sees has `batch_size`
    frames (the last is padded with black frames), so a frame's features do not depend on how many frames
    share its batch: a video retried alone stores the bytes a full run stores (small or odd batch shapes
    take other matrix kernels)."""
    count = len(frames)
    padding = -count % batch_size
    if padding:
        frames = torch.cat([frames, frames.new_zeros((padding, *frames.shape[1:]))])
    if encoder.device.type == "cuda":
        frames = frames.pin_memory()
    token_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in encoder.layers}
    pooled_parts = []
    for b in range(0, len(frames), batch_size):
        tokens, pooled = encoder(frames[b:b + batch_size])
        for layer, value in tokens.items():
            token_parts[layer].append(value)
        pooled_parts.append(pooled)
    return ({layer: torch.cat(parts)[:count] for layer, parts in token_parts.items()},
            torch.cat(pooled_parts)[:count])
