"""The EVL head against the paper's equations written out independently with loops (float64)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipcache.heads.base import HeadContext
from clipcache.heads.evl import EVLHead

GRID, WIDTH, HEADS, FRAMES, M, CLASSES = (2, 3), 128, 2, 3, 2, 4
DECODER_HEADS = WIDTH // 64  # EVL's decoder heads are 64 channels wide, as CLIP's


def _context() -> HeadContext:
    rng = torch.Generator().manual_seed(0)
    frozen = {}
    for block in range(5):
        frozen[f"blocks.{block}.ln_1.weight"] = 1 + 0.1 * torch.randn(WIDTH, generator=rng)
        frozen[f"blocks.{block}.ln_1.bias"] = 0.1 * torch.randn(WIDTH, generator=rng)
        frozen[f"blocks.{block}.attn.in_proj_weight"] = torch.randn(3 * WIDTH, WIDTH, generator=rng) / math.sqrt(WIDTH)
        frozen[f"blocks.{block}.attn.in_proj_bias"] = 0.1 * torch.randn(3 * WIDTH, generator=rng)
    return HeadContext(classes=tuple("abcd"), frames=FRAMES, embed_dim=8, width=WIDTH, heads=HEADS,
                       tokens=1 + GRID[0] * GRID[1], grid=GRID, layers=(1, 2, 3), num_blocks=4, frozen=frozen)


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
