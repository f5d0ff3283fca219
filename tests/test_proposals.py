"""The proposal head (heads/proposals.py), its targets and loss (pipeline/localize/targets.py) and decoding
(pipeline/localize/decode.py): shapes and padding, hand-checked assignment, losses and suppression, and learning
on synthetic dense features with the default recipe; the open-set protocol of proposal runs refuses what it cannot run
before it trains anything."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from clipcache.heads.base import HeadContext
from clipcache.heads.proposals import ProposalHead
from clipcache.heads.recipes import RECIPES
from clipcache.pipeline.localize.decode import (
    DecodeOptions,
    Suppression,
    segment_iou,
    suppress,
    video_proposals,
    window_proposals,
    window_starts,
)
from clipcache.pipeline.localize.targets import assign, diou_loss, focal_loss, proposal_loss
from conftest import run_cli


def _context(embed: int) -> HeadContext:
    return HeadContext(classes=("action",), frames=0, embed_dim=embed, width=8, heads=1, tokens=1, grid=(1, 1),
                       layers=(), num_blocks=1)


def _window(lengths: list[int], width: int, embed: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Windows of `width` steps whose first `lengths[b]` frames are valid; the padding holds large garbage."""
    pooled = torch.randn(len(lengths), width, embed, generator=generator) * 100
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    pooled[mask] = torch.randn(int(mask.sum()), embed, generator=generator)
    return {"pooled": pooled, "mask": mask}


def test_padding_changes_nothing_and_never_becomes_a_proposal() -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    head = ProposalHead(_context(16), width=16, levels=3).eval()
    batch = _window([22, 13], 22, 16, generator)
    out = head(batch)
    assert out.logits.shape == (2, 24 + 12 + 6) and out.distances.shape == (2, 42, 2)  # 22 padded to 24
    assert out.points.tolist()[24:30] == [0, 2, 4, 6, 8, 10] and out.strides.unique().tolist() == [1, 2, 4]
    assert out.frames.tolist() == [22, 13]
    assert int(out.mask[1].sum()) == 13 + 7 + 4 and bool((out.distances >= 0).all())
    with torch.no_grad():
        alone = head({"pooled": batch["pooled"][1:, :13]})  # the same window without padding
        other = head({"pooled": torch.where(batch["mask"][..., None], batch["pooled"], -batch["pooled"]),
                      "mask": batch["mask"]})  # other garbage in the padding
    for same in (alone, other):
        row = 0 if same is alone else 1
        torch.testing.assert_close(same.logits[row][same.mask[row]], out.logits[1][out.mask[1]])
        torch.testing.assert_close(same.distances[row][same.mask[row]], out.distances[1][out.mask[1]])
    everything = DecodeOptions(min_score=0.0, per_window=1000)
    rows = window_proposals(out, everything)[1]
    assert 0 < len(rows) <= 13 + 7 + 4
    assert rows[:, 0].min() >= 0 and rows[:, 1].max() <= 13 and bool((rows[:, 1] > rows[:, 0]).all())


def test_prepare_takes_statistics_of_valid_frames_only() -> None:
    head = ProposalHead(_context(8), width=8, levels=2)
    batch = _window([5, 3, 7], 7, 8, torch.Generator().manual_seed(1))  # padding holds values near +-100
    head.prepare([{key: value[:1] for key, value in batch.items()}, {key: value[1:] for key, value in batch.items()}])
    valid = torch.nn.functional.normalize(batch["pooled"][batch["mask"]].double(), dim=-1)
    torch.testing.assert_close(head.mean, valid.mean(dim=0).float())
    torch.testing.assert_close(head.scale, valid.var(dim=0, unbiased=False).mean().sqrt().float())


def test_assignment_hand_case() -> None:
    head = ProposalHead(_context(4), width=4, levels=2)  # strides 1 and 2; ranges [0, 4) and [4, inf)
    batch = _window([16, 12, 16], 16, 4, torch.Generator().manual_seed(0))
    out = head(batch)
    segments = [torch.tensor([[2.0, 5.0], [3.0, 4.0], [8.0, 16.0]]), torch.tensor([[8.0, 16.0]]), torch.zeros(0, 2)]
    targets = assign(out, segments)
    level1 = 16  # first index of level 1 (points 0, 2, ..., 14)
    expected = [
        # [2, 5] near its centre at 2..5; [3, 4] (shorter) wins 3 and 4; [8, 16] reaches 4+ steps: level 1 only
        {2: (0, 3), 3: (0, 1), 4: (1, 0), 5: (3, 0), level1 + 5: (2, 6), level1 + 6: (4, 4), level1 + 7: (6, 2)},
        # [8, 16] clipped to the 12 valid frames: [8, 12]; point 12 of level 1 is padding
        {9: (1, 3), 10: (2, 2), 11: (3, 1), level1 + 4: (0, 4)},
        {},  # no segments: all negative
    ]
    for row, wanted in enumerate(expected):
        assert torch.nonzero(targets.positive[row]).flatten().tolist() == sorted(wanted)
        for index, distances in wanted.items():
            assert targets.distances[row, index].tolist() == list(distances)
    assert not (targets.positive & ~out.mask).any()
    loss, parts = proposal_loss(out, targets)
    assert parts["positives"] == 11 and torch.isfinite(loss)


