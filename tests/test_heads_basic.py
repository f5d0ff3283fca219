"""The head registry and the linear and text heads on a hand-made context (no store, no CLIP)."""
from __future__ import annotations

import dataclasses
import inspect
import json
import math

import pytest
import torch
from torch import nn

from clipcache.heads import HEADS, build_head, head_class
from clipcache.heads.base import FeatureRequest, HeadContext
from clipcache.heads.linear import LinearHead
from clipcache.heads.text import TextHead
from clipcache.pipeline.options import cli_of
from clipcache.pipeline.train.config import TrainConfig

EMBED, FRAMES = 64, 4


def _context(classes: int = 3, text: bool = True) -> HeadContext:
    generator = torch.Generator().manual_seed(classes)
    return HeadContext(
        classes=tuple(f"c{i}" for i in range(classes)), frames=FRAMES, embed_dim=EMBED, width=32, heads=2, tokens=5,
        grid=(2, 2), layers=(2,), num_blocks=3,
        text_embeddings=torch.randn(classes, EMBED, generator=generator) if text else None, logit_scale=50.0,
    )


def _batch(size: int = 5) -> dict[str, torch.Tensor]:
    return {"pooled": torch.randn(size, FRAMES, EMBED, generator=torch.Generator().manual_seed(0))}


def test_registry_builds_heads_by_name_and_refuses_clearly() -> None:
    assert {"linear", "text"} <= set(HEADS)
    assert isinstance(build_head("linear", _context()), LinearHead)
    with pytest.raises(ValueError, match="--head nope: choose one of .*linear.*text"):
        build_head("nope", _context())
    with pytest.raises(ValueError, match="--head linear: bad option"):
        build_head("linear", _context(), bogus=1)
    with pytest.raises(ValueError, match="text head needs class-name text embeddings"):
        build_head("text", _context(text=False))


def test_linear_head_is_a_linear_layer_on_the_standardised_frame_mean() -> None:
    head = LinearHead(_context())
    assert head.request == FeatureRequest(pooled=True)
    batch = _batch()
    mean = batch["pooled"].mean(dim=1)
    training = [{"pooled": 3 + torch.randn(4, FRAMES, EMBED, generator=torch.Generator().manual_seed(i))}
                for i in range(3)]
    head.prepare(iter(training))  # a generator, as the loop passes it: read once
    videos = nn.functional.normalize(torch.cat([b["pooled"] for b in training]).mean(dim=1), dim=-1).double()
    torch.testing.assert_close(head.mean, videos.mean(dim=0).float())
    rms = (videos - videos.mean(dim=0)).pow(2).mean().sqrt()  # over videos and channels
    torch.testing.assert_close(head.scale, rms.float())
    assert {"mean", "scale"} <= set(head.state_dict())  # checkpoints carry the training set's statistics
    expected = head.fc((nn.functional.normalize(mean, dim=-1) - head.mean) / head.scale)
    torch.testing.assert_close(head(batch), expected)
    raw = LinearHead(_context(), normalize=False, standardize=False)
    raw.prepare(iter(training))
    assert not raw.mean.any() and raw.scale.item() == 1
    torch.testing.assert_close(raw(batch), raw.fc(mean))
    assert head(batch).shape == (5, 3)


def test_text_head_without_temporal_layers_is_scaled_cosine_to_frozen_class_text() -> None:
    ctx = _context()
    head = TextHead(ctx, depth=0, learn_scale=False)
    batch = _batch()
    video = nn.functional.normalize(batch["pooled"].mean(dim=1), dim=-1)
    text = nn.functional.normalize(ctx.text_embeddings, dim=-1)
    torch.testing.assert_close(head(batch), 50.0 * video @ text.t())
    assert "classifier" not in head.state_dict()  # rebuilt from the store, so any class set fits
    assert not any(p.requires_grad for p in head.parameters())


def test_text_head_trains_scale_and_temporal_transformer_but_never_the_classifier() -> None:
    head = TextHead(_context(), depth=2, learn_scale=True)
    assert head.log_scale.item() == pytest.approx(math.log(50.0))
    assert len(head.temporal.blocks) == 2 and head.temporal.position.shape == (FRAMES, EMBED)
    classifier = head.classifier.clone()
    optimizer = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.1)
    nn.functional.cross_entropy(head(_batch()), torch.tensor([0, 1, 2, 0, 1])).backward()
    assert head.log_scale.grad is not None and head.temporal.position.grad.abs().sum() > 0
    optimizer.step()
    assert torch.equal(head.classifier, classifier)


def test_text_head_scores_classes_it_never_saw() -> None:
    trained = TextHead(_context(classes=3), depth=1)
    novel = TextHead(_context(classes=7), depth=1)
    novel.load_state_dict(trained.state_dict())
    logits = novel(_batch())
    assert logits.shape == (5, 7)
    ctx = _context(classes=7)
    video = nn.functional.normalize(novel.temporal(_batch()["pooled"]), dim=-1)
    expected = novel.log_scale.exp() * video @ nn.functional.normalize(ctx.text_embeddings, dim=-1).t()
    torch.testing.assert_close(logits, expected)


def test_the_option_help_states_every_heads_defaults() -> None:
    """`--option`'s help lists each head's option defaults, and they are the constructors' (None: derived)."""
    text = next(cli_of(f).help for f in dataclasses.fields(TrainConfig) if f.name == "head_options")
    for name in HEADS:
        parameters = inspect.signature(head_class(name)).parameters.values()
        defaults = {p.name: p.default for p in parameters if p.name != "ctx"}
        section = text.split(f"{name}: ", 1)[1]
        for option, default in defaults.items():
            if default is not None:
                assert f"{option}={json.dumps(default)}" in section, (name, option)
