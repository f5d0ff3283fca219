"""The prompt and attentional-pooler heads on a real store: they learn, the prompt head's text tower
stays frozen and out of the checkpoint, and it scores classes it never saw."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from cache.dataset import CacheDataset
from cache.reader import CacheReader
from conftest import run_cli
from pipeline.train import TrainConfig, build_for_store, with_recipe


def test_prompt_head_trains_only_the_prompts(appearance_store: Path) -> None:
    reader = CacheReader(appearance_store)
    head = build_for_store(reader, "prompt", {"prefix": 4, "suffix": 4}, 4, "text4vis", None, torch.device("cpu"))
    tower = head._tower[0]
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    assert set(head.state_dict()) >= {"prefix", "suffix"} and not any("token_embedding" in k for k in head.state_dict())
    batch = next(iter(torch.utils.data.DataLoader(CacheDataset(reader, head.request, reader.done, 4, train=True),
                                                  batch_size=8)))
    loss = torch.nn.functional.cross_entropy(head({"pooled": batch["pooled"].float()}), batch["label"])
    loss.backward()
    assert head.prefix.grad is not None and head.prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in tower.parameters())
    torch.optim.SGD([head.prefix, head.suffix], lr=1.0).step()
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())
    head.set_classes(["a juggling person", "surfing", "knitting", "archery"])  # never seen in training
    assert head({"pooled": batch["pooled"].float()}).shape == (len(batch["label"]), 4)


def test_prompt_head_learns(appearance_store: Path, tmp_path: Path) -> None:
    trained = run_cli("train-head", appearance_store, "--head", "prompt", "--out", tmp_path / "p", "--device", "cpu",
                      "--quiet", "--epochs", "15", "--batch-size", "6", "--lr", "5e-3", "--option", "prefix=4",
                      "--option", "suffix=4")
    assert trained.code == 0, trained
    report = json.loads(run_cli("eval", appearance_store, "--checkpoint", tmp_path / "p", "--device", "cpu",
                                "--json").stdout)
    assert report["top1"] >= 0.9


def test_prompt_context_overflow_is_explained(appearance_store: Path, tmp_path: Path) -> None:
    result = run_cli("train-head", appearance_store, "--head", "prompt", "--out", tmp_path / "p", "--device", "cpu",
                     "--quiet", "--epochs", "1")
    assert result.code == 2 and "exceed the text context of 24" in result.stderr


def test_attnpool_learns_with_cocas_recipe(appearance_store: Path, tmp_path: Path) -> None:
    cfg = with_recipe(TrainConfig(store=appearance_store, head="attnpool", out=tmp_path / "a"))
    assert (cfg.lr, cfg.batch_size, cfg.label_smoothing, cfg.grad_clip) == (5e-4, 128, 0.1, 1.0)
    trained = run_cli("train-head", appearance_store, "--head", "attnpool", "--out", tmp_path / "a", "--device",
                      "cpu", "--quiet", "--epochs", "25", "--batch-size", "6", "--lr", "2e-3")
    assert trained.code == 0, trained
    report = json.loads(run_cli("eval", appearance_store, "--checkpoint", tmp_path / "a", "--device", "cpu",
                                "--json").stdout)
    assert report["top1"] >= 0.9
