"""EVL's cross-frame term needs each tapped block's attention between adjacent frames, from its q and k.
Three ways to get it from a cache: recompute q/k in the training step from the block's cached input with
its frozen ln_1 and qkv projection (what clipcache does: one more block stored), store q and k at extract
time, or store the adjacent-frame affinities themselves (2(T-1) N x N maps per block, nothing recomputed).
This measures all three on the same head, batch and device: bytes per video, the training step, and how
fast this machine reads the cache.

    python benchmarks/evl_qk.py                                 # ViT-B-16 shapes, 8 frames, 4 decoder layers
    python benchmarks/evl_qk.py --model ViT-B-32 --batch-size 16 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from clipcache.cache.reader import CacheReader
from clipcache.heads import build_head
from clipcache.pipeline.common import autocast, resolve_device
from clipcache.pipeline.train.build import head_context
from steps import interleaved, machine, training_step
from synthetic_store import make_store


class StoredQK(nn.Module):
    """Stands in for a layer's FrozenQK with q and k read from a cache instead of recomputed."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor) -> None:
        super().__init__()
        self.q, self.k = q, k

    def forward(self, _block_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q, self.k


class StoredAffinity(nn.Module):
    """Stands in for a layer's FrozenAffinity with the adjacent-frame affinities read from a cache."""

    def __init__(self, prev: torch.Tensor, next_: torch.Tensor) -> None:
        super().__init__()
        self.prev, self.next = prev, next_

    def forward(self, _block_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prev, self.next


def with_stored(head: nn.Module, tokens: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    """Two copies of an EVL head: one given each layer's q and k, one given its adjacent-frame affinities,
    both computed here from `tokens` (B, M+1, T, L, D) as a cache would hold them."""
    with torch.no_grad(), autocast(tokens.device):
        qk = [enrich.affinity.qk(tokens[:, i, :, 1:]) for i, enrich in enumerate(head.enrich)]
        affinities = [enrich.affinity(tokens[:, i, :, 1:]) for i, enrich in enumerate(head.enrich)]
    given_qk, given_affinity = copy.deepcopy(head), copy.deepcopy(head)
    for enrich, (q, k) in zip(given_qk.enrich, qk):
        enrich.affinity.qk = StoredQK(q, k)
    for enrich, (prev, next_) in zip(given_affinity.enrich, affinities):
        enrich.affinity = StoredAffinity(prev, next_)
    return given_qk, given_affinity


def read_rate(reader: CacheReader, layer: int) -> float:
    """Bytes/s of reading one block's tokens video by video, as stage two streams them (page cache warm)."""
    reader.tokens(layer, 0)
    began, total = time.perf_counter(), 0
    for video in range(reader.num_videos):
        total += reader.tokens(layer, video).nbytes
    return total / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--decoder-layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds, after a warm-up round")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    m = args.decoder_layers
    with tempfile.TemporaryDirectory(prefix="clipcache-evl-qk-") as tmp:
        settings = make_store(Path(tmp) / "store.zarr", args.model, args.batch_size, args.frames, f"-{m + 1}:")
        reader = CacheReader(Path(tmp) / "store.zarr")
        rate = read_rate(reader, settings.layers[-1])
        torch.manual_seed(0)
        head = build_head("evl", head_context(reader, args.frames), num_layers=m).to(device)
        tokens = torch.stack([torch.from_numpy(reader.tokens(layer, slice(None))[:, 0]) for layer in settings.layers],
                             dim=1).to(device).float()  # (B, M+1, T, L, D), view 0
    labels = torch.arange(args.batch_size, device=device) % len(settings.classes)
    given_qk, given_affinity = with_stored(head, tokens)
    times = interleaved({name: training_step(lambda _, h=h: h({"tokens": tokens}), h.parameters(), labels, device)
                         for name, h in (("recompute", head), ("qk", given_qk), ("affinity", given_affinity))},
                        args.repeats)

    patches = settings.tokens - 1
    block = args.frames * settings.tokens * settings.width * 2  # one block's tokens per video, float16
    qk = 2 * args.frames * patches * settings.width * 2  # q and k of the patch tokens, float16
    affinity = 2 * (args.frames - 1) * patches * patches * 2  # both directions' N x N maps, float16
    layouts = {"recompute q/k (store M+1 blocks)": ((m + 1) * block, times["recompute"]),
               "store q/k (M blocks + q, k)": (m * block + m * qk, times["qk"]),
               "store affinities (M blocks + maps)": (m * block + m * affinity, times["affinity"])}
    print(f"{machine(device)}; {args.model} shapes, {args.frames} frames, {m} decoder layers, batch {args.batch_size}; "
          f"cache read at {rate / 1e6:.0f} MB/s")
    for layout, (nbytes, step) in layouts.items():
        compute = args.batch_size / step.wall
        cpu = f" (CPU {step.cpu * 1e3:.0f} ms)" if device.type == "cpu" else ""
        print(f"{layout:36s} {nbytes / 1e6:6.1f} MB/video  step {step.wall * 1e3:8.1f} ms{cpu} = {compute:8.1f} "
              f"videos/s  read-bound at {rate / nbytes:8.1f} videos/s  -> {min(compute, rate / nbytes):8.1f} videos/s")


if __name__ == "__main__":
    main()
