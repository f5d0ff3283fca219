"""The frozen image tower of stage one: which blocks to tap, the parameters heads need without CLIP,
and one forward that keeps the chosen blocks' tokens.

Forward hooks on the vision transformer's residual blocks capture the whole residual stream
(CLS + patch tokens) after each chosen block during the same pass that yields the pooled
embedding, so the extra layers cost no extra compute.
"""
from __future__ import annotations

import numpy as np
import torch

from clipcache import InputError
from clipcache.pipeline.common import autocast
from clipcache.pipeline.models import LoadedModel


def vision_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The residual blocks of an open_clip ViT image tower; other towers are refused clearly."""
    transformer = getattr(getattr(model, "visual", None), "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None:
        raise InputError("only open_clip vision transformers (ViT) are supported: this model has no "
                         "visual.transformer.resblocks")
    return blocks


def resolve_layers(spec: str, num_blocks: int) -> tuple[int, ...]:
    """Absolute, sorted, unique block indices from `-4,-3,-2,-1` or a range such as `-5:` or `8:12`;
    negative indices count from the end. An index or a range end beyond the model's blocks is an error,
    never silently clipped."""
    try:
        ends = [int(part) if part.strip() else None for part in spec.split(":")] if ":" in spec else None
        layers = [int(part) for part in spec.split(",") if part.strip()] if ends is None else []
    except ValueError:
        raise InputError(f"--layers {spec!r}: expected block indices like -4,-3,-2,-1 or a range like -4:") from None
    if ends is not None:
        if len(ends) != 2:
            raise InputError(f"--layers {spec!r}: a range is start:stop, e.g. -4: or 8:12")
        for end in ends:
            if end is not None and not -num_blocks <= end <= num_blocks:
                raise InputError(f"--layers {spec!r}: {end} is beyond the model's {num_blocks} blocks "
                                 f"(0..{num_blocks - 1}, or -{num_blocks}..-1 from the end)")
        layers = list(range(num_blocks))[slice(*ends)]
    resolved = set()
    for layer in layers:
        absolute = layer + num_blocks if layer < 0 else layer
        if not 0 <= absolute < num_blocks:
            raise InputError(f"--layers {layer}: the model has blocks 0..{num_blocks - 1}")
        resolved.add(absolute)
    if not resolved:
        raise InputError(f"--layers {spec!r}: selects no block")
    return tuple(sorted(resolved))


def frozen_parameters(model: torch.nn.Module, layers: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Parameters heads need without CLIP: ln_post, proj, the log logit scale, and ln_1 + qkv of every stored block and
    of the block after it (so a head can recompute that block's attention q/k from a stored input)."""
    visual = model.visual
    blocks = vision_blocks(model)
    wanted = sorted({b for layer in layers for b in (layer, layer + 1) if b < len(blocks)})
    params: dict[str, torch.Tensor] = {"ln_post.weight": visual.ln_post.weight, "ln_post.bias": visual.ln_post.bias}
    if getattr(model, "logit_scale", None) is not None:
        params["logit_scale"] = model.logit_scale.reshape(1)
    if visual.proj is not None:
        params["proj"] = visual.proj
    for b in wanted:
        block = blocks[b]
        params[f"blocks.{b}.ln_1.weight"] = block.ln_1.weight
        params[f"blocks.{b}.ln_1.bias"] = block.ln_1.bias
        params[f"blocks.{b}.attn.in_proj_weight"] = block.attn.in_proj_weight
        params[f"blocks.{b}.attn.in_proj_bias"] = block.attn.in_proj_bias
    return {k: v.detach().float().cpu().numpy() for k, v in params.items()}


class FrozenImageEncoder:
    """Runs the image tower once per batch and returns the tapped blocks' tokens and the embedding."""

    def __init__(self, loaded: LoadedModel, layers: tuple[int, ...], device: torch.device) -> None:
        self.model = loaded.model.to(device)
        self.device = device
        self.layers = tuple(sorted(layers))  # open_clip returns the intermediates in block order
        mean = torch.tensor(loaded.preprocess["mean"], device=device).view(1, 3, 1, 1)
        std = torch.tensor(loaded.preprocess["std"], device=device).view(1, 3, 1, 1)
        self._mean, self._std = mean, std

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """pixels: (B, S, S, 3) uint8. Returns ({block: (B, L, D)}, (B, E)) in float16 on the CPU
        when the model runs on a GPU, in float32 on CPU (the fp32 path is the exact reference).

        open_clip's `forward_intermediates` gives the residual stream after each chosen block (before
        ln_post, CLS apart from the patches) and the same pooled embedding as `encode_image`, in one pass.
        """
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        x = (x - self._mean) / self._std
        out_dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if not self.layers:  # pooled embeddings only (a dense store's default): the plain forward
            with autocast(self.device):
                return {}, self.model.visual(x).to(out_dtype).cpu()
        with autocast(self.device):
            out = self.model.visual.forward_intermediates(x, indices=list(self.layers), output_fmt="NLC",
                                                          output_extra_tokens=True, normalize_intermediates=False)
        tokens = {layer: torch.cat([prefix, patches], dim=1).to(out_dtype).cpu() for layer, prefix, patches
                  in zip(self.layers, out["image_intermediates_prefix"], out["image_intermediates"], strict=True)}
        return tokens, out["image_features"].to(out_dtype).cpu()
