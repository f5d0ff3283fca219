"""Heads by name: `build_head(name, ctx, **options)`. Every head is a `heads.base.Head`, one per file.

The registry names modules rather than importing them, so the command line lists the heads without
importing torch.
"""
from __future__ import annotations

from importlib import import_module
from inspect import signature
from typing import TYPE_CHECKING, Any

from clipcache import InputError
from clipcache.heads.options import check_head_options

if TYPE_CHECKING:
    from clipcache.heads.base import Head, HeadContext

HEADS: dict[str, str] = {  # name -> module:class
    "attnpool": "attnpool:AttentionalPoolerHead",
    "evl": "evl:EVLHead",
    "linear": "linear:LinearHead",
    "prompt": "prompt:PromptHead",
    "proposals": "proposals:ProposalHead",
    "text": "text:TextHead",
}
# heads that also train text-video retrieval (`train-head --captions`): they have `sentences`, `encode_text`,
# `encode_video` and `retrieval_scale` (see heads/prompt.py)
RETRIEVAL_HEADS = ("prompt",)
# heads that train temporal action localisation on a dense store's windows (pipeline/localize/task.py)
LOCALISATION_HEADS = ("proposals",)


def head_class(name: str) -> type[Head]:
    if name not in HEADS:
        raise InputError(f"--head {name}: choose one of {', '.join(sorted(HEADS))}")
    module, cls = HEADS[name].split(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)


def build_head(name: str, ctx: HeadContext, **options: Any) -> Head:
    """The head `name` for the store described by `ctx`; unknown options, and values of the wrong type or out of
    the head's `option_limits`, are refused by name."""
    cls = head_class(name)
    try:
        signature(cls).bind(ctx, **options)
    except TypeError as exc:
        known = ", ".join(p for p in signature(cls).parameters if p != "ctx") or "none"
        raise InputError(f"--head {name}: bad option ({exc}); its options: {known}") from None
    check_head_options(name, cls, options)
    return cls(ctx, **options)


def resolved_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options `build_head(name, ...)` uses, its defaults filled in: run.json records these, so a
    checkpoint rebuilds the same head even after a default changes."""
    bound = signature(head_class(name)).bind_partial(None, **options)
    bound.apply_defaults()
    return dict(list(bound.arguments.items())[1:])  # all but ctx
