"""The Efficient-Prompt head on a real store: each class's prompted sequence is laid out as in the paper,
only the prompts (and the temporal model) train while the text tower stays frozen and out of the
checkpoint, it learns, and it scores classes it never saw."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipcache.cache.reader import CacheReader
from clipcache.heads.prompt import PromptHead
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loop import build_for_store
from conftest import run_cli
from leak_free_probe import probe_top1


def _head(store: Path, **options: int) -> PromptHead:
    return build_for_store(CacheReader(store), "prompt", options, 4, "text4vis", None, torch.device("cpu"))


def test_sequences_are_sot_prefix_name_suffix_eot(appearance_store: Path) -> None:
    """Against the sequences written out one class at a time, pooled at [EOT] as CLIP pools."""
    head = _head(appearance_store, prefix=3, suffix=2)
    tower, tokenizer = head.prompts.tower, head.prompts.tokenizer
    names = ["a juggling person", "surfing", "red square"]
    head.set_classes(names)
    rows, eot = [], []
    for name in names:
        tokens = tokenizer([name])[0]
        n = int(tokens.argmax()) - 1
        embedded = tower.token_embedding(tokens)
        sequence = torch.cat([embedded[:1], head.prefix, embedded[1:1 + n], head.suffix, embedded[1 + n:]])
        rows.append(sequence[: head.context_length])
        eot.append(1 + 3 + n + 2)
    x = tower.ln_final(tower.transformer(torch.stack(rows) + tower.positional_embedding, attn_mask=tower.attn_mask))
    expected = x[torch.arange(len(names)), eot] @ tower.text_projection
    torch.testing.assert_close(head.class_embeddings(), expected, atol=1e-5, rtol=1e-5)


def test_only_the_prompts_train_and_unseen_classes_score(appearance_store: Path) -> None:
    reader = CacheReader(appearance_store)
    head = _head(appearance_store, prefix=4, suffix=4)
    tower = head.prompts.tower
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    keys = set(head.state_dict())
    assert {"prompts.prefix", "prompts.suffix"} <= keys and not any("token_embedding" in k for k in keys)
    batch = next(iter(torch.utils.data.DataLoader(CacheDataset(reader, head.request, reader.done, 4, train=True),
                                                  batch_size=8)))
    loss = torch.nn.functional.cross_entropy(head({"pooled": batch["pooled"].float()}), batch["label"])
    loss.backward()
    assert head.prefix.grad is not None and head.prefix.grad.abs().sum() > 0
    assert head.suffix.grad is not None and head.suffix.grad.abs().sum() > 0
    assert all(p.grad is None for p in tower.parameters())
    torch.optim.SGD([head.prefix, head.suffix], lr=1.0).step()
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())
    head.set_classes(["a juggling person", "surfing", "knitting", "archery"])  # never seen in training
    assert head({"pooled": batch["pooled"].float()}).shape == (len(batch["label"]), 4)


def test_prompt_head_with_default_options_comes_within_10_points_of_a_probe(appearance_store: Path,
                                                                          tmp_path: Path) -> None:
    trained = run_cli("train-head", appearance_store, "--head", "prompt", "--out", tmp_path / "p", "--device", "cpu",
                      "--quiet")
    assert trained.code == 0, trained
    report = json.loads(run_cli("eval", appearance_store, "--checkpoint", tmp_path / "p", "--device", "cpu",
                                "--json", "--quiet").stdout)
    assert report["top1"] >= probe_top1(appearance_store) - 0.10


def test_prompt_options_are_checked(appearance_store: Path, tmp_path: Path) -> None:
    result = run_cli("train-head", appearance_store, "--head", "prompt", "--out", tmp_path / "p", "--device", "cpu",
                     "--quiet", "--epochs", "1", "--option", "prefix=16", "--option", "suffix=16")
    assert result.code == 2 and "exceed the text context of 24" in result.stderr  # 16 + 16 do not fit the tiny tower
    with pytest.raises(ValueError, match="at least one prompt vector"):
        _head(appearance_store, prefix=0, suffix=0)


def test_sentences_use_the_same_prompted_tower_and_long_ones_are_cut_to_fit(appearance_store: Path) -> None:
    """A sentence's embedding is the class embedding of the same text (one machinery, the same prompts); a
    sentence longer than the context leaves beside the prompts keeps its first tokens and its [EOT], where a
    class name that long is refused."""
    head = _head(appearance_store, prefix=3, suffix=2)
    tower, tokenizer = head.prompts.tower, head.prompts.tokenizer
    head.set_classes(["a red square moves left"])
    short = head.sentences(["a red square moves left"])
    assert short.truncated == 0
    torch.testing.assert_close(head.encode_text(short), head.class_embeddings())
    long = " ".join(["square"] * 40)
    cut = head.sentences([long, "surfing"])
    assert cut.truncated == 1
    room = head.context_length - 2 - 3 - 2
    tokens = tokenizer([long])[0]
    embedded = tower.token_embedding(tokens)
    eot = tower.token_embedding(tokens.max()[None])
    sequence = torch.cat([embedded[:1], head.prefix, embedded[1:1 + room], head.suffix, eot])
    assert len(sequence) == head.context_length
    x = tower.ln_final(tower.transformer(sequence[None] + tower.positional_embedding, attn_mask=tower.attn_mask))
    expected = x[:, -1] @ tower.text_projection
    torch.testing.assert_close(head.encode_text(cut[:1]), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head.encode_text(cut[1:]), head.encode_text(head.sentences(["surfing"])))
    with pytest.raises(ValueError, match="exceed the text context"):
        head.set_classes([long])
