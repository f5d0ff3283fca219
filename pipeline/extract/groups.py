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

NOT_FOUND = "listed but not found under the input folder"


class GroupEncoder:
    """Turns the prepared videos of one shard group into a GroupResult."""

    def __init__(self, encoder: FrozenImageEncoder, settings: StoreSettings, batch_size: int,
                 entries: tuple[VideoEntry, ...]) -> None:
        self.encoder, self.settings, self.batch_size = encoder, settings, batch_size
        self.paths = [entry.path for entry in entries]
        self.notes = [[entry.note] if entry.note else [] for entry in entries]
        self.pin = encoder.device.type == "cuda"
        self.dtype = np.float16 if self.pin else np.float32  # what the encoder hands back

    def __call__(self, work: GroupWork, outcomes: dict[int, Outcome]) -> GroupResult:
        """Videos of `work.redo` from their outcomes, kept videos as placeholders the writer replaces with
        their stored values, and every other video of the group recorded missing."""
        s = self.settings
        start, stop = s.group_range(work.group)
        n, v, t = stop - start, s.views, s.frames
        result = GroupResult(
            group=work.group, status=np.full(n, MISSING, np.uint8), error=[NOT_FOUND] * n, note=[""] * n,
            frame_index=np.zeros((n, v, t), np.int32), fps=np.zeros(n, np.float32),
            num_frames=np.zeros(n, np.int32), width=np.zeros(n, np.int32), height=np.zeros(n, np.int32),
            duration=np.zeros(n, np.float32),
            tokens={layer: np.zeros((n, v, t, s.tokens, s.width), self.dtype) for layer in s.layers},
            pooled=np.zeros((n, v, t, s.embed_dim), self.dtype), path=self.paths[start:stop], keep=work.keep,
        )
        good = []
        for i in work.redo:
            row, outcome = i - start, outcomes[i]
            if outcome.video is None:
                result.status[row], result.error[row] = FAILED, outcome.error or "unknown error"
                continue
            video, info = outcome.video, outcome.video.info
            result.status[row], result.error[row] = DONE, ""
            result.note[row] = "; ".join(self.notes[i] + video.notes)
            result.frame_index[row] = video.frame_index
            result.fps[row], result.num_frames[row], result.duration[row] = info.fps, info.num_frames, info.duration
            result.width[row], result.height[row] = info.width, info.height
            good.append(row)
        if good:
            self._encode(result, good, [outcomes[start + row].video.pixels for row in good])
        return result

    def _encode(self, result: GroupResult, rows: list[int], pixels: list[np.ndarray]) -> None:
        """Every batch the encoder sees has `batch_size` frames (the last is padded with black frames), so
        a frame's features do not depend on how many frames share its batch: a video retried alone
        stores the bytes a full run stores (small or odd batch shapes take other matrix kernels)."""
        s = self.settings
        frames = torch.from_numpy(np.stack(pixels).reshape(-1, s.image_size, s.image_size, 3))
        count = len(frames)
        padding = -count % self.batch_size
        if padding:
            frames = torch.cat([frames, frames.new_zeros((padding, *frames.shape[1:]))])
        if self.pin:
            frames = frames.pin_memory()
        token_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in s.layers}
        pooled_parts = []
        for b in range(0, len(frames), self.batch_size):
            tokens, pooled = self.encoder(frames[b:b + self.batch_size])
            for layer, value in tokens.items():
                token_parts[layer].append(value)
            pooled_parts.append(pooled)
        shape = (len(rows), s.views, s.frames)
        for layer, parts in token_parts.items():
            result.tokens[layer][rows] = torch.cat(parts)[:count].numpy().reshape(*shape, s.tokens, s.width)
        result.pooled[rows] = torch.cat(pooled_parts)[:count].numpy().reshape(*shape, s.embed_dim)
