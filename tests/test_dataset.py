"""The cache dataset and splits on model-free stores whose features say where they came from."""
from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import clipcache.pipeline.train.dataset
from clipcache.cache.reader import CacheReader, StoreDamageError
from clipcache.cache.schema import DONE, FAILED, MISSING, PENDING
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.evaluate.predict import to_device
from clipcache.pipeline.train.dataset import CacheDataset, frame_subset
from clipcache.pipeline.train.loader import batch_loader
from clipcache.pipeline.train.splits import (
    NOT_DONE,
    evaluation_split,
    k_shot,
    left_out,
    left_out_note,
    stratified_holdout,
    train_val_test,
)
from conftest import SYNTHETIC, feature_code, synthetic_store

EVERYTHING = FeatureRequest(pooled=True, layers=(1, 2))
TEST_VIEWS = SYNTHETIC["clips"] * SYNTHETIC["crops"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("ds") / "s.zarr", status={4: FAILED, 5: PENDING})


@pytest.fixture(scope="module")
def int8_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("ds8") / "s.zarr", dtype="int8")


def _codes(batch: dict[str, torch.Tensor], key: str) -> np.ndarray:
    """Channel 0 of token 0 (tokens: of the first block) per frame: (B, T)."""
    values = batch[key].float().numpy()
    return values[:, 0, :, 0, 0] if key == "tokens" else values[..., 0]


def test_evaluation_walks_every_test_view_with_segment_centres(store: Path) -> None:
    reader = CacheReader(store)
    videos = np.array([7, 2])
    data = CacheDataset(reader, EVERYTHING, videos, 2, train=False, preload=False)
    assert len(data) == 2 * TEST_VIEWS  # the augmented view is never a test view
    batch = data[list(range(len(data)))]
    assert batch["pooled"].shape == (4, 2, SYNTHETIC["embed_dim"]) and batch["pooled"].dtype == torch.float16
    assert batch["tokens"].shape == (4, 2, 2, SYNTHETIC["tokens"], SYNTHETIC["width"])
    np.testing.assert_array_equal(frame_subset(4, 2, 0.5), [1, 3])
    expected = [[feature_code(v, view, t) for t in (1, 3)] for v in videos for view in range(TEST_VIEWS)]
    np.testing.assert_array_equal(_codes(batch, "pooled"), expected)
    np.testing.assert_array_equal(_codes(batch, "tokens"), expected)
    assert batch["tokens"][:, 1, :, :, 2].eq(2).all() and batch["tokens"][:, 0, :, :, 2].eq(1).all()
    np.testing.assert_array_equal(batch["tokens"][0, 0, 0, :, 1], np.arange(SYNTHETIC["tokens"]))
    assert batch["video"].tolist() == [0, 0, 1, 1] and batch["view"].tolist() == [0, 1, 0, 1]
    assert batch["label"].tolist() == [7 % 3, 7 % 3, 2 % 3, 2 % 3]


