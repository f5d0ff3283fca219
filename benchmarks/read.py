"""Stage-two read speed: the cache dataset's samples/s and MB/s next to a raw read of the same bytes.

    python benchmarks/read.py                       # ViT-B-16 shapes, 8 frames, last 4 blocks, 48 videos
    python benchmarks/read.py --dtype int8 --workers 4 --videos 256

Both sides read a warm page cache, so the ratio is the dataset's own cost (zarr decoding, batching),
not the disk's. Every figure comes from this one run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from clipcache.cache.reader import CacheReader
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.train.dataset import CacheDataset, batch_loader
from synthetic_store import make_store


def raw_read(folder: Path) -> tuple[int, float]:
    """Bytes and seconds to read every chunk file under `folder` with plain file reads."""
    began, total = time.perf_counter(), 0
    for file in folder.rglob("*"):
        if file.is_file():
            total += len(file.read_bytes())
    return total, time.perf_counter() - began


def epoch(dataset: CacheDataset, batch_size: int, workers: int) -> tuple[int, float]:
    """Samples and seconds of one pass over `dataset` in shuffled batches."""
    began = time.perf_counter()
    samples = sum(len(batch["label"]) for batch in batch_loader(dataset, batch_size, shuffle=True, workers=workers))
    return samples, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--layers", default="-4:")
    parser.add_argument("--dtype", default="float16", choices=["float16", "int8"])
    parser.add_argument("--workers", type=int, default=0, help="loader workers for the streamed pass")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipcache-read-") as tmp:
        store = Path(tmp) / "store.zarr"
        settings = make_store(store, args.model, args.videos, args.frames, args.layers, dtype=args.dtype)
        reader = CacheReader(store)
        videos = np.arange(args.videos)
        rows = []
        requests = {"tokens": FeatureRequest(layers=settings.layers), "pooled": FeatureRequest(pooled=True)}
        for what, request in requests.items():
            raw_read(store / what)  # warm the page cache for every measurement below
            nbytes, raw_seconds = raw_read(store / what)
            streamed = CacheDataset(reader, request, videos, args.frames, train=True, preload=False)
            samples, streamed_seconds = epoch(streamed, args.batch_size, args.workers)
            began = time.perf_counter()
            held = CacheDataset(reader, request, videos, args.frames, train=True, preload=True)
            load_seconds = time.perf_counter() - began
            _, held_seconds = epoch(held, args.batch_size, 0)
            rows.append((what, nbytes, samples, raw_seconds, streamed_seconds, load_seconds, held_seconds))
    print(f"{args.videos} videos, {args.model} shapes, {args.frames} frames x {len(settings.layers)} blocks x "
          f"{settings.tokens} tokens x {settings.width}, {args.dtype}, batch {args.batch_size}, "
          f"{args.workers} loader worker(s) when streamed")
    print(f"{'features':8s} {'MB/video':>9s} {'raw read':>10s} {'streamed':>22s} {'preload':>10s} "
          f"{'from RAM':>14s}  streamed/raw  preload/raw")
    for what, nbytes, samples, raw_s, streamed_s, load_s, held_s in rows:
        print(f"{what:8s} {nbytes / args.videos / 1e6:9.3f} {nbytes / raw_s / 1e6:6.0f} MB/s "
              f"{nbytes / streamed_s / 1e6:6.0f} MB/s {samples / streamed_s:7.1f} s/s "
              f"{nbytes / load_s / 1e6:5.0f} MB/s {samples / held_s:9.0f} s/s  {raw_s / streamed_s:12.2f}"
              f"  {raw_s / load_s:11.2f}")
    print("(s/s: samples per second; preload: reading the arrays into RAM once; from RAM: batches gathered "
          "from them)")


if __name__ == "__main__":
    main()
