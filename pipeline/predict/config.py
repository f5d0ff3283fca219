"""Every option of `clipcache predict`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clipcache.cache.location import Store
from clipcache.pipeline.evaluate.config import Weights
from clipcache.pipeline.options import Cli, JsonOutput, RunOptions, ThreadOptions, option

MAX_TOP_K = 1000


@dataclass(kw_only=True)
class PredictConfig(RunOptions, JsonOutput, ThreadOptions):
    videos: tuple[Path, ...] = field(metadata={"cli": Cli(
        "Video files to classify (any container the extractor reads).", argument=True, text=list[Path],
        parse=tuple)})
    checkpoint: Path = option(help="Run directory of `train-head` (a classification run): its head, and the store "
                                   "whose model, preprocessing and frame sampling the videos go through.")
    store: Store | None = option(None, "The store the run was trained on, where it is now if it moved (default: "
                                      "the path run.json records); any store made by the same model will do.", text=str)
    top_k: int = option(5, f"Classes shown per video, best first (at most {MAX_TOP_K}).", limits=(1, MAX_TOP_K))
    weights: Weights = option(Weights.best, "Which weights of the run: the best epoch on validation, or the last.")
    pretrained: Path | None = option(None, "Where the checkpoint file the store was made with is now, if it moved "
                                           "(its sha256 must match the store's).")
