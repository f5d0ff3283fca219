"""Stage-two training speed from the cache: samples/s of every head through the one training loop, and for
EVL the same training step with the frozen encoder run inside it (the reference's way). With `--reference`
instead: our EVL and attnpool training steps against the papers' own modules on identical inputs, with our
weights copied into them (the same function, checked), timed in one run.

    python benchmarks/train.py                        # tiny built-in model, 8 frames, CPU or GPU (auto): < 2 min on CPU
    python benchmarks/train.py --model ViT-B-16 --layers=-5: --videos 512 --heads linear,text,evl
    python benchmarks/train.py --reference PATH       # PATH: a checkout of OpenGVLab/efficient-video-recognition
    python benchmarks/train.py --reference PATH --device cuda --compare-batch 32 --attnpool-batch 128
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from clipcache.cache.reader import CacheReader
from clipcache.heads import HEADS, build_head
from clipcache.heads.base import HeadContext
from clipcache.pipeline.common import autocast, resolve_device
from clipcache.pipeline.evaluate.predict import to_device
from clipcache.pipeline.extract.encoder import FrozenImageEncoder
from clipcache.pipeline.models import load_model
from clipcache.pipeline.train.build import build_for_store, head_context
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loop import train_head
from evl_qk import with_stored
from reference_heads import (
    CPU_PATCH,
    attnpool_as_reference,
    attnpool_reference,
    evl_as_reference,
    evl_reference,
    evl_reference_inputs,
    fresh,
    load_evl,
)
from steps import compared, interleaved, machine, timed, training_step
from synthetic_store import make_store


def evl_cache_vs_encoder(store: Path, model: str, batch_size: int, device: torch.device, repeats: int = 3
                         ) -> dict[str, float]:
    """One EVL training step from cached tokens vs the same step behind the frozen encoder's forward
    (bf16 autocast on GPU), and the share of the step spent recomputing q/k from cached block inputs."""
    reader = CacheReader(store)
    s = reader.settings
    head = build_for_store(reader, "evl", {}, s.frames, "text4vis", None, device)
    data = CacheDataset(reader, head.request, reader.done[:batch_size], s.frames, train=True, preload=True)
    batch = torch.utils.data.default_collate([data[i] for i in range(batch_size)])
    moved = to_device(batch, device)
    tokens, labels = moved["tokens"], moved["label"]
    encoder = FrozenImageEncoder(load_model(model, device=device), head.request.layers, device)
    pixels = torch.randint(0, 256, (batch_size * s.frames, s.image_size, s.image_size, 3), dtype=torch.uint8)

    def encoded(_: None) -> torch.Tensor:
        taps, _ = encoder(pixels)
        stacked = torch.stack([taps[layer] for layer in head.request.layers], dim=1)
        features = stacked.reshape(batch_size, s.frames, len(head.request.layers), s.tokens, s.width)
        return head({"tokens": features.transpose(1, 2).to(device).float()})

    @torch.no_grad()
    def qk_only(_: None) -> None:
        with autocast(device):
            for i, enrich in enumerate(head.enrich):
                enrich.affinity.qk(tokens[:, i, :, 1:])

    cached = training_step(lambda _: head({"tokens": tokens}), head.parameters(), labels, device)
    online = training_step(encoded, head.parameters(), labels, device)
    times = interleaved({"cached_s": cached, "online_s": online, "qk_s": timed(qk_only, device)}, repeats)
    return {name: timing.wall for name, timing in times.items()}


def _largest_differences(ours: nn.Module, ours_logits: Callable[[], torch.Tensor], theirs: nn.Module,
                         theirs_logits: Callable[[], torch.Tensor],
                         as_reference: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> str:
    """How far apart two modules holding the same weights are, in logits and in every parameter's gradient
    (fp32, dropout off)."""
    results = []
    for module, logits_of in ((ours, ours_logits), (theirs, theirs_logits)):
        module.eval().zero_grad()
        logits = logits_of()
        probe = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)).to(logits)
        (logits * probe).sum().backward()
        grads = {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in module.named_parameters()}
        results.append((logits.detach(), grads))
        module.train().zero_grad()
    (ours_out, ours_grads), (theirs_out, theirs_grads) = results
    ours_grads = as_reference(ours_grads)
    assert ours_grads.keys() == theirs_grads.keys(), "the weight map misses parameters"
    grad = max((ours_grads[name] - theirs_grads[name]).abs().max().item() for name in theirs_grads)
    scale = max(g.abs().max().item() for g in theirs_grads.values())
    return (f"logits differ by at most {(ours_out - theirs_out).abs().max().item():.1e} "
            f"(largest {theirs_out.abs().max().item():.1e}), parameter gradients by {grad:.1e} (largest {scale:.1e})")


def _checkout_commit(checkout: Path) -> str:
    found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else "unknown commit"


def _evl_against_reference(evl_module: ModuleType, ctx: HeadContext, tokens: torch.Tensor, labels: torch.Tensor,
                           layers: int, repeats: int, where: str) -> None:
    device = tokens.device
    torch.manual_seed(0)
    head = build_head("evl", ctx, num_layers=layers).to(device)
    with torch.no_grad():  # zero-initialised in both: make them count in the equality check
        for name, param in head.named_parameters():
            if "position" in name or "cross" in name or name == "query":
                param.normal_(0, 0.1)
    reference = evl_reference(evl_module, head, ctx).to(device)
    features = evl_reference_inputs(tokens, head, ctx)
    print("EVL, same function: " + _largest_differences(
        head, lambda: head({"tokens": tokens}), reference, lambda: reference(fresh(features)),
        lambda state: evl_as_reference(state, layers)))
    given_qk, given_affinity = with_stored(head, tokens)
    contenders = {"given the same q and k": given_qk, "from the cache (q, k recomputed from block j-1)": head,
                  "given the adjacent-frame affinities": given_affinity}
    steps = {name: training_step(lambda _, h=h: h({"tokens": tokens}), h.parameters(), labels, device)
             for name, h in contenders.items()}
    steps["reference"] = training_step(reference, reference.parameters(), labels, device, lambda: fresh(features))
    times = interleaved(steps, repeats)
    reference_time = times.pop("reference")
    print("EVL step; reference: EVLDecoder given each block's out, q and k")
    for name, ours in times.items():
        print(f"EVL step, ours {name}: {compared(ours, reference_time, device)} ({where}, {layers} layers, "
              f"batch {len(tokens)})")


def _attnpool_against_open_clip(ctx: HeadContext, tokens: torch.Tensor, labels: torch.Tensor, repeats: int,
                                where: str) -> None:
    torch.manual_seed(0)
    head = build_head("attnpool", ctx).to(tokens.device)
    reference = attnpool_reference(head, ctx).to(tokens.device)
    print("attnpool, same function: " + _largest_differences(
        head, lambda: head({"tokens": tokens}), reference, lambda: reference(tokens), attnpool_as_reference))
    times = interleaved({
        "reference": training_step(lambda _: reference(tokens), reference.parameters(), labels, tokens.device),
        "ours": training_step(lambda _: head({"tokens": tokens}), head.parameters(), labels, tokens.device)}, repeats)
    print(f"attnpool step; reference: open_clip's AttentionalPooler: "
          f"{compared(times['ours'], times['reference'], tokens.device)} ({where}, {len(head.query)} query, "
          f"{head.heads} heads, batch {len(tokens)})")


def against_references(args: argparse.Namespace) -> None:
    """EVL against EVLDecoder from `args.reference`, attnpool against open_clip's AttentionalPooler, on the
    same tokens (random, with a real model's shapes and frozen ln_1/qkv weights)."""
    device = resolve_device(args.device)
    evl_module = load_evl(args.reference, patch_cuda_zeros=device.type != "cuda")
    m = args.decoder_layers
    videos = max(args.compare_batch, args.attnpool_batch)
    with tempfile.TemporaryDirectory(prefix="clipcache-reference-") as tmp:
        s = make_store(Path(tmp) / "store.zarr", args.compare_model, videos, args.frames, f"-{m + 1}:",
                       classes=args.classes)
        reader = CacheReader(Path(tmp) / "store.zarr")
        ctx = head_context(reader, args.frames)
        tokens = torch.stack([torch.from_numpy(reader.tokens(layer, slice(None))[:, 0]) for layer in s.layers],
                             dim=1).to(device).float()  # (videos, M+1, T, L, D), view 0
    labels = torch.arange(videos, device=device) % args.classes
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    print(f"{machine(device)}; torch {torch.__version__}; {args.compare_model} shapes: width {s.width}, {s.heads} "
          f"heads, grid {s.grid[0]}x{s.grid[1]} ({s.tokens} tokens), {args.frames} frames, {args.classes} classes; "
          f"{precision}; median of {args.repeats} interleaved training steps (forward, loss, backward, fused AdamW)")
    print(f"EVL reference: OpenGVLab/efficient-video-recognition {_checkout_commit(args.reference)} at "
          f"{args.reference}" + (f"; patched: {CPU_PATCH}" if device.type != "cuda" else ""))
    where = f"{machine(device)}, {args.compare_model} shapes, {args.frames} frames"
    b = args.compare_batch
    _evl_against_reference(evl_module, ctx, tokens[:b], labels[:b], m, args.repeats, where)
    b = args.attnpool_batch
    _attnpool_against_open_clip(ctx, tokens[:b, -1:], labels[:b], args.repeats, where + f" x {s.tokens} tokens")


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
    against = parser.add_argument_group("against the references (--reference)")
    against.add_argument("--reference", type=Path, metavar="PATH",
                         help="a checkout of OpenGVLab/efficient-video-recognition: time EVL and attnpool against the "
                              "papers' modules instead of the per-head throughput")
    against.add_argument("--compare-model", default="ViT-B-16", help="the shapes (width, heads, grid) compared")
    against.add_argument("--compare-batch", type=int, default=2, help="videos per EVL step")
    against.add_argument("--attnpool-batch", type=int, default=8, help="videos per attnpool step")
    against.add_argument("--decoder-layers", type=int, default=4)
    against.add_argument("--classes", type=int, default=400)
    against.add_argument("--repeats", type=int, default=5, help="interleaved rounds, after a warm-up round")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reference:
        against_references(args)
        return
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
                                   epochs=args.epochs, min_steps=0, batch_size=args.batch_size, device=args.device,
                                   preload=True, quiet=True))  # a throughput measurement: one pass per epoch
            metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            rows.append((head, max(m["samples_per_s"] for m in metrics)))
        evl = evl_cache_vs_encoder(store, args.model, args.evl_batch, resolve_device(args.device)) \
            if "evl" in args.heads.split(",") else None
    print(f"{machine(resolve_device(args.device))}; {args.model} shapes, {args.frames} frames, batch "
          f"{args.batch_size}, features preloaded")
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
