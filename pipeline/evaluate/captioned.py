"""A split's captioned videos as text-video retrieval queries, and the result of scoring them: one piece for
zero-shot retrieval and for trained retrieval runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.results import Result, ranked
from clipcache.pipeline.evaluate.retrieval import Retrieval, ranks_from_embeddings
from clipcache.pipeline.train.captions import CaptionFile, Captions, match_captions
from clipcache.pipeline.train.splits import EvalSplit, evaluation_split


@dataclass(frozen=True)
class CaptionedSplit:
    """The done videos of the scored split that have captions (`videos`), and every caption of theirs
    (`sentences`, with `rows` in the caption file and `caption_video`, the position of each one's video)."""

    reader: CacheReader
    captions: Captions
    scored: EvalSplit
    videos: np.ndarray
    rows: np.ndarray
    caption_video: np.ndarray
    sentences: list[str]

    def result(self, description: dict[str, Any], text: np.ndarray, video: np.ndarray) -> Result:
        """The record of unit sentence embeddings `text` against unit video embeddings `video`, both directions;
        captions of unknown videos and the split's videos without captions are named in it, repeated rows
        counted."""
        paths = self.reader.column("path")
        left = self.scored.videos[~np.isin(self.scored.videos, self.videos)]
        ranks = ranks_from_embeddings(text, video, self.caption_video)
        return ranked(description, Retrieval(self.videos, self.rows, tuple(self.sentences), ranks),
                      unknown_captions=self.captions.unknown_captions, unknown_videos=list(self.captions.unknown),
                      repeated_captions=self.captions.repeated_captions,
                      uncaptioned_videos=[str(paths[v]) for v in left])


def captioned_split(reader: CacheReader, file: CaptionFile, split: str) -> CaptionedSplit:
    """The split named (the caption file's splits when it has them, else the store's; test falls back to val)
    and its captioned videos; a split without any is refused."""
    captions = match_captions(file, reader)
    named_by = file.path if captions.splits is not None else None
    scored = evaluation_split(reader, split, captions.splits, named_by, labels=False)
    videos = captions.captioned(scored.videos)
    if len(videos) == 0:
        raise InputError(f"{file.path}: no caption names a done video of split {scored.name!r} of {reader.path}")
    rows, caption_video = captions.of(videos)
    return CaptionedSplit(reader, captions, scored, videos, rows, caption_video, [file.sentences[r] for r in rows])
