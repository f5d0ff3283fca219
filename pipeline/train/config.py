"""Every option of `clipcache train-head`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from clipcache import InputError
from clipcache.heads import HEADS
from clipcache.pipeline.options import RunOptions, ShotOptions, SplitOptions, TextOptions, argument, internal, option

HeadName = StrEnum("HeadName", {name: name for name in sorted(HEADS)})


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
class TrainConfig(RunOptions, TextOptions, SplitOptions, ShotOptions):
    store: Path = argument("A store made by `clipcache extract`.")
    head: HeadName = option(help="Head to train (see the README's table of heads).")
    out: Path = option(help="Run directory: run.json, best/last weights, metrics.jsonl.")
    head_options: dict[str, Any] = option(
        help="Head option key=value, repeatable (text: depth=6; evl: num_layers=4, dropout=0.5; attnpool: queries=1, "
             "layer=-1, heads=8; prompt: prefix=16, suffix=16, depth=1).",
        factory=dict, flags=("--option",), text=list[str], parse=parse_head_options, metavar="KEY=VALUE")
    epochs: int = option(20, "Training epochs.")
    batch_size: int | None = option(None, "Videos per batch (default: the head's recipe).")
    lr: float | None = option(None, "AdamW peak learning rate (default: the head's recipe).")
    weight_decay: float = option(0.05, "AdamW weight decay.")
    warmup_epochs: float = option(1.0, "Linear warm-up length before the cosine decay.")
    label_smoothing: float | None = option(None, "Label smoothing (default: the head's recipe).")
    grad_clip: float | None = option(None, "Gradient norm clip, 0: off (default: the head's recipe).")
    seed: int = option(0, "Seed of initialisation, shuffling, views, hold-out and shots.")
    frames: int | None = option(None, "Frames the head sees (a subset of the stored ones; default all).")
    test_split: str = option("test", "Test split or file of video paths, recorded for eval and scored by the "
                                     "protocols.")
    base_to_novel: bool = option(False, "Train on a seeded half of the classes, test base and novel classes "
                                        "(heads that score class names: text, prompt).")
    patience: int = option(0, "Stop after this many epochs without a better validation top-1 (0: off).")
    resume: bool = option(False, "Continue the run in --out from its last finished epoch.")
    preload: bool | None = option(None, "Hold the features the head reads in memory (on the GPU when training "
                                        "there and they fit, else in RAM; refused when they exceed half of what is "
                                        "free). Default: only when they fit; --no-preload streams.",
                                  flags=("--preload/--no-preload",))
    workers: int = option(0, "DataLoader worker processes (streamed features only).")
    classes: tuple[str, ...] | None = internal()  # train on these classes only (base-to-novel)
