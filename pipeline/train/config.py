"""Every option of `clipcache train-head`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from clipcache import InputError
from clipcache.cache.location import Store
from clipcache.heads import HEADS
from clipcache.heads.recipes import RECIPES, RETRIEVAL_RECIPES, Schedule
from clipcache.pipeline.options import (
    SEED_LIMITS,
    CaptionOptions,
    DetectionOptions,
    DrawnSplitOptions,
    RunOptions,
    ShotOptions,
    SplitOptions,
    TextOptions,
    ThreadOptions,
    internal,
    option,
    store_argument,
)

MAX_MIN_STEPS = 1_000_000  # days of a small head's steps on a CPU: a larger value is a typo, not a plan
MAX_EPOCHS = 10_000
CYCLES = 4  # at most this many cycles of the recipe's epochs when stopping on convergence (loop.py)

HeadName = StrEnum("HeadName", {name: name for name in sorted(HEADS)})


def per_head(field: str) -> str:
    """The recipes' values of one field, for the help text: "linear 0.001, text 5e-05, ...; retrieval: prompt ..."."""
    classification = ", ".join(f"{name} {getattr(recipe, field)}" for name, recipe in RECIPES.items())
    retrieval = ", ".join(f"{name} {getattr(recipe, field)}" for name, recipe in RETRIEVAL_RECIPES.items())
    return f"{classification}; retrieval: {retrieval}"


def parse_head_options(pairs: list[str]) -> dict[str, Any]:
    """`key=value` head options; values are read as JSON when they parse (numbers, true/false)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--option {pair!r}: expected key=value")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


@dataclass(kw_only=True)
class TrainConfig(RunOptions, TextOptions, SplitOptions, DrawnSplitOptions, ShotOptions, CaptionOptions,
                  DetectionOptions, ThreadOptions):
    store: Store = store_argument("A store made by `clipcache extract`.")
    head: HeadName = option(help="Head to train (see the README's table of heads).")
    out: Path = option(help="Run directory: run.json, best/last weights, metrics.jsonl.")
    head_options: dict[str, Any] = option(
        help="Head option key=value, repeatable; the defaults: linear: normalize=true, standardize=true; "
             "text: depth=6, learn_scale=true; prompt: prefix=16, suffix=16 (fewer on short text contexts), "
             "depth=2, heads=8; evl: num_layers=4, dropout=0.5; attnpool: queries=1, layer=-1, heads=8; proposals: "
             "width=128, levels=6, depth=2, head_depth=2 (dense stores).",
        factory=dict, flags=("--option",), text=list[str], parse=parse_head_options, metavar="KEY=VALUE")
    epochs: int | None = option(None, f"Epochs, at most {MAX_EPOCHS}; validation and checkpoints after each; "
                                      "given, the run trains exactly this many (or stops on --patience). Default: "
                                      "until validation converges: cycles of the head's recipe's epochs "
                                      f"({per_head('epochs')}), another cycle while validation still improved in "
                                      f"the last quarter of one, at most {CYCLES} cycles (README: stopping).",
                                limits=(1, MAX_EPOCHS))
    min_steps: int | None = option(None, "At least this many optimiser steps: a small training set is passed over "
                                         "several times per epoch (as Text4Vis repeats few-shot sets), so a recipe's "
                                         "learning rate gets the updates it was made for; 0: one pass per epoch; "
                                         f"at most {MAX_MIN_STEPS:,} (default: the head's recipe: "
                                         f"{per_head('min_steps')}).", limits=(0, MAX_MIN_STEPS))
    batch_size: int | None = option(None, "Videos per batch; a smaller training set is one batch (default: the "
                                          f"head's recipe: {per_head('batch_size')}).", limits=(1, None))
    lr: float | None = option(None, f"AdamW peak learning rate (default: the head's recipe: {per_head('lr')}).")
    weight_decay: float | None = option(None, f"AdamW weight decay (default: the head's recipe: "
                                              f"{per_head('weight_decay')}).", limits=(0, None))
    warmup_epochs: float | None = option(None, "Epochs of linear warm-up from 0 (default: the head's recipe: "
                                               f"{per_head('warmup_epochs')}).", limits=(0, None))
    schedule: Schedule | None = option(None, "Learning rate after the warm-up: cosine (decay to 0) or constant "
                                             f"(default: the head's recipe: {per_head('schedule')}).")
    label_smoothing: float | None = option(None, "Label smoothing (default: the head's recipe: "
                                                 f"{per_head('label_smoothing')}).")
    grad_clip: float | None = option(None, "Gradient norm clip, 0: off (default: the head's recipe: "
                                           f"{per_head('grad_clip')}).", limits=(0, None))
    seed: int = option(0, f"Seed of initialisation, shuffling, views, hold-out and shots (0 to {SEED_LIMITS[1]}).",
                       limits=SEED_LIMITS)
    frames: int | None = option(None, "Frames the head sees (a subset of the stored ones; default all).",
                                limits=(1, None))
    test_split: str = option("test", "Test split or file of video paths, recorded for eval and scored by the "
                                     "protocols.")
    base_to_novel: bool = option(False, "Train on a seeded half of the classes, test base and novel classes "
                                        "(heads that score class names: text, prompt).")
    patience: int | None = option(None, "Stop after this many epochs without a better validation top-1 (retrieval: "
                                        "text-to-video R@1) (0: off). Given, the run trains the recipe's epochs (or "
                                        "--epochs) with this rule instead of stopping on convergence.",
                                  limits=(0, None))
    resume: bool = option(False, "Continue the run in --out from its last finished epoch.")
    preload: bool | None = option(None, "Hold the features the head reads in memory (on the GPU when training "
                                        "there and they fit, else in RAM; refused when they exceed half of what is "
                                        "free). Default: only when they fit; --no-preload streams.",
                                  flags=("--preload/--no-preload",))
    workers: int = option(0, "DataLoader worker processes (streamed features only). Without them each batch is "
                              "read on several threads while the step before it runs, into reused memory, which "
                              "a worker's batches cannot be.")
    class_split: str | None = option(None, "Open-set localisation (dense stores, heads proposals, text, prompt): train "
                                           "on the seen classes of a class split only: a STALE split folder "
                                           "(train/split_K.list, test/split_K.list), a JSON file {\"splits\": "
                                           "[{\"seen\": [...], \"unseen\": [...]}]}, or the fraction of seen "
                                           "classes (0.75, 0.5) for seeded random splits; eval then scores the "
                                           "unseen classes.")
    class_split_index: int = option(0, "Which split of --class-split: split_K of the folder or file, or the seed of "
                                       "the random split.", limits=(0, None))
    class_splits: int = option(1, "Open-set protocol: with --head proposals, run class splits 0..N-1 of --class-split "
                                  "(one proposal run each under OUT/split-<k>, and a --classifier-head run beside it), "
                                  "score each split's unseen classes, and report the mean and std over the splits "
                                  "beside the zero-shot baseline on the same splits (Efficient-Prompt: 10).",
                               limits=(1, 100))
    classifier_head: str | None = option(None, "Open-set protocol: the head (text or prompt) trained on each split's "
                                               "seen segments that names the proposals; without it, zero-shot only.")
    classes: tuple[str, ...] | None = internal()  # train on these classes only (base-to-novel)
    cycle: int | None = internal()  # epochs of one schedule cycle when the run stops on convergence (None: fixed)
