"""`torchrun --nproc-per-node 2 clipcache train-head ...` (gloo on CPU, real processes) trains what one process
trains with the same global batch, and resumes a run another launch started. The batch (7) splits 4 + 3
between the ranks, so the ranks' losses must be weighted by their share for the step to be the one-process
step."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipcache.cache.reader import CacheReader
from clipcache.heads import HEADS, LOCALISATION_HEADS
from clipcache.pipeline.evaluate.predict import to_device
from clipcache.pipeline.localize.targets import assign, proposal_loss
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.checkpoint import LAST, METRICS
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loader import batch_loader
from conftest import run_cli, run_cli_process, torchrun
from training_runs import assert_close_runs, command, epochs_written, kill_after

BATCH = ("--batch-size", "7")  # 18 training videos: two batches of 7 per pass, each split 4 + 3


def test_two_ranks_train_and_resume_what_one_process_trains(appearance_store: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    assert run_cli(*command(appearance_store, one, "linear", *BATCH)[2:]).code == 0
    first = load_file(str(one / LAST))

    two = tmp_path / "two"
    result = run_cli_process(*command(appearance_store, two, "linear", *BATCH)[2:], launcher=torchrun(2))
    assert result.code == 0, result
    assert result.stdout.count("epochs, best val top-1") == 1  # rank 0 reports, once
    assert_close_runs(one, two)

    other_seed = tmp_path / "seed"  # the comparison means something: another seed lands elsewhere
    assert run_cli(*command(appearance_store, other_seed, "linear", *BATCH, "--seed", "1")[2:]).code == 0
    assert not torch.allclose(first["fc.weight"], load_file(str(other_seed / LAST))["fc.weight"],
                              atol=1e-3)

    cut = tmp_path / "cut"  # one process killed after two epochs, resumed by two ranks
    kill_after(command(appearance_store, cut, "linear", *BATCH), cut / METRICS, 2)
    assert epochs_written(cut / METRICS) >= 2
    resumed = run_cli_process(*command(appearance_store, cut, "linear", *BATCH, "--resume")[2:],
                              launcher=torchrun(2))
    assert resumed.code == 0, resumed
    assert_close_runs(one, cut)



@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_trainable_parameter_of_every_head_gets_a_gradient(appearance_store: Path, head: str) -> None:
    """What DistributedDataParallel needs of a head (a parameter left without a gradient stalls every rank at
    the next step): one training step's backward reaches all of them."""
    reader = CacheReader(appearance_store)
    built = build_for_store(reader, head, {}, reader.settings.frames, "text4vis", None, torch.device("cpu"))
    built.train()
    if head in LOCALISATION_HEADS:  # windows of frame embeddings, one action in each
        windows = {"pooled": torch.randn(2, 64, reader.settings.embed_dim), "mask": torch.ones(2, 64, dtype=torch.bool)}
        out = built(windows)
        proposal_loss(out, assign(out, [torch.tensor([[10.0, 30.0]]), torch.tensor([[5.0, 60.0]])]))[0].backward()
    else:
        dataset = CacheDataset(reader, built.request, reader.done[:4], reader.settings.frames, train=True)
        batch = to_device(next(iter(batch_loader(dataset, 4))), torch.device("cpu"))
        torch.nn.functional.cross_entropy(built(batch).float(), batch["label"]).backward()
    assert [name for name, p in built.named_parameters() if p.requires_grad and p.grad is None] == []
