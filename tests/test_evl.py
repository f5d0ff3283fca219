"""The EVL head against the paper's equations written out independently with loops (float64), and against
its earlier implementation (a gathered relative-position weight) in outputs and gradients (float32)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from clipcache.heads.base import HeadContext
from clipcache.heads.evl import SCORES_IN_CACHE, EVLHead, FrozenAffinity
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loop import with_recipe

GRID, WIDTH, HEADS, FRAMES, M, CLASSES = (2, 3), 128, 2, 3, 2, 4
DECODER_HEADS = WIDTH // 64  # EVL's decoder heads are 64 channels wide, as CLIP's


def _context(grid: tuple[int, int] = GRID, frames: int = FRAMES) -> HeadContext:
    rng = torch.Generator().manual_seed(0)
    frozen = {}
    for block in range(5):
        frozen[f"blocks.{block}.ln_1.weight"] = 1 + 0.1 * torch.randn(WIDTH, generator=rng)
        frozen[f"blocks.{block}.ln_1.bias"] = 0.1 * torch.randn(WIDTH, generator=rng)
        frozen[f"blocks.{block}.attn.in_proj_weight"] = torch.randn(3 * WIDTH, WIDTH, generator=rng) / math.sqrt(WIDTH)
        frozen[f"blocks.{block}.attn.in_proj_bias"] = 0.1 * torch.randn(3 * WIDTH, generator=rng)
    return HeadContext(classes=tuple("abcd"), frames=frames, embed_dim=8, width=WIDTH, heads=HEADS,
                       tokens=1 + grid[0] * grid[1], grid=grid, layers=(1, 2, 3), num_blocks=4, frozen=frozen)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * weight + bias


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _reference(head: EVLHead, ctx: HeadContext, tokens: np.ndarray) -> np.ndarray:
    """Y = X + DWConv_t(X) + P + XA(q, k); single query through M decoder blocks; LN; linear."""
    p = {k: v.detach().double().numpy() for k, v in head.state_dict().items()}
    f = {k: v.double().numpy() for k, v in ctx.frozen.items()}
    batch, _, frames, length, width = tokens.shape
    h, w = GRID
    dh = width // HEADS
    outputs = []
    for b in range(batch):
        z = p["query"][0, 0].copy()
        for i, block in enumerate(head.request.layers[1:]):
            x, x_in = tokens[b, i + 1], tokens[b, i]
            normed = _layer_norm(x_in, f[f"blocks.{block}.ln_1.weight"], f[f"blocks.{block}.ln_1.bias"])
            qkv = normed @ f[f"blocks.{block}.attn.in_proj_weight"].T + f[f"blocks.{block}.attn.in_proj_bias"]
            q, k = qkv[..., :width], qkv[..., width:2 * width]
            y = x.copy()
            conv_w, conv_b = p[f"enrich.{i}.conv.weight"], p[f"enrich.{i}.conv.bias"]
            for t in range(frames):
                for j, dt in enumerate((-1, 0, 1)):
                    if 0 <= t + dt < frames:
                        y[t] += conv_w[:, 0, j] * x[t + dt]
                y[t] += conv_b + p[f"enrich.{i}.position"][t]
            for t in range(frames):
                for other, name in ((t - 1, "weight_prev"), (t + 1, "weight_next")):
                    if not 0 <= other < frames:
                        continue
                    rel_w = p[f"enrich.{i}.cross.{name}"]
                    for pq in range(1, length):
                        affinity = np.zeros(length - 1)
                        for head_index in range(HEADS):
                            sl = slice(head_index * dh, (head_index + 1) * dh)
                            scores = np.array([q[t, pq, sl] @ k[other, kk, sl] for kk in range(1, length)])
                            affinity += _softmax(scores / math.sqrt(dh)) / HEADS
                        py, px = divmod(pq - 1, w)
                        for kk in range(length - 1):
                            ky, kx = divmod(kk, w)
                            y[t, pq] += affinity[kk] * rel_w[(py - ky + h - 1) * (2 * w - 1) + (px - kx + w - 1)]
            memory = y.reshape(-1, width)
            d = f"decoder.{i}."
            zq = _layer_norm(z, p[d + "ln_query.weight"], p[d + "ln_query.bias"]) @ p[d + "q_proj.weight"].T \
                + p[d + "q_proj.bias"]
            mem = _layer_norm(memory, p[d + "ln_memory.weight"], p[d + "ln_memory.bias"])
            keys = mem @ p[d + "k_proj.weight"].T + p[d + "k_proj.bias"]
            values = mem @ p[d + "v_proj.weight"].T + p[d + "v_proj.bias"]
            attention = np.zeros(width)
            dd = width // DECODER_HEADS
            for head_index in range(DECODER_HEADS):
                sl = slice(head_index * dd, (head_index + 1) * dd)
                attention[sl] = _softmax(keys[:, sl] @ zq[sl] / math.sqrt(dd)) @ values[:, sl]
            z = z + attention @ p[d + "out_proj.weight"].T + p[d + "out_proj.bias"]
            hidden = _layer_norm(z, p[d + "ln_mlp.weight"], p[d + "ln_mlp.bias"]) @ p[d + "mlp.0.weight"].T \
                + p[d + "mlp.0.bias"]
            hidden = hidden / (1 + np.exp(-1.702 * hidden))
            z = z + hidden @ p[d + "mlp.3.weight"].T + p[d + "mlp.3.bias"]
        z = _layer_norm(z, p["norm.weight"], p["norm.bias"])
        outputs.append(z @ p["fc.weight"].T + p["fc.bias"])
    return np.stack(outputs)


def test_forward_matches_the_equations() -> None:
    ctx = _context()
    torch.manual_seed(0)
    head = EVLHead(ctx).eval()
    with torch.no_grad():  # the zero-initialised terms must be non-zero to be tested
        for name, param in head.named_parameters():
            if "position" in name or "cross" in name:
                param.normal_(0, 0.5)
    assert head.request.layers == (1, 2, 3) and len(head.decoder) == M
    tokens = torch.randn(2, M + 1, FRAMES, ctx.tokens, WIDTH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = head({"tokens": tokens}).double().numpy()
    np.testing.assert_allclose(ours, _reference(head, ctx, tokens.double().numpy()), atol=1e-5, rtol=1e-5)


def _earlier_forward(head: EVLHead, ctx: HeadContext, tokens: torch.Tensor) -> torch.Tensor:
    """The head's forward as it was before the relative-position map became windowed GEMMs (kept here as the
    slow reference): q/k recomputed per layer, the (N, N, C) weight gathered by relative index, one batched
    matmul per query patch, the XA term added frame pair by frame pair."""
    h, w = ctx.grid
    ys, xs = torch.arange(h * w) // w, torch.arange(h * w) % w
    index = (ys[:, None] - ys[None, :] + h - 1) * (2 * w - 1) + (xs[:, None] - xs[None, :] + w - 1)  # (N, N) offset

    def mapped(q: torch.Tensor, k: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        affinity = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1).mean(dim=2)
        b, t, n, _ = affinity.shape
        per_query = affinity.permute(2, 0, 1, 3).reshape(n, b * t, n)
        return torch.bmm(per_query, F.embedding(index, weight)).reshape(n, b, t, -1).permute(1, 2, 0, 3)

    z = head.query.expand(len(tokens), -1, -1)
    for i, (enrich, block) in enumerate(zip(head.enrich, head.decoder)):
        x, block_input = tokens[:, i + 1], tokens[:, i, :, 1:]
        frozen = {name[len(f"blocks.{head.request.layers[i + 1]}."):]: value for name, value in ctx.frozen.items()
                  if name.startswith(f"blocks.{head.request.layers[i + 1]}.")}
        normed = F.layer_norm(block_input, (WIDTH,), frozen["ln_1.weight"], frozen["ln_1.bias"])
        q, k = F.linear(normed, frozen["attn.in_proj_weight"][:2 * WIDTH],
                        frozen["attn.in_proj_bias"][:2 * WIDTH]).chunk(2, dim=-1)
        b, t, length, c = x.shape
        q, k = (u.reshape(b, t, length - 1, HEADS, c // HEADS).transpose(2, 3) for u in (q, k))
        conv = enrich.conv(x.permute(0, 2, 3, 1).reshape(b * length, c, t)).reshape(b, length, c, t)
        y = x + conv.permute(0, 3, 1, 2) + enrich.position[:, None, :]
        cross = q.new_zeros(b, t, length - 1, c)
        if t > 1:
            cross[:, 1:] += mapped(q[:, 1:], k[:, :-1], enrich.cross.weight_prev)
            cross[:, :-1] += mapped(q[:, :-1], k[:, 1:], enrich.cross.weight_next)
        z = block(z, torch.cat([y[:, :, :1], y[:, :, 1:] + cross], dim=2).flatten(1, 2))
    return head.fc(head.dropout(head.norm(z[:, 0])))


@pytest.mark.parametrize(("grid", "frames"), [((2, 3), 3), ((3, 2), 4), ((2, 2), 1)])
def test_outputs_and_gradients_equal_the_earlier_implementation(grid: tuple[int, int], frames: int) -> None:
    ctx = _context(grid, frames)
    torch.manual_seed(0)
    head = EVLHead(ctx).eval()
    with torch.no_grad():
        for name, param in head.named_parameters():
            if "position" in name or "cross" in name:
                param.normal_(0, 0.5)
    tokens = torch.randn(3, M + 1, frames, ctx.tokens, WIDTH, generator=torch.Generator().manual_seed(1))
    probe = torch.randn(3, CLASSES, generator=torch.Generator().manual_seed(2))
    results = []
    for forward in (lambda: head({"tokens": tokens}), lambda: _earlier_forward(head, ctx, tokens)):
        head.zero_grad()
        logits = forward()
        (logits * probe).sum().backward()
        # an unused parameter (the decoder's key bias, which cancels in the softmax) has no gradient: zero
        results.append((logits.detach(), {name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                          for name, p in head.named_parameters()}))
    (ours, grads), (earlier, earlier_grads) = results
    torch.testing.assert_close(ours, earlier, atol=1e-5, rtol=1e-5)
    for name in grads:
        torch.testing.assert_close(grads[name], earlier_grads[name], atol=1e-5, rtol=1e-5, msg=name)
    assert (grads["enrich.0.cross.weight_prev"].abs().sum() > 0) == (frames > 1)


def test_cross_frame_term_changes_the_output() -> None:
    ctx = _context()
    head = EVLHead(ctx).eval()
    tokens = torch.randn(1, M + 1, FRAMES, ctx.tokens, WIDTH)
    with torch.no_grad():
        before = head({"tokens": tokens})
        head.enrich[0].cross.weight_prev.normal_(0, 0.3)  # (a constant would vanish in the LayerNorm)
        assert not torch.allclose(before, head({"tokens": tokens}))


def test_missing_blocks_are_explained() -> None:
    ctx = _context()
    ctx.layers = (0, 2, 3)
    with pytest.raises(ValueError, match=r"needs the last 3 blocks stored consecutively.*\[2, 3\].*--layers -3:"):
        EVLHead(ctx, num_layers=2)
    assert EVLHead(ctx).request.layers == (2, 3)  # the default fits what is stored


def test_weights_hold_only_what_trains() -> None:
    """The frozen ln_1/qkv come from the store each time; saved weights are the decoder's own."""
    head = EVLHead(_context())
    assert set(head.state_dict()) == {name for name, _ in head.named_parameters()}


