"""Stage-two training speed from the cache: samples/s of every head through the one training loop.

    python benchmarks/train.py                        # ViT-B-16 shapes, 8 frames, CPU or GPU (auto)
    python benchmarks/train.py --heads linear,text --videos 512 --epochs 3
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from synthetic_store import make_store

from heads import HEADS
from pipeline.train import TrainConfig, train_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--videos", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--layers", default="-4:")
    parser.add_argument("--heads", default=",".join(sorted(HEADS)))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipcache-train-") as tmp:
        store = Path(tmp) / "store.zarr"
        make_store(store, args.model, args.videos, args.frames, args.layers)
        rows = []
        for head in args.heads.split(","):
            out = Path(tmp) / head
            train_head(TrainConfig(store=store, head=head, out=out, epochs=args.epochs, batch_size=args.batch_size,
                                   device=args.device, preload=True, quiet=True))
            metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            rows.append((head, max(m["samples_per_s"] for m in metrics)))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"{device}; {args.model} shapes, {args.frames} frames, batch {args.batch_size}, features preloaded")
    for head, rate in rows:
        print(f"{head:10s} {rate:10.0f} training samples/s")


if __name__ == "__main__":
    main()
