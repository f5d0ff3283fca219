"""Every option of `clipcache eval`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from clipcache.pipeline.options import (
    CaptionOptions,
    JsonOutput,
    RunOptions,
    ShotOptions,
    SplitOptions,
    TextOptions,
    argument,
    option,
)
from clipcache.pipeline.thread_options import ThreadOptions

Probe = StrEnum("Probe", {"linear": "linear"})
Weights = StrEnum("Weights", {"best": "best", "last": "last"})


@dataclass(kw_only=True)
class EvalConfig(RunOptions, JsonOutput, TextOptions, SplitOptions, ShotOptions, CaptionOptions, ThreadOptions):
    store: Path = argument("A store made by `clipcache extract`.")
    checkpoint: Path | None = option(None, "Run directory of `train-head` to evaluate (multi-view); a retrieval run "
                                           "reads the caption file it was trained with (--captions names a moved "
                                           "copy).")
    zero_shot: bool = option(False, "CLIP zero-shot with class-name prompts (with --captions: text-video retrieval).")
    probe: Probe | None = option(None, "linear: scikit-learn logistic regression on frame-mean embeddings; C "
                                       "chosen on validation, or by cross-validation on train when validation is "
                                       "the split scored. Never scores a video it was fitted on.")
    split: str | None = option(None, "Split (or file of paths) to score (default: the run's test split, else "
                                     "test; a store without a test split scores val, and says so).")
    half_classes: int = option(0, "Zero-shot: N random halves of the classes, mean ± std (Text4Vis).")
    base_to_novel: bool = option(False, "Zero-shot on the base and novel halves used by train-head --base-to-novel.")
    weights: Weights = option(Weights.best, "Which weights of the run: the best epoch on validation, or the last.")
    out: Path | None = option(None, "Folder for the results: each evaluation writes result.json, predictions.csv "
                                    "and figures into its own subfolder named after the store, split and method "
                                    "(default: RUN/eval with --checkpoint, else ./eval).")
