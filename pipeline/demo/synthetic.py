"""Small generated videos: the demo's sample set, the benchmarks' inputs and the tests' fixtures.

Generated rather than shipped so the demo needs no downloads and every codec PyAV can write is
available to tests. Classes differ by appearance (colour, shape) or only by motion.
"""
from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODECS = {"h264": ("libx264", "yuv420p"), "mpeg4": ("mpeg4", "yuv420p"), "vp9": ("libvpx-vp9", "yuv420p"),
          "av1": ("libsvtav1", "yuv420p"), "hevc": ("libx265", "yuv420p"),
          "mpeg1": ("mpeg1video", "yuv420p")}  # MPEG-1 (.mpg/.mpeg): only the broadcast rates (24, 25, 30 fps...)

DEMO_CLASSES = {  # name -> (colour, shape)
    "red_square": ((220, 40, 40), "square"),
    "green_circle": ((40, 200, 60), "circle"),
    "blue_stripes": ((50, 70, 230), "stripes"),
}


def write_video(path: Path, frames: np.ndarray | Iterable[np.ndarray], fps: float = 10, codec: str = "h264",
                rotation: int = 0, faststart: bool = False) -> Path:
    """Encode (N, H, W, 3) uint8 RGB frames (or (H, W, 3) frames one by one, so a long video is never held
    whole); the container follows the file extension. One encoder thread, so the same frames always give the same
    file (tests compare what is learned from them against fixed bounds).

    `rotation` writes display-matrix metadata (degrees counter-clockwise, as phones do);
    `faststart` puts the MP4 index first, so a truncated copy still opens.
    """
    if codec not in CODECS:
        raise ValueError(f"codec {codec!r}: choose one of {', '.join(CODECS)}")
    name, pix_fmt = CODECS[codec]
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(name, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = 1  # x264 with several threads writes other bytes from run to run
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in itertools.chain([first], frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def shape_frames(n: int, height: int, width: int, colour: tuple[int, int, int], shape: str = "square",
                 motion: str = "none", seed: int = 0) -> np.ndarray:
    """A coloured shape on a noisy grey background, still or moving left/right across the frame."""
    rng = np.random.default_rng(seed)
    background = rng.integers(90, 140, (height, width, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    radius = max(2, min(height, width) // 4)
    cy = height // 2 + int(rng.integers(-height // 8, height // 8 + 1))
    travel = width - 2 * radius
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        progress = t / max(n - 1, 1)
        if motion == "right":
            cx = radius + int(progress * travel)
        elif motion == "left":
            cx = width - radius - int(progress * travel)
        elif motion == "none":
            cx = width // 2 + int(rng.integers(-2, 3))
        else:
            raise ValueError(f"motion {motion!r}: choose none, left or right")
        if shape == "square":
            mask = (abs(yy - cy) < radius) & (abs(xx - cx) < radius)
        elif shape == "circle":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        elif shape == "stripes":
            mask = ((xx + yy) // 3) % 2 == 0
        else:
            raise ValueError(f"shape {shape!r}: choose square, circle or stripes")
        frame = background.copy()
        frame[mask] = colour
        frames[t] = frame
    return frames


def write_demo_videos(root: Path, per_class: dict[str, int], size: tuple[int, int] = (48, 64),
                      frames: int = 16) -> list[Path]:
    """root/<split>/<class>/<i>.mp4 for every split in `per_class` (split -> videos per class)."""
    paths = []
    for split, count in per_class.items():
        for c, (name, (colour, shape)) in enumerate(DEMO_CLASSES.items()):
            for i in range(count):
                seed = zlib.crc32(f"{split}/{name}/{i}".encode())
                clip = shape_frames(frames, size[0], size[1], colour, shape, seed=seed)
                paths.append(write_video(root / split / name / f"{i:03d}.mp4", clip))
    return paths
