"""The CoCa attentional-pooler head: the same function and gradients as open_clip's AttentionalPooler, CoCa's recipe
as its defaults, and it learns on a real store."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from open_clip.transformer import AttentionalPooler

from clipcache.heads.attnpool import AttentionalPoolerHead
from clipcache.heads.base import HeadContext
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loop import with_recipe
from conftest import run_cli

WIDTH, FRAMES, TOKENS = 64, 3, 5


def _context() -> HeadContext:
    return HeadContext(classes=tuple("abcd"), frames=FRAMES, embed_dim=16, width=WIDTH, heads=2, tokens=TOKENS,
                       grid=(2, 2), layers=(1, 2), num_blocks=3)


def test_pooling_and_gradients_match_open_clips_attentional_pooler() -> None:
    torch.manual_seed(0)
    head = AttentionalPoolerHead(_context(), queries=3, layer=0).eval()
    reference = AttentionalPooler(WIDTH, WIDTH, n_head=8, n_queries=3).eval()
    with torch.no_grad():
        for norm in (head.ln_query, head.ln_context):  # non-trivial LayerNorms and biases are part of the test
            norm.weight.normal_(1, 0.2), norm.bias.normal_(0, 0.2)
        for linear in (head.q_proj, head.kv_proj, head.out_proj):
            linear.bias.normal_(0, 0.2)
        reference.query.copy_(head.query)
        reference.ln_q.load_state_dict(head.ln_query.state_dict())
        reference.ln_k.load_state_dict(head.ln_context.state_dict())
        reference.attn.in_proj_weight.copy_(torch.cat([head.q_proj.weight, head.kv_proj.weight]))
        reference.attn.in_proj_bias.copy_(torch.cat([head.q_proj.bias, head.kv_proj.bias]))
        reference.attn.out_proj.load_state_dict(head.out_proj.state_dict())
    tokens = torch.randn(2, 1, FRAMES, TOKENS, WIDTH)
    probe = torch.randn(2, 4)
    ours = head({"tokens": tokens})
    expected = head.fc(reference(tokens[:, 0].flatten(1, 2)).mean(dim=1))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # gradients of the same parameters (open_clip keeps q, k and v in one in-projection)
    pairs = [(head.query, reference.query), (head.ln_query.weight, reference.ln_q.weight),
             (head.ln_context.weight, reference.ln_k.weight), (head.ln_context.bias, reference.ln_k.bias),
             (head.out_proj.weight, reference.attn.out_proj.weight)]
    ours_grads = torch.autograd.grad((ours * probe).sum(),
                                     [p for p, _ in pairs] + [head.q_proj.weight, head.kv_proj.weight])
    theirs_grads = torch.autograd.grad((expected * probe).sum(),
                                       [p for _, p in pairs] + [reference.attn.in_proj_weight])
    for got, want in zip([*ours_grads[:-2], torch.cat(ours_grads[-2:])], theirs_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert ours_grads[3].abs().max() > 1e-3  # the context's LayerNorm shift, folded into the values, still learns
    assert head.request.layers == (1,)


def test_bad_options_are_explained() -> None:
    with pytest.raises(ValueError, match="layer=2: the store holds 2 blocks"):
        AttentionalPoolerHead(_context(), layer=2)
    with pytest.raises(ValueError, match="heads=5 must divide the width 64"):
        AttentionalPoolerHead(_context(), heads=5)


def test_attnpool_learns_with_cocas_recipe(appearance_store: Path, tmp_path: Path) -> None:
    cfg = with_recipe(TrainConfig(store=appearance_store, head="attnpool", out=tmp_path / "a"))
    assert (cfg.lr, cfg.batch_size, cfg.label_smoothing, cfg.grad_clip) == (5e-4, 128, 0.1, 1.0)
    trained = run_cli("train-head", appearance_store, "--head", "attnpool", "--out", tmp_path / "a", "--device",
                      "cpu", "--quiet")
    assert trained.code == 0, trained
    report = json.loads(run_cli("eval", appearance_store, "--checkpoint", tmp_path / "a", "--device", "cpu",
                                "--json").stdout)
    assert report["top1"] >= 0.9
