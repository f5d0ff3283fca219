"""`torchrun --nproc-per-node 2 clipcache train-head --head proposals` (gloo on CPU, real processes) trains what one
process trains with the same global batch. The proposal loss is a sum over the batch's steps divided by its
positive steps, so this holds only if every rank divides by the positives of the whole batch: the batch of 5
windows splits 3 + 2 between the ranks and the videos hold 1 to 3 actions, so the ranks' own counts differ."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import run_cli, run_cli_process, torchrun
from training_runs import command, metrics_rows, weight_pairs
from untrimmed_videos import annotated_store

TRAINING = ("--batch-size", "5", "--epochs", "2", "--min-steps", "6")  # after command()'s, which they override
RECALLS = ("val_ar@1", "val_ar@5", "val_ar@10", "val_ar@100", "val_auc")


@pytest.fixture(scope="module")
def uneven_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 videos of 20 s at 4 frames per second (one 256-frame window each): 5 for training holding 1, 3, 1, 2 and
    3 actions of different lengths, 1 for validation."""
    actions = [[(2, 9, "red_square")],
               [(1, 3, "green_circle"), (6, 8, "red_square"), (12, 17, "blue_stripes")],
               [(4, 16, "blue_stripes")],
               [(3, 6, "red_square"), (10, 18, "green_circle")],
               [(1, 2.5, "red_square"), (5, 7, "red_square"), (14, 16, "green_circle")],
               [(5, 12, "green_circle")]]
    videos = [(f"v{i}", spans, "val" if i == 5 else "train") for i, spans in enumerate(actions)]
    return annotated_store(tmp_path_factory.mktemp("uneven"), videos, 20, 4)


def test_two_ranks_train_the_proposals_one_process_trains(uneven_store: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(*command(uneven_store, one, "proposals")[2:], *TRAINING).code == 0
    result = run_cli_process(*command(uneven_store, two, "proposals")[2:], *TRAINING, launcher=torchrun(2))
    assert result.code == 0, result
    for name, a, b in weight_pairs(one, two):  # the input statistics (mean, scale) are among them
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    rows = [metrics_rows(run) for run in (one, two)]
    assert [(r["epoch"], r["step"]) for r in rows[0]] == [(r["epoch"], r["step"]) for r in rows[1]] == [(1, 3), (2, 6)]
    for a, b in zip(*rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert [a[k] for k in RECALLS] == pytest.approx([b[k] for k in RECALLS], abs=1e-6)