def test_loss_formulas_hand_case() -> None:
    # same step, predicted (1, 1) against the truth (1, 3): IoU 2/4, hull 4, centres 1 apart -> 1 - 0.5 + (1/4)^2
    got = diou_loss(torch.tensor([[1.0, 1.0], [2.0, 5.0]]), torch.tensor([[1.0, 3.0], [2.0, 5.0]]))
    torch.testing.assert_close(got, torch.tensor([0.5625, 0.0]))
    # nested: [p, p+1] inside [p, p+3]: IoU 1/3, hull 3, centres 1 apart
    torch.testing.assert_close(diou_loss(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 3.0])),
                               torch.tensor(1 - 1 / 3 + (1 / 3) ** 2))
    focal = focal_loss(torch.tensor([0.0, 0.0, 10.0]), torch.tensor([1.0, 0.0, 0.0]))
    expected = [0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2),
                0.75 * torch.sigmoid(torch.tensor(10.0)).item() ** 2 * (10 + math.log1p(math.exp(-10)))]
    torch.testing.assert_close(focal, torch.tensor(expected))


def test_soft_nms_decays_a_duplicate_and_hard_nms_drops_it() -> None:
    rows = np.array([[0.0, 10.0, 0.9], [1.0, 10.0, 0.8], [20.0, 30.0, 0.7]])  # the second overlaps the first 0.9
    soft = suppress(rows, keep=10, options=DecodeOptions())
    np.testing.assert_allclose(soft, [[0, 10, 0.9], [20, 30, 0.7], [1, 10, 0.8 * math.exp(-0.9 ** 2 / 0.5)]])
    hard = suppress(rows, keep=10, options=DecodeOptions(suppression=Suppression.hard))
    np.testing.assert_allclose(hard, [[0, 10, 0.9], [20, 30, 0.7]])
    assert len(suppress(rows, keep=1, options=DecodeOptions())) == 1
    below = suppress(rows, keep=10, options=DecodeOptions(min_score=0.5))  # the decayed duplicate falls below it
    assert below[:, 2].tolist() == [0.9, 0.7]


def test_windows_merge_into_a_video_in_seconds() -> None:
    # two windows overlapping by 8 steps see one action at video steps 8..12: once at 8..12 and once at 0..4
    first = np.array([[8.0, 12.0, 0.9], [0.0, 3.0, 0.4]])
    second = np.array([[0.0, 4.0, 0.85], [9.0, 14.0, 0.6]])
    options = DecodeOptions(suppression=Suppression.hard)
    video = video_proposals([(0.0, first), (8.0, second)], rate=2.0, options=options)
    np.testing.assert_allclose(video, [[4.0, 6.0, 0.9], [8.5, 11.0, 0.6], [0.0, 1.5, 0.4]])
    assert len(video_proposals([(0.0, first), (8.0, second)], rate=2.0,
                               options=DecodeOptions(max_proposals=2))) == 2
    assert video_proposals([], rate=2.0).shape == (0, 3)


def _synthetic(count: int, rng: np.random.Generator, directions: np.ndarray, width: int = 128
               ) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """Windows of random frames; an action adds its class direction plus noise between its start and its end. A
    quarter of the windows are shorter than `width` (padded). 1-3 actions of 8-64 steps, at least 4 steps apart."""
    frames = rng.standard_normal((count, width, directions.shape[1])).astype(np.float32)
    mask = np.zeros((count, width), dtype=bool)
    segments = []
    for row in range(count):
        valid = width if row % 4 else int(rng.integers(96, width))
        mask[row, :valid] = True
        frames[row, valid:] = 0
        lengths = list(rng.integers(8, 65, size=int(rng.integers(1, 4))))
        while sum(lengths) + 4 * (len(lengths) - 1) > valid:
            lengths.pop()
        spare = valid - sum(lengths) - 4 * (len(lengths) - 1)  # spread over the gaps before, between and after
        gaps = np.diff(np.sort(rng.integers(0, spare + 1, size=len(lengths))), prepend=0)
        actions: list[tuple[int, int]] = []
        start = 0
        for gap, length in zip(gaps, lengths):
            start += int(gap)
            actions.append((start, start + int(length)))
            start += int(length) + 4
        for start, end in actions:
            frames[row, start:end] += directions[rng.integers(len(directions))]
            frames[row, start:end] += 0.5 * rng.standard_normal((end - start, directions.shape[1]))
        segments.append(np.array(actions, dtype=np.float32))
    return torch.from_numpy(frames), torch.from_numpy(mask), segments


