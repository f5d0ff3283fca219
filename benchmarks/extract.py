"""Stage-one throughput on the same files in one run: decode-only, encode-only, end-to-end.

The ratio end-to-end / decode-only says how much of the decoders' speed the whole pipeline keeps
(the goal is >= 0.9 wherever the encoder is faster than decoding). With --dense F the videos are untrimmed
(--seconds each, the k-th 1 + k % 3 times as long) and both sides store every video whole at F frames per second:
decode-only is the dense decode (the same frames, by presentation time) in the same worker processes.

    python benchmarks/extract.py --videos 32 --model clipcache-demo           # CPU smoke run
    python benchmarks/extract.py --videos 256 --model ViT-B-16 --workers 15   # GPU machine
    python benchmarks/extract.py --dense 10 --videos 3 --seconds 120          # untrimmed, 2-6 minutes each
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from clipcache.pipeline.extract.decode_pool import Recipe

# Decode workers are spawned processes that re-import this file as their main module, so the heavy
# imports (torch, open_clip, zarr) wait inside main(): at top level they would cost every worker ~10 s
# of start-up inside the decode-only measurement.


def make_videos(folder: Path, count: int, seconds: float, width: int, height: int, fps: int,
                varied: bool = False) -> list[Path]:
    """H.264 clips shaped like Kinetics' (10 s, 340x256, 30 fps): a smooth textured scene that pans, with
    a moving object and mild sensor noise, so the bitrate (and decode cost) is that of camera footage.
    `varied`: the k-th video is 1 + k % 3 times as long (untrimmed videos of different lengths). Frames are
    made one at a time, so a video of any length costs one frame of memory."""
    from clipcache.pipeline.demo.synthetic import write_video

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    radius = max(2, min(height, width) // 4)
    paths = []
    for i in range(count):
        n = int(seconds * fps * (1 + i % 3 if varied else 1))
        coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 8, 3)).astype(np.float32)
        scene = np.kron(coarse, np.ones((16, 16, 1), np.float32))  # blocky scene ...
        scene = (scene + np.roll(scene, 8, 0) + np.roll(scene, 8, 1) + np.roll(scene, (8, 8), (0, 1))) / 4
        noise = rng.normal(0, 2, (4, height, width, 3)).astype(np.float32)

        def frames(n: int = n, scene: np.ndarray = scene, noise: np.ndarray = noise) -> Iterator[np.ndarray]:
            for t in range(n):
                pan = int(t * 64 / n)
                frame = np.clip(scene[:height, pan:pan + width] + noise[t % 4], 0, 255).astype(np.uint8)
                centre = radius + (t % (8 * fps)) / (8 * fps) * (width - 2 * radius)  # crosses every 8 s
                frame[(yy - height / 2) ** 2 + (xx - centre) ** 2 < radius ** 2] = (230, 40, 40)
                yield frame

        paths.append(write_video(folder / "class" / f"video{i:04d}.mp4", frames(), fps=fps, codec="h264"))
    return paths


def decode_only(paths: list[Path], recipe: Recipe, workers: int, frames: int) -> tuple[float, float]:
    """(videos/s, frames/s) of the decode workers alone; a clip recipe gives `frames` per video, a dense
    recipe says how many it gave."""
    from clipcache.pipeline.extract.decode_pool import DecodePool, Task
    pool = DecodePool(recipe, workers=workers, timeout=600, prefetch=64)
    began = time.perf_counter()
    videos = samples = 0
    for outcome in pool.run([Task(i, p) for i, p in enumerate(paths)]):
        if outcome.final and outcome.video is not None:
            videos += 1
            samples += getattr(outcome.video, "samples", frames)
    seconds = time.perf_counter() - began
    return videos / seconds, samples / seconds


def encode_only(model: str, layers: str, device: torch.device, image_size: int, batch: int, steps: int) -> float:
    import torch

    from clipcache.pipeline.extract.encoder import FrozenImageEncoder, resolve_layers, vision_blocks
    from clipcache.pipeline.models import load_model
    loaded = load_model(model)
    blocks = () if layers == "none" else resolve_layers(layers, len(vision_blocks(loaded.model)))
    encoder = FrozenImageEncoder(loaded, blocks, device)
    pixels = torch.randint(0, 256, (batch, image_size, image_size, 3), dtype=torch.uint8)
    encoder(pixels)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(steps):
        encoder(pixels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="340x256", help="WIDTHxHEIGHT of the generated clips")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--model", default="clipcache-demo")
    parser.add_argument("--layers", default=None, help="as extract's --layers (default: its default)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dense", type=float, default=None, metavar="F",
                        help="untrimmed videos stored whole at F frames per second (extract --fps F)")
    args = parser.parse_args()
    import torch

    from clipcache.pipeline.common import resolve_device
    from clipcache.pipeline.extract.dense_recipe import DenseRecipe
    from clipcache.pipeline.extract.prepare import PrepareRecipe
    from clipcache.pipeline.extract.run import ExtractConfig, extract
    from clipcache.pipeline.extract.sampling import SamplingPlan
    from clipcache.pipeline.extract.views import ViewRecipe
    from clipcache.pipeline.models import load_model

    width, height = (int(v) for v in args.size.split("x"))
    args.layers = args.layers or ("none" if args.dense is not None else "-4,-3,-2,-1")
    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="clipcache-bench-"))
    try:
        paths = make_videos(work / "videos", args.videos, args.seconds, width, height, args.fps, args.dense is not None)
        image_size = load_model(args.model).preprocess["image_size"]
        if args.dense is None:
            recipe = PrepareRecipe(SamplingPlan(args.frames, "uniform"), ViewRecipe(image_size), augment=0, seed=0)
        else:
            recipe = DenseRecipe(args.dense, ViewRecipe(image_size))
        decode_vps, decode_fps = decode_only(paths, recipe, args.workers, args.frames)
        encode_ips = encode_only(args.model, args.layers, device, image_size, args.batch_size, steps=5)
        began = time.perf_counter()
        dense = {} if args.dense is None else {"fps": f"{args.dense:g}"}
        summary = extract(ExtractConfig(
            videos=work / "videos", store=work / "store.zarr", model=args.model, layers=args.layers,
            frames=args.frames, workers=args.workers, batch_size=args.batch_size, device=args.device, quiet=True,
            **dense))
        took = time.perf_counter() - began
        e2e_vps = summary.info["done"] / took
        e2e_fps = (summary.info["stored_frames"] if args.dense else summary.info["done"] * args.frames) / took
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sampled = f"{args.frames} frames/video" if args.dense is None else f"dense at {args.dense:g} fps"
    lengths = f"{args.seconds:g}s" if args.dense is None else f"{args.seconds:g}-{3 * args.seconds:g}s"
    print(f"machine: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"{args.workers} decode workers, model {args.model}, layers {args.layers}, {sampled}, "
          f"{args.videos} videos of {lengths} {args.size} @ {args.fps} fps")
    print(f"decode-only   {decode_vps:8.2f} videos/s  {decode_fps:8.1f} frames/s")
    print(f"encode-only   {encode_ips:8.1f} images/s")
    print(f"end-to-end    {e2e_vps:8.2f} videos/s  {e2e_fps:8.1f} frames/s  (model load and store creation included)")
    print(f"end-to-end / decode-only = {e2e_fps / decode_fps:.2f}")


if __name__ == "__main__":
    main()
