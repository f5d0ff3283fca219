"""How each head is trained by default: its paper's recipe where one is published, in one table.

Torch-free, so `clipcache train-head --help` can print the defaults without importing torch. The user's
options override any field. Sources (file:line of the authors' code) are in the README's table of heads.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Schedule(StrEnum):
    cosine = "cosine"  # linear warm-up, then cosine decay to 0
    constant = "constant"  # linear warm-up, then the peak learning rate throughout


@dataclass(frozen=True)
class Recipe:
    """Training defaults of a head; AdamW with default betas always."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    epochs: int = 20
    warmup_epochs: float = 1.0
    schedule: Schedule = Schedule.cosine
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # gradient norm clip, 0: off
    min_steps: int = 500  # at least this many optimiser steps, however small the training set


RECIPES: dict[str, Recipe] = {
    # no paper: the CLIP-style linear classifier on standardised features
    "linear": Recipe(lr=1e-2, weight_decay=0.05, batch_size=64, warmup_epochs=1.0),
    # Text4Vis configs/*/*.yaml: AdamW 5e-5, weight decay 0.2, 5 of 30 epochs warm-up, cosine, effective batch 256;
    # its learning rate is the lowest here, so twice the steps (measured: 500 leave it 24 points behind a probe
    # on nearly collinear features, 1000 reach it)
    "text": Recipe(lr=5e-5, weight_decay=0.2, batch_size=256, epochs=30, warmup_epochs=5.0, min_steps=1000),
    # Efficient-Prompt README command (HMDB51): AdamW 1e-4, weight decay 0.01, batch 64, 1100 steps (20 epochs),
    # no warm-up, a cosine-with-restarts period (2e5 steps) far beyond the run: a constant learning rate
    "prompt": Recipe(lr=1e-4, weight_decay=0.01, batch_size=64, epochs=20, warmup_epochs=0.0,
                     schedule=Schedule.constant),
    # CoCa's attentional-pooler evaluation on frozen features
    "attnpool": Recipe(lr=5e-4, weight_decay=0.05, batch_size=128, label_smoothing=0.1, grad_clip=1.0),
    # EVL main.py and scripts: AdamW 4e-4, weight decay 0.05, batch 256, 50k steps (~50 epochs of K400), no
    # warm-up, cosine to 0
    "evl": Recipe(lr=4e-4, weight_decay=0.05, batch_size=256, epochs=50, warmup_epochs=0.0),
    # no published recipe for this small proposal network (ActionFormer trains a larger one with AdamW 1e-4, batch 2
    # of 2304-step windows, 35 epochs). Measured on synthetic windows (tests/test_proposals.py, 100 windows of
    # 128-256 steps, 1-3 actions of 8-64 steps): 260 steps of batch 8 reach AR@10 0.99-1.0 at tIoU 0.5 on three
    # seeds where 100 steps of batch 16 leave 0.77; lr 3e-3 and 1e-2 were no faster
    "proposals": Recipe(lr=1e-3, weight_decay=0.05, batch_size=8, epochs=20, warmup_epochs=1.0, min_steps=200),
}

# Text-video retrieval (`train-head --captions`), per head that can train it. Efficient-Prompt's retrieval settings
# are not in its released code; measured on the tests' generated captioned videos (tiny random model, 24 training
# videos, 300 steps): the classification recipe's lr 1e-4 does not move the prompts through a frozen text tower
# at all, 1e-2 diverges (the 2-layer temporal model), 3e-3 reaches test t2v R@1 1.0 at batch 8 and 16, seeds 0-2
RETRIEVAL_RECIPES: dict[str, Recipe] = {
    "prompt": Recipe(lr=3e-3, weight_decay=0.01, batch_size=16, epochs=20, warmup_epochs=0.0,
                     schedule=Schedule.constant, min_steps=300),
}