def test_learns_proposals_on_synthetic_features_with_the_default_recipe() -> None:
    """Held-out recall at 10 proposals per window, tIoU 0.5, after the default recipe's steps on 100 windows."""
    embed, train_count = 32, 100
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    directions = rng.standard_normal((3, embed))
    directions *= 2.5 / np.linalg.norm(directions, axis=1, keepdims=True)  # 2.5 noise deviations along each
    frames, mask, segments = _synthetic(train_count, rng, directions)
    test_frames, test_mask, test_segments = _synthetic(40, rng, directions)

    head = ProposalHead(_context(embed))
    head.prepare([{"pooled": frames, "mask": mask}])
    recipe = RECIPES["proposals"]
    per_epoch = math.ceil(train_count / recipe.batch_size)
    steps = max(recipe.epochs * per_epoch, recipe.min_steps)
    warmup = recipe.warmup_epochs * per_epoch
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses = []
    head.train()
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(train_count)
        rows = order[(step % per_epoch) * recipe.batch_size:][: recipe.batch_size]
        out = head({"pooled": frames[rows], "mask": mask[rows]})
        loss, _ = proposal_loss(out, assign(out, [torch.from_numpy(segments[i]) for i in rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert np.mean(losses[-per_epoch:]) < 0.25 * np.mean(losses[:per_epoch])

    head.eval()
    with torch.no_grad():
        proposals = window_proposals(head({"pooled": test_frames, "mask": test_mask}))
    found = total = 0
    for rows, truth in zip(proposals, test_segments):
        for start, end in truth:
            total += 1
            for proposed_start, proposed_end, _ in rows[:10]:
                inter = max(0.0, min(end, proposed_end) - max(start, proposed_start))
                if inter / (max(end, proposed_end) - min(start, proposed_start)) >= 0.5:
                    found += 1
                    break
    assert total >= 60 and found / total >= 0.8, f"recall@10 at tIoU 0.5: {found}/{total}"

    # whole videos of 400 steps at 10 steps a second, cut into half-overlapping windows and merged back in seconds
    video_frames, video_mask, video_segments = _synthetic(12, rng, directions, width=400)
    found = total = 0
    for row in map(int, torch.nonzero(video_mask.all(dim=1)).flatten()):  # every fourth is padded: not those
        starts = window_starts(400, 128, 64)
        with torch.no_grad():
            out = head({"pooled": torch.stack([video_frames[row, start:start + 128] for start in starts])})
        rows = video_proposals(zip(starts, window_proposals(out)), rate=10.0)
        assert len(rows) <= 100 and rows[:, 0].min() >= 0 and rows[:, 1].max() <= 40.0
        for start, end in video_segments[row] / 10:
            total += 1
            found += any(segment_iou(np.array([[start, end]]), rows[:10, :2])[0] >= 0.5)
    assert found / total >= 0.8, f"recall@10 per video at tIoU 0.5: {found}/{total}"


def test_window_starts_cover_the_video() -> None:
    assert window_starts(400, 128, 64) == [0, 64, 128, 192, 256, 272]
    assert window_starts(128, 128, 64) == [0] and window_starts(50, 128, 64) == [0]
    assert window_starts(129, 128, 64) == [0, 1]


def test_segment_iou() -> None:
    boxes = np.array([[0.0, 4.0], [2.0, 6.0], [10.0, 11.0]])
    np.testing.assert_allclose(segment_iou(boxes, boxes), [[1, 2 / 6, 0], [2 / 6, 1, 0], [0, 0, 1]])


def test_the_open_set_protocol_refuses_before_training(appearance_store: Path, tmp_path: Path) -> None:
    """Without --class-split, with one split picked, or with fewer splits than asked: one line, and no run begun
    (a split past the file's end was found only after training every split before it)."""
    splits = tmp_path / "splits.json"
    halves = [{"seen": ["red_square"], "unseen": ["green_circle", "blue_stripes"]},
              {"seen": ["green_circle"], "unseen": ["red_square", "blue_stripes"]}]
    splits.write_text(json.dumps({"splits": halves}))
    out = tmp_path / "open"
    for extra, message in [((), "--class-splits 3 runs the open-set protocol over splits 0..N-1 of --class-split"),
                           (("--class-split", splits, "--class-split-index", "1"), "--class-split-index picks one"),
                           (("--class-split", splits), "holds 2 splits, no split 2")]:
        refused = run_cli("train-head", appearance_store, "--head", "proposals", "--class-splits", "3", "--out", out,
                          "--device", "cpu", "--quiet", *extra)
        assert refused.code == 2 and message in refused.stderr and refused.stderr.count("\n") == 1, refused
        assert not out.exists()
