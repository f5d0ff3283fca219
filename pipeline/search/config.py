"""Every option of `clipcache search`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipcache.cache.location import Store
from clipcache.pipeline.options import JsonOutput, RunOptions, argument, option, store_argument


@dataclass(kw_only=True)
class SearchConfig(RunOptions, JsonOutput):
    store: Store = store_argument("A clipcache Zarr store (clips or dense).")
    query: str = argument("What to look for, in words (e.g. 'a person diving').")
    top: int = option(10, "How many videos (clip stores) or moments (dense stores) to list.", flags=("--top", "-k"),
                      limits=(1, 10_000))
    split: str | None = option(None, "Search only the videos of this split (default: every done video).")
    checkpoint: Path | None = option(None, "Run directory of `train-head --head prompt` to rank through: the query "
                                           "through its learned prompts, the frames through its temporal "
                                           "transformer (default: zero-shot, the store's own text tower).")
    pretrained: Path | None = option(None, "Where the checkpoint file the store was made with is now, if it moved "
                                           "(its sha256 must match the store's).")
