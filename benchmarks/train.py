"""Stage-two training speed from the cache: samples/s of every head through the one training loop,
and for EVL the same training step with the frozen encoder run inside it (the reference's way).

    python benchmarks/train.py                        # tiny built-in model, 8 frames, CPU or GPU (auto): < 2 min on CPU
    python benchmarks/train.py --model ViT-B-16 --layers=-5: --videos 512 --heads linear,text,evl
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from clipcache.cache.reader import CacheReader
from clipcache.heads import HEADS
from clipcache.pipeline.common import autocast, resolve_device
from clipcache.pipeline.evaluate.predict import to_device
from clipcache.pipeline.extract.encoder import FrozenImageEncoder
from clipcache.pipeline.models import load_model
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loop import train_head
from synthetic_store import make_store


def _timed_steps(step, repeats: int, device: torch.device) -> float:
    """Seconds per call of `step`, after one warm-up call."""
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / repeats


def evl_cache_vs_encoder(store: Path, model: str, batch_size: int, device: torch.device, repeats: int = 3
                         ) -> dict[str, float]:
    """One EVL training step from cached tokens vs the same step behind the frozen encoder's forward
    (bf16 autocast on GPU), and the share of the step spent recomputing q/k from cached block inputs."""
    reader = CacheReader(store)
    s = reader.settings
    head = build_for_store(reader, "evl", {}, s.frames, "text4vis", None, device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4)
    data = CacheDataset(reader, head.request, reader.done[:batch_size], s.frames, train=True, preload=True)
    batch = torch.utils.data.default_collate([data[i] for i in range(batch_size)])
    moved = to_device(batch, device)
    tokens, labels = moved["tokens"], moved["label"]
    encoder = FrozenImageEncoder(load_model(model, device=device), head.request.layers, device)
    pixels = torch.randint(0, 256, (batch_size * s.frames, s.image_size, s.image_size, 3), dtype=torch.uint8)

    def train_step(features: torch.Tensor) -> None:
        with autocast(device):
            loss = torch.nn.functional.cross_entropy(head({"tokens": features}).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def encoder_step() -> None:
        taps, _ = encoder(pixels)
        stacked = torch.stack([taps[layer] for layer in head.request.layers], dim=1)
        train_step(stacked.reshape(batch_size, s.frames, len(head.request.layers), s.tokens, s.width)
                   .transpose(1, 2).to(device).float())

    def qk_only() -> None:
        with torch.no_grad(), autocast(device):
            for i, enrich in enumerate(head.enrich):
                enrich.affinity.qk(tokens[:, i, :, 1:])

    cached = _timed_steps(lambda: train_step(tokens), repeats, device)
    online = _timed_steps(encoder_step, repeats, device)
    return {"cached_s": cached, "online_s": online, "qk_s": _timed_steps(qk_only, repeats, device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clipcache-demo")
    parser.add_argument("--videos", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--layers", default="-4:")
    parser.add_argument("--heads", default=",".join(sorted(HEADS)))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--evl-batch", type=int, default=4, help="batch of the EVL cache-vs-encoder comparison")
    parser.add_argument("--option", action="append", metavar="HEAD.KEY=VALUE",
                        help="a head option, repeatable (default: prompt.prefix=8, prompt.suffix=8, which fit the "
                             "tiny model's 32-token text context)")
    args = parser.parse_args()
    options: dict[str, dict] = {}
    for item in args.option or ["prompt.prefix=8", "prompt.suffix=8"]:
        target, _, value = item.partition("=")
        head, _, key = target.partition(".")
        options.setdefault(head, {})[key] = json.loads(value)
    with tempfile.TemporaryDirectory(prefix="clipcache-train-") as tmp:
        store = Path(tmp) / "store.zarr"
        settings = make_store(store, args.model, args.videos, args.frames, args.layers)
        rows = []
        for head in args.heads.split(","):
            out = Path(tmp) / head
            train_head(TrainConfig(store=store, head=head, out=out, head_options=options.get(head, {}),
                                   epochs=args.epochs, batch_size=args.batch_size, device=args.device, preload=True,
                                   quiet=True))
            metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            rows.append((head, max(m["samples_per_s"] for m in metrics)))
        evl = evl_cache_vs_encoder(store, args.model, args.evl_batch, resolve_device(args.device)) \
            if "evl" in args.heads.split(",") else None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"{device}; {args.model} shapes, {args.frames} frames, batch {args.batch_size}, features preloaded")
    for head, rate in rows:
        print(f"{head:10s} {rate:10.1f} training samples/s")
    if evl:
        m = len(settings.layers) - 1
        frame_layer = settings.tokens * settings.width * 2 * args.frames  # float16 bytes, one block, all frames
        print(f"evl step, batch {args.evl_batch}: {evl['cached_s'] * 1e3:.0f} ms from the cache, "
              f"{evl['online_s'] * 1e3:.0f} ms with the frozen encoder in the step: "
              f"{evl['online_s'] / evl['cached_s']:.1f}x faster per epoch from the cache")
        print(f"evl q/k: recomputing them costs {evl['qk_s'] * 1e3:.1f} ms of the {evl['cached_s'] * 1e3:.0f} ms step; "
              f"caching them instead would add {2 * m * frame_layer / 1e6:.1f} MB per video "
              f"(vs {frame_layer / 1e6:.1f} MB for the one extra block stored now)")


if __name__ == "__main__":
    main()
