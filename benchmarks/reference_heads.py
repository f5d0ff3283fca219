"""The papers' own modules next to ours, with our weights copied in, so a benchmark can time both on the same
inputs and show that they compute the same function: EVL's decoder imported from a checkout of
OpenGVLab/efficient-video-recognition (never vendored), and open_clip's AttentionalPooler (CoCa).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import torch
from open_clip.transformer import AttentionalPooler
from torch import nn
from torch.nn import functional as F

from clipcache.heads.attnpool import AttentionalPoolerHead
from clipcache.heads.base import HeadContext
from clipcache.heads.evl import EVLHead

CPU_PATCH = ("the reference's TemporalCrossAttention.forward allocates its output with torch.zeros(device='cuda'); "
             "on another device the torch.zeros its module sees ignores that argument (nothing else changed)")


class _ZerosOnDefaultDevice:
    """The reference module's view of torch, with `zeros` ignoring a hard-coded device."""

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)

    @staticmethod
    def zeros(*size: object, device: object = None, **kwargs: object) -> torch.Tensor:
        return torch.zeros(*size, **kwargs)


def load_evl(checkout: Path, patch_cuda_zeros: bool) -> ModuleType:
    """EVL's `model.py` from a checkout. It imports its siblings by flat names (`vision_transformer`, ...),
    so the checkout is on sys.path only while importing and those generic names leave sys.modules after."""
    if not (checkout / "model.py").is_file():
        raise SystemExit(f"{checkout}: no model.py; pass a checkout of OpenGVLab/efficient-video-recognition")
    names = ("model", "vision_transformer", "weight_loaders")
    clashing = [name for name in names if name in sys.modules]
    if clashing:
        raise SystemExit(f"modules {clashing} are imported already and would shadow the checkout's")
    sys.path.insert(0, str(checkout))
    try:
        module = importlib.import_module("model")
    finally:
        sys.path.remove(str(checkout))
        for name in names:
            sys.modules.pop(name, None)
    if patch_cuda_zeros:
        module.torch = _ZerosOnDefaultDevice()
    return module


class EVLReferenceHead(nn.Module):
    """EVL's decoder and its classifier (EVLTransformer.proj: LayerNorm, dropout, linear on the query)."""

    def __init__(self, decoder: nn.Module, width: int, dropout: float, classes: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, classes))

    def forward(self, features: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        return self.proj(self.decoder(features)[:, 0])


def evl_as_reference(ours: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Our EVL head's parameters (or their gradients) under EVLReferenceHead's names and shapes."""
    names = {"query": "decoder.cls_token", "norm.weight": "proj.0.weight", "norm.bias": "proj.0.bias",
             "fc.weight": "proj.2.weight", "fc.bias": "proj.2.bias"}
    for i in range(layers):
        names.update({f"enrich.{i}.conv.weight": f"decoder.temporal_conv.{i}.weight",
                      f"enrich.{i}.conv.bias": f"decoder.temporal_conv.{i}.bias",
                      f"enrich.{i}.position": f"decoder.temporal_pos_embed.{i}",
                      f"enrich.{i}.cross.weight_prev": f"decoder.cross_attention.{i}.w1",
                      f"enrich.{i}.cross.weight_next": f"decoder.cross_attention.{i}.w2"})
        parts = {"ln_query": "norm1", "ln_mlp": "norm2", "ln_memory": "norm3", "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2",
                 **{p: f"attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")}}
        for a, b in parts.items():
            for kind in ("weight", "bias"):
                names[f"decoder.{i}.{a}.{kind}"] = f"decoder.decoder_layers.{i}.{b}.{kind}"
    return {theirs: ours[name].reshape(-1) if name == "query" else ours[name] for name, theirs in names.items()}


def evl_reference(evl: ModuleType, head: EVLHead, ctx: HeadContext) -> EVLReferenceHead:
    """EVL's own decoder and classifier holding `head`'s weights."""
    layers = len(head.decoder)
    decoder = evl.EVLDecoder(num_frames=ctx.frames, spatial_size=tuple(ctx.grid), num_layers=layers,
                             in_feature_dim=ctx.width, qkv_dim=ctx.width, num_heads=head.decoder[0].heads,
                             mlp_factor=4.0, mlp_dropout=head.decoder[0].mlp[2].p)
    reference = EVLReferenceHead(decoder, ctx.width, head.dropout.p, ctx.num_classes)
    reference.load_state_dict(evl_as_reference(head.state_dict(), layers))
    return reference


def evl_reference_inputs(tokens: torch.Tensor, head: EVLHead, ctx: HeadContext) -> list[dict[str, torch.Tensor]]:
    """What the reference decoder reads per layer, from the same tokens: block j's output and its attention
    q and k (CLS included, unscaled) from block j's input with its frozen ln_1 and qkv projection.
    The decoder adds into "out" in place: give it `fresh(...)` copies on every call."""
    features = []
    width, heads = ctx.width, ctx.heads
    for i, block in enumerate(head.request.layers[1:]):
        prefix = f"blocks.{block}."
        normed = F.layer_norm(tokens[:, i], (width,), ctx.frozen[prefix + "ln_1.weight"].to(tokens),
                              ctx.frozen[prefix + "ln_1.bias"].to(tokens))
        q, k = F.linear(normed, ctx.frozen[prefix + "attn.in_proj_weight"][:2 * width].to(tokens),
                        ctx.frozen[prefix + "attn.in_proj_bias"][:2 * width].to(tokens)).chunk(2, dim=-1)
        split = (*q.shape[:-1], heads, width // heads)
        features.append({"out": tokens[:, i + 1], "q": q.reshape(split), "k": k.reshape(split)})
    return features


def fresh(features: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{**layer, "out": layer["out"].clone()} for layer in features]


class AttnpoolReferenceHead(nn.Module):
    """open_clip's AttentionalPooler over one block's tokens, then our head's classifier on the query mean."""

    def __init__(self, width: int, heads: int, queries: int, classes: int) -> None:
        super().__init__()
        self.pooler = AttentionalPooler(width, width, n_head=heads, n_queries=queries)
        self.fc = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooler(tokens[:, 0].flatten(1, 2)).mean(dim=1))


def attnpool_as_reference(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our attnpool head's parameters (or gradients) under AttnpoolReferenceHead's names: open_clip keeps q, k
    and v in one in-projection."""
    names = {"query": "pooler.query", "fc.weight": "fc.weight", "fc.bias": "fc.bias"}
    for ours_name, theirs in (("ln_query", "ln_q"), ("ln_context", "ln_k"), ("out_proj", "attn.out_proj")):
        names.update({f"{ours_name}.{kind}": f"pooler.{theirs}.{kind}" for kind in ("weight", "bias")})
    mapped = {theirs: ours[name] for name, theirs in names.items()}
    for kind in ("weight", "bias"):
        mapped[f"pooler.attn.in_proj_{kind}"] = torch.cat([ours[f"q_proj.{kind}"], ours[f"kv_proj.{kind}"]])
    return mapped


def attnpool_reference(head: AttentionalPoolerHead, ctx: HeadContext) -> AttnpoolReferenceHead:
    """open_clip's AttentionalPooler (and our classifier) holding `head`'s weights."""
    reference = AttnpoolReferenceHead(ctx.width, head.heads, len(head.query), ctx.num_classes)
    reference.load_state_dict(attnpool_as_reference(head.state_dict()))
    return reference
