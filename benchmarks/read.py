"""Stage-two read speed: the cache dataset's samples/s and MB/s next to a raw read of the same bytes.

    python benchmarks/read.py                       # ViT-B-16 shapes, 8 frames, last 4 blocks, 48 videos
    python benchmarks/read.py --dtype int8
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from synthetic_store import make_store
from torch.utils.data import DataLoader

from cache.dataset import CacheDataset
from cache.reader import CacheReader
from heads.base import FeatureRequest


def raw_read(folder: Path) -> tuple[int, float]:
    """Bytes and seconds to read every chunk file under `folder` with plain file reads."""
    began, total = time.perf_counter(), 0
    for file in folder.rglob("*"):
        if file.is_file():
            total += len(file.read_bytes())
    return total, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--layers", default="-4:")
    parser.add_argument("--dtype", default="float16", choices=["float16", "int8"])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipcache-read-") as tmp:
        store = Path(tmp) / "store.zarr"
        settings = make_store(store, args.model, args.videos, args.frames, args.layers, dtype=args.dtype)
        reader = CacheReader(store)
        raw_read(store / "tokens")  # warm the page cache for both measurements
        nbytes, raw_seconds = raw_read(store / "tokens")
        dataset = CacheDataset(reader, FeatureRequest(layers=settings.layers), np.arange(args.videos),
                               args.frames, train=False)
        loader = DataLoader(dataset, batch_size=8, num_workers=args.workers)
        began = time.perf_counter()
        samples = sum(len(batch["label"]) for batch in loader)
        seconds = time.perf_counter() - began
        began = time.perf_counter()
        CacheDataset(reader, FeatureRequest(layers=settings.layers), np.arange(args.videos), args.frames,
                     train=False, preload=True)
        preload_seconds = time.perf_counter() - began
    print(f"{args.videos} videos, {args.model} shapes, {args.frames} frames x {len(settings.layers)} blocks x "
          f"{settings.tokens} tokens x {settings.width}, {args.dtype}, {args.workers} loader worker(s)")
    print(f"raw file read  {nbytes / raw_seconds / 1e6:8.0f} MB/s")
    print(f"cache dataset  {nbytes / seconds / 1e6:8.0f} MB/s  ({samples / seconds:.1f} samples/s, "
          f"{nbytes / samples / 1e6:.1f} MB per sample on disk)")
    print(f"--preload      {nbytes / preload_seconds / 1e6:8.0f} MB/s  (whole arrays into RAM)")
    print(f"dataset / raw = {raw_seconds / seconds:.2f}   preload / raw = {raw_seconds / preload_seconds:.2f}")


if __name__ == "__main__":
    main()