def test_defaults_are_the_papers(tmp_path: Path) -> None:
    """4 decoder layers when 5 blocks are stored, dropout 0.5, and EVL's optimiser settings as the recipe."""
    ctx = _context()
    ctx.layers = (0, 1, 2, 3, 4)
    head = EVLHead(ctx)
    assert len(head.decoder) == 4 and head.request.layers == (0, 1, 2, 3, 4)
    assert head.dropout.p == 0.5 and all(block.mlp[2].p == 0.5 for block in head.decoder)
    cfg = with_recipe(TrainConfig(store=tmp_path / "store.zarr", head="evl", out=tmp_path / "run"))
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.label_smoothing, cfg.grad_clip) == (4e-4, 0.05, 256, 0, 0)


def test_affinities_computed_a_few_videos_at_a_time_equal_the_whole_batch() -> None:
    """A 30x30 grid makes one video's attention scores fill the cache budget: 3 videos are 3 chunks."""
    grid, width, heads, frames = (30, 30), 64, 2, 3
    rng = torch.Generator().manual_seed(0)
    frozen = {"blocks.1.ln_1.weight": 1 + 0.1 * torch.randn(width, generator=rng),
              "blocks.1.ln_1.bias": 0.1 * torch.randn(width, generator=rng),
              "blocks.1.attn.in_proj_weight": torch.randn(3 * width, width, generator=rng) / math.sqrt(width),
              "blocks.1.attn.in_proj_bias": 0.1 * torch.randn(3 * width, generator=rng)}
    ctx = HeadContext(classes=("a", "b"), frames=frames, embed_dim=8, width=width, heads=heads, tokens=901, grid=grid,
                      layers=(0, 1), num_blocks=2, frozen=frozen)
    affinity = FrozenAffinity(ctx, block=1)
    assert 2 * (frames - 1) * heads * 900 ** 2 * 4 > SCORES_IN_CACHE / 2  # so each chunk holds one video
    patches = torch.randn(3, frames, 900, width, generator=rng)
    normed = F.layer_norm(patches, (width,), frozen["blocks.1.ln_1.weight"], frozen["blocks.1.ln_1.bias"])
    q, k = F.linear(normed, frozen["blocks.1.attn.in_proj_weight"][:2 * width],
                    frozen["blocks.1.attn.in_proj_bias"][:2 * width]).chunk(2, dim=-1)
    q, k = (u.reshape(3, frames, 900, heads, width // heads).transpose(2, 3) for u in (q, k))
    scores = q[:, 1:] @ k[:, :-1].transpose(-1, -2) / math.sqrt(width // heads), \
        q[:, :-1] @ k[:, 1:].transpose(-1, -2) / math.sqrt(width // heads)
    for got, score in zip(affinity(patches), scores):
        torch.testing.assert_close(got, score.softmax(dim=-1).mean(dim=2), atol=1e-6, rtol=1e-5)
