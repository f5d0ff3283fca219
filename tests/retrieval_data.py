"""Captioned test videos whose captions need the video to tell them apart: a red square, blue circle, green
square or yellow circle that moves left or right (8 kinds), two phrasings per video, and a store of them
extracted with the tiny model.

The figure shows in any frame (each colour has one shape: the tiny random model's frame embeddings separate
colours far better than shapes); the direction only in the frames' order, so CLIP's frame mean cannot
separate "moves left" from "moves right" and a temporal model can. Each split has every kind; the test split
has one video per kind, so its captions name exactly one video each. Extract these without augmented views:
their horizontal flips would reverse the direction a caption names.
"""
from __future__ import annotations

import csv
import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from clipcache.pipeline.demo.synthetic import shape_frames, write_video
from conftest import run_cli, tiny_extract_args

COLOURS = {"red": (220, 40, 40), "blue": (50, 70, 230), "green": (40, 200, 60), "yellow": (230, 210, 40)}
FIGURES = (("red", "square"), ("blue", "circle"), ("green", "square"), ("yellow", "circle"))
DIRECTIONS = ("left", "right")
PHRASINGS = ("a {colour} {shape} moves {direction}", "the {colour} {shape} slides to the {direction}")
PER_SPLIT = {"train": 3, "val": 1, "test": 1}  # videos of each kind
FRAMES = 8


@dataclass(frozen=True)
class CaptionedStore:
    videos: Path  # root/<split>/<kind>/<kind>-<n>.mp4
    captions: Path  # video,caption CSV naming videos by their store path
    store: Path
    kinds: tuple[str, ...]


def kinds() -> list[tuple[str, str, str]]:
    return [(c, s, d) for c, s in FIGURES for d in DIRECTIONS]


def write_captioned_videos(root: Path, per_split: dict[str, int] = PER_SPLIT, frames: int = FRAMES,
                           size: tuple[int, int] = (48, 64)) -> Path:
    """The videos under root/videos and their caption file root/captions.csv (header video,caption; every
    video has each phrasing of its kind); returns the caption file."""
    rows = []
    for split, count in per_split.items():
        for colour, shape, direction in kinds():
            kind = f"{colour}_{shape}_{direction}"
            for i in range(count):
                name = f"{split}/{kind}/{kind}-{split}{i}.mp4"
                seed = zlib.crc32(name.encode())
                write_video(root / "videos" / name, shape_frames(frames, *size, COLOURS[colour], shape, direction,
                                                                 seed=seed))
                rows += [(name, p.format(colour=colour, shape=shape, direction=direction)) for p in PHRASINGS]
    captions = root / "captions.csv"
    with captions.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("video", "caption"), *rows])
    return captions


@functools.cache
def _build(base: Path) -> CaptionedStore:
    """Once per test session (the base temporary folder), whichever test module asks first."""
    root = base / "captioned"
    captions = write_captioned_videos(root)
    store = root / "features.zarr"
    result = run_cli(*tiny_extract_args(root / "videos", store, "--frames", str(FRAMES)))
    assert result.code == 0, result
    return CaptionedStore(root / "videos", captions, store, tuple("_".join(k) for k in kinds()))


@pytest.fixture(scope="session")
def captioned_store(tmp_path_factory: pytest.TempPathFactory) -> CaptionedStore:
    """8 kinds x (3 train, 1 val, 1 test) videos of 8 frames with two captions each, extracted with the tiny
    model (default views: one clip, one crop)."""
    return _build(tmp_path_factory.getbasetemp())
