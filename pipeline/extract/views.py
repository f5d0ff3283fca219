"""Spatial views of a frame, done on PIL images exactly as open_clip's eval transform does them.

Runs inside the decode workers, so it must not import torch: the resize and centre-crop arithmetic
follows torchvision's `Resize(int)` and `CenterCrop` on PIL images (which open_clip composes), and a
test holds the result to open_clip's own `preprocess` on the same frames. Pixels leave as uint8;
`ToTensor` and `Normalize` happen on the encoder's device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipcache import InputError

_INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
RESIZE_MODES = ("shortest", "squash")
AUGMENT_SCALE = (0.4, 1.0)
AUGMENT_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ViewRecipe:
    """How to turn a decoded frame into the model's input views."""

    image_size: int
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    crops: int = 1

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise InputError(f"interpolation {self.interpolation!r} not supported (use bicubic or bilinear)")
        if self.resize_mode not in RESIZE_MODES:
            raise InputError(f"resize mode {self.resize_mode!r} not supported (use {' or '.join(RESIZE_MODES)})")
        if self.crops not in (1, 3):
            raise InputError(f"--crops must be 1 or 3, got {self.crops}")


def _resize_shortest(image: Image.Image, size: int, resample: int) -> Image.Image:
    """torchvision Resize(size): short side to `size`, long side truncated, PIL resampling."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return image if (new_w, new_h) == (w, h) else image.resize((new_w, new_h), resample)


def _crop_box(w: int, h: int, size: int, position: float) -> tuple[int, int, int, int]:
    """Square `size` crop; position 0/0.5/1 slides it along the long side (0.5 is torchvision's centre)."""
    left = int(round((w - size) * (position if w > h else 0.5)))
    top = int(round((h - size) * (position if h > w else 0.5)))
    return left, top, left + size, top + size


def eval_views(image: Image.Image, recipe: ViewRecipe) -> list[np.ndarray]:
    """The `crops` evaluation views of one frame: centre crop, or three crops along the long side."""
    resample = _INTERPOLATIONS[recipe.interpolation]
    size = recipe.image_size
    image = image.convert("RGB")
    if recipe.resize_mode == "squash":
        squashed = np.asarray(image.resize((size, size), resample))
        return [squashed] * recipe.crops
    resized = _resize_shortest(image, size, resample)
    positions = (0.5,) if recipe.crops == 1 else (0.0, 0.5, 1.0)
    return [np.asarray(resized.crop(_crop_box(*resized.size, size, p))) for p in positions]


@dataclass(frozen=True)
class AugmentParams:
    """One random resized crop + flip, shared by every frame of a view so motion stays coherent."""

    box: tuple[int, int, int, int]
    flip: bool


def draw_augment(width: int, height: int, rng: np.random.Generator) -> AugmentParams:
    """Random resized crop parameters (area scale and aspect ratio ranges as in Inception/CLIP)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*AUGMENT_SCALE)
        ratio = math.exp(rng.uniform(math.log(AUGMENT_RATIO[0]), math.log(AUGMENT_RATIO[1])))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return AugmentParams((left, top, left + w, top + h), bool(rng.random() < 0.5))
    side = min(width, height)
    return AugmentParams(_crop_box(width, height, side, 0.5), bool(rng.random() < 0.5))


def augmented_view(image: Image.Image, params: AugmentParams, recipe: ViewRecipe) -> np.ndarray:
    out = image.convert("RGB").crop(params.box).resize(
        (recipe.image_size, recipe.image_size), _INTERPOLATIONS[recipe.interpolation]
    )
    if params.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out)
