"""Stage-two read speed: useful bytes per second of the cache dataset next to a plain sequential read of the
same files, for 1 and 6 views per video, float16 and int8 tokens, page cache warm and cold.

    python benchmarks/read.py                         # ViT-B-16 shapes, 8 frames, last 2 blocks, 64 videos
    python benchmarks/read.py --videos 128 --workers 2 --layers=-4:

Useful bytes are those a sample uses: the requested blocks of the one view a training sample draws. The
plain read, the baseline, is every byte of the token files read in order into one reused buffer the size of a
batch, memory that delivers what the dataset delivers. The same read into a 16 MB buffer is printed beside it:
such a buffer stays in the processor's cache, so it measures the copy from the page cache without the
writes to memory that any batch of tens of MB costs. Cold figures drop the page cache before each
measurement (needs root: /proc/sys/vm/drop_caches); without permission only warm ones are printed. Every
figure comes from this one run.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
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


def plain_read(folder: Path, buffer_bytes: int) -> tuple[int, float]:
    """Bytes and seconds to read every file under `folder` in path order, `buffer_bytes` at a time into one
    reused buffer (written once before, so the figure is the read itself, not first-touch page faults)."""
    files = sorted(file for file in folder.rglob("*") if file.is_file())
    buffer = memoryview(bytearray(b"\1" * buffer_bytes))
    began, total = time.perf_counter(), 0
    for file in files:
        with file.open("rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                total += count
    return total, time.perf_counter() - began


def dataset_pass(dataset: CacheDataset, batch_size: int, workers: int) -> tuple[int, float]:
    """Samples and seconds of one shuffled training pass. Each batch is let go before the next is read, as
    the training loop does (it keeps only the device copy), so the dataset may write into its memory again."""
    began, samples = time.perf_counter(), 0
    for batch in batch_loader(dataset, batch_size, shuffle=True, workers=workers):
        samples += len(batch["label"])
        del batch
    return samples, time.perf_counter() - began


def measure(store: Path, frames: int, batch_size: int, workers: int, cold: bool, repeats: int
            ) -> dict[str, float]:
    """Plain reads vs the dataset on one store, warm (each read once before) or cold: medians of `repeats`
    interleaved measurements (a virtual machine's disk and memory vary from one second to the next)."""
    reader = CacheReader(store)
    s = reader.settings
    dataset = CacheDataset(reader, FeatureRequest(layers=s.layers), np.arange(s.num_videos), frames, train=True,
                           preload=False)
    useful = dataset.feature_bytes() / (len(dataset.videos) * dataset.views)  # per sample: one view's blocks
    reads: dict[str, Callable[[], tuple[int, float]]] = {
        "plain": lambda: plain_read(store / "tokens", int(useful * batch_size)),
        "plain_16mb": lambda: plain_read(store / "tokens", 1 << 24),
        "dataset": lambda: dataset_pass(dataset, batch_size, workers),
    }
    rates: dict[str, list[float]] = {name: [] for name in reads}
    for _ in range(repeats):
        for name, read in reads.items():
            settle(read, cold)
            count, seconds = read()
            rates[name].append(count * (useful if name == "dataset" else 1) / seconds)
    figures = {name: float(np.median(values)) for name, values in rates.items()}
    return {**figures, "samples": figures["dataset"] / useful, "mb_per_sample": useful / 1e6}


def settle(read: Callable[[], object], cold: bool) -> None:
    """Before a measurement: written data flushed, then the page cache dropped (cold) or the same read done
    once (warm)."""
    os.sync()
    if not cold:
        read()
    elif not drop_caches():
        raise PermissionError("dropping the page cache is not permitted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--layers", default="-2:")
    parser.add_argument("--workers", type=int, default=0, help="loader workers")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure (their median)")
    args = parser.parse_args()
    where = machine(torch.device("cpu"))
    print(f"{where}; {args.videos} videos, {args.model} shapes, {args.frames} frames, blocks {args.layers}, "
          f"batch {args.batch_size}, {args.workers} loader worker(s), median of {args.repeats}; useful bytes: the "
          "view a sample draws")
    print(f"{'views':>5s} {'dtype':>8s} {'cache':>5s} {'MB/sample':>9s} {'plain read':>12s} {'(16 MB buf)':>12s} "
          f"{'dataset':>12s} {'samples/s':>9s} {'dataset/plain':>13s}")
    for views in (1, 6):
        for dtype in ("float16", "int8"):
            with tempfile.TemporaryDirectory(prefix="clipcache-read-") as tmp:
                store = Path(tmp) / "store.zarr"
                make_store(store, args.model, args.videos, args.frames, args.layers, dtype=dtype, views=views)
                for cold in (False, True):
                    try:
                        m = measure(store, args.frames, args.batch_size, args.workers, cold, args.repeats)
                    except PermissionError as error:
                        print(f"{views:5d} {dtype:>8s} {'cold':>5s}  ({error})")
                        continue
                    print(f"{views:5d} {dtype:>8s} {'cold' if cold else 'warm':>5s} {m['mb_per_sample']:9.2f} "
                          f"{m['plain'] / 1e6:7.0f} MB/s {m['plain_16mb'] / 1e6:7.0f} MB/s "
                          f"{m['dataset'] / 1e6:7.0f} MB/s {m['samples']:9.1f} "
                          f"{m['dataset'] / m['plain']:13.2f}")


if __name__ == "__main__":
    main()