def test_training_draws_views_and_jittered_frames_from_seed_and_epoch(store: Path) -> None:
    reader = CacheReader(store)
    videos = np.arange(4)
    data = CacheDataset(reader, FeatureRequest(pooled=True), videos, 2, train=True, preload=False, seed=3)
    assert len(data) == 4

    def epoch(e: int) -> np.ndarray:
        data.set_epoch(e)
        return _codes(data[[0, 1, 2, 3]], "pooled")

    first, again, other = epoch(0), epoch(0), epoch(1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    views = set()
    for e in range(12):
        codes = epoch(e).astype(int)
        frame, view = codes % 4, codes // 4 % 3
        assert (frame[:, 0] < 2).all() and (frame[:, 1] >= 2).all()  # one frame from each half
        assert (view[:, 0] == view[:, 1]).all() and (codes // 12 == videos[:, None]).all()
        views |= set(view[:, 0])
    assert views == {0, 1, 2}  # the augmented view (2) is drawn too
    np.testing.assert_array_equal(data[[1, 3]]["pooled"], torch.stack([data[1]["pooled"], data[3]["pooled"]]))


@pytest.mark.parametrize("dtype", ["float16", "int8"])
@pytest.mark.parametrize("frames, cls_only", [(4, False), (2, True)])
def test_preloaded_equals_streamed(store: Path, int8_store: Path, dtype: str, frames: int, cls_only: bool) -> None:
    reader = CacheReader(store if dtype == "float16" else int8_store)
    request = FeatureRequest(pooled=True, layers=(2, 1), cls_only=cls_only)
    for train in (True, False):
        held = CacheDataset(reader, request, np.arange(4), frames, train=train, preload=True)
        streamed = CacheDataset(reader, request, np.arange(4), frames, train=train, preload=False)
        assert held.placement == torch.device("cpu") and streamed.placement is None
        items = list(range(len(held)))
        a, b = held[items], streamed[items]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        assert a["tokens"].shape[-2] == (1 if cls_only else SYNTHETIC["tokens"])
        first_block = to_device(a, torch.device("cpu"))["tokens"][:, 0, :, :, 2]
        np.testing.assert_allclose(first_block, 2, atol=0.5)  # blocks in the requested order (int8: +-scale)
        if dtype == "int8":  # int8 and scales travel; dequantised on the device, close to what was written
            assert a["tokens"].dtype == torch.int8 and "token_scales" in a
            a = to_device(a, torch.device("cpu"))
            assert "token_scales" not in a and a["tokens"].dtype == torch.float32
            np.testing.assert_allclose(_codes(a, "tokens"), _codes(a, "pooled"), rtol=0.01)


@pytest.mark.parametrize("train", [False, True])
def test_loader_workers_read_the_same_batches(store: Path, train: bool) -> None:
    reader = CacheReader(store)
    data = CacheDataset(reader, EVERYTHING, np.arange(4), 2, train=train, preload=False, seed=1)
    data.set_epoch(5)  # workers start after this, with the epoch's draws
    alone = list(batch_loader(data, 3))
    with_workers = list(batch_loader(data, 3, workers=2))
    assert [len(b["label"]) for b in alone] == ([3, 1] if train else [3, 3, 2])
    for x, y in zip(alone, with_workers):
        assert all(torch.equal(x[key], y[key]) for key in x)


def test_preload_only_when_the_features_fit(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = CacheReader(store)
    needed = CacheDataset(reader, EVERYTHING, np.arange(4), 4, train=True, preload=False).feature_bytes()
    assert needed == 4 * 3 * 4 * (6 * 2 + 2 * 5 * 8 * 2)  # videos x views x frames x (pooled + 2 blocks), float16
    # fits in all, but not in half
    monkeypatch.setattr(clipcache.pipeline.train.dataset, "free_memory", lambda device: needed)
    assert CacheDataset(reader, EVERYTHING, np.arange(4), 4, train=True).placement is None
    with pytest.raises(ValueError, match=r"--preload: .*s\.zarr: the features this head reads take"):
        CacheDataset(reader, EVERYTHING, np.arange(4), 4, train=True, preload=True)


def test_refusals_name_the_store(store: Path) -> None:
    reader = CacheReader(store)
    with pytest.raises(ValueError, match=r"s\.zarr: the head reads 5 frames per view, the store holds 4"):
        CacheDataset(reader, EVERYTHING, np.arange(4), 5, train=False)
    with pytest.raises(ValueError, match=r"s\.zarr: the head needs blocks \[0\]"):
        CacheDataset(reader, FeatureRequest(layers=(0,)), np.arange(4), 4, train=False)


def test_splits_use_done_videos_only_and_report_the_rest_once(store: Path) -> None:
    reader = CacheReader(store)
    splits = train_val_test(reader)  # 0,1,2 train, 3,4,5 train, 6,7,8 val, 9,10,11 test; 4 failed, 5 pending
    assert splits["train"].tolist() == [0, 1, 2, 3] and splits["val"].tolist() == [6, 7, 8]
    assert splits["test"].tolist() == [9, 10, 11]
    assert left_out(reader) == {"failed": 1, "pending": 1, "missing": 0}
    assert left_out_note(left_out(reader), "s.zarr") == \
        "s.zarr: 1 failed and 1 pending videos left out (clipcache info s.zarr lists them)"
    assert left_out_note({"failed": 0, "pending": 0}, "s.zarr") is None


def test_left_out_names_every_status_but_done(tmp_path: Path) -> None:
    """One table names the statuses that are not done; `left_out` counts each of them by that name."""
    assert set(NOT_DONE) == {FAILED, PENDING, MISSING} and DONE not in NOT_DONE
    store = synthetic_store(tmp_path / "s.zarr", status={0: FAILED, 1: FAILED, 2: PENDING, 3: MISSING})
    assert left_out(CacheReader(store)) == {NOT_DONE[FAILED]: 2, NOT_DONE[PENDING]: 1, NOT_DONE[MISSING]: 1}


def test_evaluation_split_is_the_one_test_to_val_fallback(store: Path, tmp_path: Path) -> None:
    reader = CacheReader(store)
    listed = tmp_path / "mine.txt"
    listed.write_text("\ufeffval/6.mp4 0\ntest/9.mp4,1\ntrain/4.mp4\n")  # a BOM; video 4 failed: left out
    chosen = evaluation_split(reader, str(listed))
    assert chosen.videos.tolist() == [6, 9] and chosen.name == str(listed) and not chosen.fell_back
    (tmp_path / "none.txt").write_text("nowhere.mp4\n")
    with pytest.raises(ValueError, match="none.txt: none of its paths"):
        evaluation_split(reader, str(tmp_path / "none.txt"))
    with pytest.raises(ValueError, match="no done videos in split 'nosuch'"):
        evaluation_split(reader, "nosuch")
    test = evaluation_split(reader)
    assert (test.name, test.requested, test.fell_back, test.videos.tolist()) == ("test", "test", False, [9, 10, 11])
    no_test = synthetic_store(tmp_path / "t.zarr", splits=["train"] * 9 + ["val"] * 3)
    fallback = evaluation_split(CacheReader(no_test), "test")
    assert (fallback.name, fallback.requested, fallback.fell_back) == ("val", "test", True)
    assert fallback.videos.tolist() == [9, 10, 11]
    with pytest.raises(ValueError, match="no done videos in split 'val'"):  # only "test" falls back
        evaluation_split(CacheReader(synthetic_store(tmp_path / "v.zarr", splits=["train"] * 9 + ["test"] * 3)),
                         "val")


def test_a_split_without_labels_is_refused_in_one_line(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr")
    labels = zarr.open_array(str(store / "videos" / "label"), mode="r+")
    labels[9:] = -1  # the test split unlabelled, as Kinetics' test set
    with pytest.raises(ValueError, match="split 'test' has no labelled videos to score"):
        evaluation_split(CacheReader(store), "test")
    labels[10:] = 0
    with pytest.raises(ValueError, match="1 evaluation videos have no label"):
        evaluation_split(CacheReader(store), "test")


def test_holdout_when_there_is_no_validation_split(tmp_path: Path) -> None:
    no_test = synthetic_store(tmp_path / "t.zarr", splits=["train"] * 9 + ["val"] * 3)
    held = train_val_test(CacheReader(no_test), val="nosuch", seed=1)  # no such validation split: 10% held out
    assert sorted(np.bincount(CacheReader(no_test).column("label")[held["val"]])) == [1, 1, 1]
    assert len(held["train"]) == 6 and len(held["test"]) == 0
    tiny = synthetic_store(tmp_path / "u.zarr", num_videos=3, splits=["train"] * 3)
    with pytest.raises(ValueError, match="too few training videos to hold some out"):
        train_val_test(CacheReader(tiny))


def test_holdout_and_shots_are_stratified_and_seeded() -> None:
    labels = np.repeat([0, 1, 2], 10)
    keep, held = stratified_holdout(labels, 0.2, seed=0)
    assert sorted(np.bincount(labels[held])) == [2, 2, 2] and len(keep) + len(held) == 30
    assert not set(keep) & set(held)
    np.testing.assert_array_equal(k_shot(labels, 3, 5), k_shot(labels, 3, 5))
    assert not np.array_equal(k_shot(labels, 3, 5), k_shot(labels, 3, 6))
    assert list(np.bincount(labels[k_shot(labels, 3, 5)])) == [3, 3, 3]
    with pytest.raises(ValueError, match="--shots must be at least 1"):
        k_shot(labels, 0, 0)


def test_a_batch_still_in_use_is_never_overwritten_and_a_released_one_is_reused(store: Path) -> None:
    reader = CacheReader(store)
    data = CacheDataset(reader, EVERYTHING, np.arange(4), 4, train=False, preload=False)
    reference = CacheDataset(reader, EVERYTHING, np.arange(4), 4, train=False, preload=True)

    def check(batch: dict[str, torch.Tensor], items: list[int]) -> None:
        for key, value in reference[items].items():
            torch.testing.assert_close(batch[key], value, rtol=0, atol=0)

    first = data[[0, 1]]
    pointer = first["tokens"].data_ptr()
    kept = first["tokens"][:, 1]  # a view that outlives its batch
    second = data[[2, 3]]
    assert second["tokens"].data_ptr() != pointer  # the first batch is still held
    del first
    third = data[[4, 5]]
    assert third["tokens"].data_ptr() != pointer  # a view of it still is
    torch.testing.assert_close(kept, reference[[0, 1]]["tokens"][:, 1], rtol=0, atol=0)
    del kept, second
    fourth = data[[6, 7]]
    assert fourth["tokens"].data_ptr() == pointer  # nobody uses the first batch's memory any more
    check(third, [4, 5])
    check(fourth, [6, 7])


@pytest.mark.parametrize("frames", [4, 2])
def test_reads_on_several_threads_fill_the_batch_as_reads_in_turn_and_name_damage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: int) -> None:
    path = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    request = FeatureRequest(pooled=True, layers=(1, 2))
    in_turn = CacheDataset(CacheReader(path), request, np.arange(8), frames, train=True, preload=False, seed=2)
    items = list(range(8))
    expected = in_turn[items]
    monkeypatch.setattr(clipcache.pipeline.train.dataset, "PARALLEL_BYTES", 0)  # this store's chunks are small
    threaded = CacheDataset(CacheReader(path), request, np.arange(8), frames, train=True, preload=False, seed=2)
    got = threaded[items]
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    # loader workers are forks of this process, which has read (its threads exist): each starts its own (a
    # worker that used its parent's pool waited forever: the alarm turns that into a failure)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("loader workers hung"))
    signal.alarm(60)
    try:
        batches = list(batch_loader(threaded, 3, workers=2))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    in_workers = {key: torch.cat([batch[key] for batch in batches]) for key in expected}
    for key in expected:
        torch.testing.assert_close(in_workers[key], expected[key], rtol=0, atol=0)
    (path / "tokens/2/c/1/0/0/0/0").unlink()  # videos 4-7 of block 2
    with pytest.raises(StoreDamageError, match=r"tokens/2 of video 4 \(.*\) and 3 more videos is damaged"):
        CacheDataset(CacheReader(path), request, np.arange(8), frames, train=True, preload=False)[items]
