"""Stage-two read speed: useful bytes per second of the cache dataset next to a plain sequential read of the
same files, for 1 and 6 views per video, float16 and int8 tokens, page cache warm and cold.

    python benchmarks/read.py                         # ViT-B-16 shapes, 8 frames, last 2 blocks, 32 videos
    python benchmarks/read.py --videos 64 --workers 2 --layers=-4:

Useful bytes are those a sample uses: the requested blocks of the one view a training sample draws. The
plain read is every byte of the token files, read in order into one reused buffer. Cold figures drop the page cache
before each measurement (needs root: /proc/sys/vm/drop_caches); without permission only warm ones are
printed. Every figure comes from this one run.
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipcache.cache.reader import CacheReader
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.train.dataset import CacheDataset, batch_loader
from steps import machine
from synthetic_store import make_store


def drop_caches() -> bool:
    """Empty the page cache (written data flushed first); whether it was permitted."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def plain_read(folder: Path) -> tuple[int, float]:
    """Bytes and seconds to read every file under `folder` in path order, 16 MB at a time into one reused
    buffer (so the figure is the read itself, not the allocation of fresh memory for each file)."""
    files = sorted(file for file in folder.rglob("*") if file.is_file())
    buffer = memoryview(bytearray(1 << 24))
    began, total = time.perf_counter(), 0
    for file in files:
        with file.open("rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                total += count
    return total, time.perf_counter() - began


def dataset_pass(dataset: CacheDataset, batch_size: int, workers: int) -> tuple[int, float]:
    """Samples and seconds of one shuffled training pass."""
    began = time.perf_counter()
    samples = sum(len(batch["label"]) for batch in batch_loader(dataset, batch_size, shuffle=True, workers=workers))
    return samples, time.perf_counter() - began


def measure(store: Path, frames: int, batch_size: int, workers: int, cold: bool) -> dict[str, float]:
    """Plain read vs the dataset on one store, warm (each read once before) or cold."""
    reader = CacheReader(store)
    s = reader.settings
    dataset = CacheDataset(reader, FeatureRequest(layers=s.layers), np.arange(s.num_videos), frames, train=True,
                           preload=False)
    if not cold:
        plain_read(store / "tokens")
    elif not drop_caches():
        raise PermissionError("dropping the page cache is not permitted")
    nbytes, plain_s = plain_read(store / "tokens")
    if not cold:
        dataset_pass(dataset, batch_size, workers)
    elif not drop_caches():
        raise PermissionError("dropping the page cache is not permitted")
    samples, dataset_s = dataset_pass(dataset, batch_size, workers)
    useful = samples * nbytes / (s.num_videos * s.views)  # one view's share of the token bytes per sample
    return {"plain": nbytes / plain_s, "dataset": useful / dataset_s, "samples": samples / dataset_s,
            "mb_per_sample": nbytes / (s.num_videos * s.views) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--layers", default="-2:")
    parser.add_argument("--workers", type=int, default=0, help="loader workers")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    where = machine(torch.device("cpu"))
    print(f"{where}; {args.videos} videos, {args.model} shapes, {args.frames} frames, blocks {args.layers}, "
          f"batch {args.batch_size}, {args.workers} loader worker(s); useful bytes: the view a sample draws")
    print(f"{'views':>5s} {'dtype':>8s} {'cache':>5s} {'MB/sample':>9s} {'plain read':>12s} {'dataset':>12s} "
          f"{'samples/s':>9s} {'dataset/plain':>13s}")
    for views in (1, 6):
        for dtype in ("float16", "int8"):
            with tempfile.TemporaryDirectory(prefix="clipcache-read-") as tmp:
                store = Path(tmp) / "store.zarr"
                make_store(store, args.model, args.videos, args.frames, args.layers, dtype=dtype, views=views)
                for cold in (False, True):
                    try:
                        m = measure(store, args.frames, args.batch_size, args.workers, cold)
                    except PermissionError as error:
                        print(f"{views:5d} {dtype:>8s} {'cold':>5s}  ({error})")
                        continue
                    print(f"{views:5d} {dtype:>8s} {'cold' if cold else 'warm':>5s} {m['mb_per_sample']:9.2f} "
                          f"{m['plain'] / 1e6:7.0f} MB/s {m['dataset'] / 1e6:7.0f} MB/s {m['samples']:9.1f} "
                          f"{m['dataset'] / m['plain']:13.2f}")


if __name__ == "__main__":
    main()
