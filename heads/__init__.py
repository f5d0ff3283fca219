"""Heads by name. Every head is an nn.Module built as Head(ctx, **options) with a `request`
(heads.base.FeatureRequest) and forward(batch) -> logits."""
from __future__ import annotations

from typing import Any

from torch import nn

from heads.attnpool import AttentionalPoolerHead
from heads.base import HeadContext
from heads.evl import EVLHead
from heads.linear import LinearHead
from heads.prompt import PromptHead
from heads.text import TextHead

HEADS: dict[str, type[nn.Module]] = {
    "attnpool": AttentionalPoolerHead,
    "evl": EVLHead,
    "linear": LinearHead,
    "prompt": PromptHead,
    "text": TextHead,
}


def build_head(name: str, ctx: HeadContext, **options: Any) -> nn.Module:
    if name not in HEADS:
        raise ValueError(f"--head {name}: choose one of {', '.join(sorted(HEADS))}")
    try:
        return HEADS[name](ctx, **options)
    except TypeError as exc:
        raise ValueError(f"--head {name}: bad option ({exc})") from None
