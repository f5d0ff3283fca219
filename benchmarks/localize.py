"""Localisation from the cache on a THUMOS14-sized dense store: proposal-head training samples (windows) per
second through the one training loop, and the time a whole evaluation takes (proposals for every test video,
zero-shot naming, the official mAP and AR-AN), on random features with a real model's shapes.

    python benchmarks/localize.py                          # 413 videos of ~210 s at 10 fps, ViT-B-16 shapes
    python benchmarks/localize.py --videos 60 --seconds 60 # a quick run
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=413)
    parser.add_argument("--seconds", type=float, default=210.0, help="mean video length")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--instances", type=int, default=15, help="labelled segments per video")
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    from clipcache.cache.reader import CacheReader
    from clipcache.pipeline.evaluate.config import EvalConfig
    from clipcache.pipeline.evaluate.run import evaluate
    from clipcache.pipeline.train.config import TrainConfig
    from clipcache.pipeline.train.loop import train_head
    from synthetic_store import make_dense_store

    work = Path(tempfile.mkdtemp(prefix="clipcache-localize-"))
    try:
        began = time.perf_counter()
        make_dense_store(work / "store.zarr", args.model, args.videos, args.seconds, args.fps, args.instances)
        frames = int(CacheReader(work / "store.zarr").samples.sum())
        built = time.perf_counter() - began
        run = train_head(TrainConfig(store=work / "store.zarr", head="proposals", out=work / "run", epochs=args.epochs,
                                     min_steps=0, quiet=True))
        rate = run["best"]["samples_per_s"]
        began = time.perf_counter()
        record = evaluate(EvalConfig(store=work / "store.zarr", checkpoint=work / "run", quiet=True))
        scored = time.perf_counter() - began
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; store: {args.videos} videos, {frames} "
          f"frames ({args.fps:g} fps, {args.model} shapes), {args.instances} segments each; built in {built:.0f} s")
    print(f"proposal head training: {rate:.1f} windows/s (256 frames each, batch of its recipe)")
    print(f"evaluation of the test split ({record['videos']} videos, {record['proposals']} proposals, zero-shot "
          f"naming, mAP and AR-AN): {scored:.1f} s")


if __name__ == "__main__":
    main()
