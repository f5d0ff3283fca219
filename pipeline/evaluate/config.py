"""Every option of `clipcache eval`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from clipcache.cache.location import Store
from clipcache.pipeline.options import (
    CaptionOptions,
    DetectionOptions,
    DrawnSplitOptions,
    JsonOutput,
    RunOptions,
    ShotOptions,
    SplitOptions,
    TextOptions,
    ThreadOptions,
    option,
    store_argument,
)

Probe = StrEnum("Probe", {"linear": "linear"})
Weights = StrEnum("Weights", {"best": "best", "last": "last"})


@dataclass(kw_only=True)
class EvalConfig(RunOptions, JsonOutput, TextOptions, SplitOptions, ShotOptions, CaptionOptions, DetectionOptions,
                 ThreadOptions, DrawnSplitOptions):
    store: Store = store_argument("A store made by `clipcache extract`.")
    captions: Path | None = option(None, "Caption file (MSR-VTT annotation JSON, the 1k-A test CSV, or video,caption "
                                         "CSV/TSV lines): with --zero-shot, text-video retrieval by CLIP itself; with "
                                         "--checkpoint of a retrieval run, a moved copy of the file it was trained "
                                         "with. Scored in both directions (R@1, R@5, R@10, median and mean rank).")
    checkpoint: Path | None = option(None, "Run directory of `train-head` to evaluate (multi-view); a retrieval run "
                                           "reads the caption file it was trained with (--captions names a moved "
                                           "copy).")
    zero_shot: bool = option(False, "CLIP zero-shot with class-name prompts (with --captions: text-video retrieval).")
    probe: Probe | None = option(None, "linear: scikit-learn logistic regression on frame-mean embeddings; C "
                                       "chosen on validation, or by cross-validation on train when validation is "
                                       "the split scored. Never scores a video it was fitted on.")
    split: str | None = option(None, "Split (or file of paths) to score (default: the run's test split, else "
                                     "test; a store without a test split scores val, and says so); all: every "
                                     "video (zero-shot; the probe then scores each by cross-validation).")
    half_classes: int = option(0, "Zero-shot: N random halves of the classes, mean ± std (Text4Vis).")
    base_to_novel: bool = option(False, "Zero-shot on the base and novel halves used by train-head --base-to-novel.")
    proposals: Path | None = option(None, "Dense stores: temporal action localisation from another detector's "
                                          "proposals (ActionFormer/BMN result JSON, or a video,start,end,score "
                                          "CSV), each classified zero-shot and scored by mAP; a proposals run "
                                          "(--checkpoint) makes its own.")
    classifier: Path | None = option(None, "Localisation: a run of a classification head trained on the store's "
                                           "segments (train-head STORE --head prompt|text|linear on a dense store) "
                                           "names the proposals instead of zero-shot CLIP (Efficient-Prompt's "
                                           "second stage).")
    weights: Weights = option(Weights.best, "Which weights of the run: the best epoch on validation, or the last.")
    out: Path | None = option(None, "Folder for the results: each evaluation writes result.json, predictions.csv "
                                    "and figures into its own subfolder named after the store, split and method "
                                    "(default: RUN/eval with --checkpoint, else ./eval).")
