"""Dense stores (`extract --fps`): untrimmed videos stored whole at a fixed rate, one time series per video.

Real generated videos (constant and variable frame rate, a container that misstates its length), the tiny
open_clip model, real stores on disk, real kills and real damage.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from clipcache.cache.reader import CacheReader, StoreDamageError
from clipcache.cache.schema import DONE, FAILED, PENDING
from clipcache.cache.segments import read_segments
from conftest import REPO, TINY_CONFIG, assert_stores_equal, run_cli, run_cli_process, torchrun
from untrimmed_videos import WrittenVideo, misstate_length, write_audio_only, write_cfr, write_vfr

RATE = 2


def dense_args(videos: Path, store: Path, *extra: str | Path) -> list[str | Path]:
    return ["extract", videos, store, "--model-config", TINY_CONFIG, "--fps", str(RATE), "--device", "cpu",
            "--workers", "1", "--quiet", "--shard-videos", "1", *extra]


@pytest.fixture(scope="module")
def dense_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, WrittenVideo]]:
    """Three untrimmed videos in sorted order: constant rate, variable rate, and one whose MP4 headers state
    two thirds of its real length."""
    root = tmp_path_factory.mktemp("untrimmed")
    written = {"a_cfr.mp4": write_cfr(root / "a_cfr.mp4", 9, fps=10),
               "b_vfr.mkv": write_vfr(root / "b_vfr.mkv", 8),
               "c_misstated.mp4": write_cfr(root / "c_misstated.mp4", 6, fps=10)}
    misstate_length(root / "c_misstated.mp4", Fraction(2, 3))
    with av.open(str(root / "c_misstated.mp4")) as container:
        assert container.duration / 1e6 < 4.5  # the header really misstates the 6 s
    return root, written


@pytest.fixture(scope="module")
def dense_store(dense_inputs: tuple[Path, dict[str, WrittenVideo]], tmp_path_factory: pytest.TempPathFactory
                ) -> Path:
    store = tmp_path_factory.mktemp("dense") / "store.zarr"
    result = run_cli(*dense_args(dense_inputs[0], store))
    assert result.code == 0, result
    return store


def test_each_video_is_stored_whole_at_the_rate_by_presentation_time(
        dense_store: Path, dense_inputs: tuple[Path, dict[str, WrittenVideo]]) -> None:
    reader = CacheReader(dense_store)
    _, written = dense_inputs
    assert reader.settings.dense and reader.attrs["format"] == "clipcache/3" and list(reader.status) == [DONE] * 3
    for video, name in enumerate(reader.column("path")):
        truth = written[name]
        times, frames = reader.dense(video, "time"), reader.dense(video, "frame")
        expected = int(np.ceil(float(truth.end) * RATE - 1e-9))  # every k with k/F < end
        assert len(times) == expected == reader.column("samples")[video], name
        for k, (stored, frame) in enumerate(zip(times, frames)):
            written_times = np.array([float(t) for t in truth.times])
            nearest = int(np.argmin(np.abs(written_times - k / RATE)))  # the earlier of two equally near
            assert frame == nearest and stored == pytest.approx(written_times[nearest]), (name, k)
            interval = np.diff(written_times[max(nearest - 1, 0):nearest + 2]).max()
            assert abs(stored - k / RATE) <= interval / 2 + 1e-9
        assert reader.column("duration")[video] == pytest.approx(float(truth.end), abs=1e-3)
        assert reader.dense(video, "pooled").shape == (expected, reader.settings.embed_dim)


def test_stored_embeddings_are_open_clip_on_the_frames_at_those_times(tmp_path: Path) -> None:
    import open_clip

    open_clip.add_model_config(TINY_CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-vit")
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    truth = write_vfr(tmp_path / "v" / "vfr.mkv", 5)
    store = tmp_path / "s.zarr"
    assert run_cli(*dense_args(tmp_path / "v", store, "--pretrained", checkpoint, "--layers", "-1")).code == 0
    reader = CacheReader(store)
    with av.open(str(truth.path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    chosen = [decoded[int(f)] for f in reader.dense(0, "frame")]
    tapped = {}
    model.visual.transformer.resblocks[-1].register_forward_hook(lambda _m, _i, out: tapped.__setitem__(0, out))
    with torch.no_grad():
        expected = model.eval().encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in chosen]))
    stored = torch.from_numpy(reader.dense(0, "pooled").astype(np.float32))
    assert torch.nn.functional.cosine_similarity(stored, expected, dim=-1).min() >= 0.9999
    tokens = torch.from_numpy(reader.dense(0, f"block_{reader.settings.layers[0]}").astype(np.float32))
    assert tokens.shape == tapped[0].shape
    assert torch.nn.functional.cosine_similarity(tokens, tapped[0], dim=-1).min() >= 0.9999


def test_cls_tokens_in_int8_keep_one_token_per_frame(dense_inputs: tuple[Path, dict[str, WrittenVideo]],
                                                     tmp_path: Path) -> None:
    full, cls = tmp_path / "full.zarr", tmp_path / "cls.zarr"
    assert run_cli(*dense_args(dense_inputs[0], full, "--layers", "-1")).code == 0
    assert run_cli(*dense_args(dense_inputs[0], cls, "--layers", "-1", "--tokens", "cls", "--dtype", "int8")).code == 0
    a, b = CacheReader(full), CacheReader(cls)
    block = f"block_{a.settings.layers[0]}"
    assert zarr.open_group(str(cls))[f"dense/0/{block}"].shape[1] == 1
    expected = torch.from_numpy(a.dense(0, block)[:, 0].astype(np.float32))
    got = torch.from_numpy(b.dense(0, block)[:, 0])
    assert torch.nn.functional.cosine_similarity(expected, got, dim=-1).min() >= 0.999
    info = run_cli("info", cls)
    assert info.code == 0 and "tokens: cls" in info.stdout and "2 frames per second" in info.stdout


def test_kill_9_then_rerun_equals_uninterrupted(dense_store: Path, dense_inputs: tuple[Path, dict[str, WrittenVideo]],
                                               tmp_path: Path) -> None:
    store = tmp_path / "killed.zarr"
    args = [str(a) for a in dense_args(dense_inputs[0], store)]
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240  # a bound only a hang exceeds
    while time.monotonic() < deadline and process.poll() is None:
        if (store / "dense" / "0").exists() or (store / "dense" / "1").exists():
            break
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    status = zarr.open_group(str(store), mode="r")["videos/status"][:]
    assert (status == PENDING).any(), "the run finished before it could be killed"
    assert run_cli(*dense_args(dense_inputs[0], store)).code == 0
    assert_stores_equal(store, dense_store)


def test_shards_of_a_job_array_make_the_same_store(dense_store: Path,
                                                    dense_inputs: tuple[Path, dict[str, WrittenVideo]],
                                                    tmp_path: Path) -> None:
    store = tmp_path / "shards.zarr"
    for shard in ("1/2", "0/2"):
        assert run_cli(*dense_args(dense_inputs[0], store, "--shard", shard)).code == 0
    assert_stores_equal(store, dense_store)


def test_torchrun_ranks_make_the_same_store(dense_store: Path, dense_inputs: tuple[Path, dict[str, WrittenVideo]],
                                            tmp_path: Path) -> None:
    store = tmp_path / "ranks.zarr"
    result = run_cli_process(*dense_args(dense_inputs[0], store), launcher=torchrun(2))
    assert result.code == 0, result
    assert_stores_equal(store, dense_store)


def test_damage_is_found_named_and_repaired(dense_store: Path, dense_inputs: tuple[Path, dict[str, WrittenVideo]],
                                            tmp_path: Path) -> None:
    store = tmp_path / "damaged.zarr"
    shutil.copytree(dense_store, store)
    (store / "dense/1/pooled/c/0/0").unlink()
    chunk = store / "dense/2/time/c/0"
    data = bytearray(chunk.read_bytes())
    data[3] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreDamageError, match=r"dense/1/pooled of video 1 \(b_vfr.mkv\).*chunk file missing"):
        CacheReader(store).dense(1)
    verified = run_cli("verify", store)
    assert verified.code == 1 and "dense/1/pooled" in verified.stdout and "dense/2/time" in verified.stdout, verified
    repaired = run_cli(*dense_args(dense_inputs[0], store, "--repair"))
    assert repaired.code == 0 and "2 processed" in repaired.stdout, repaired
    assert run_cli("verify", store).code == 0
    assert_stores_equal(store, dense_store)


def test_a_bad_video_fails_alone_and_keeps_no_time_series(tmp_path: Path) -> None:
    write_cfr(tmp_path / "v" / "good.mp4", 3)
    write_audio_only(tmp_path / "v" / "sound.mp4")
    store = tmp_path / "s.zarr"
    result = run_cli(*dense_args(tmp_path / "v", store))
    assert result.code == 0 and "sound.mp4: no video stream" in result.stderr, result
    reader = CacheReader(store)
    assert list(reader.status) == [DONE, FAILED] and reader.column("samples")[1] == 0
    assert not (store / "dense" / "1").exists()
    assert run_cli("verify", store).code == 0


def test_each_video_opens_in_xarray_with_time_as_its_coordinate(dense_store: Path) -> None:
    xarray = pytest.importorskip("xarray")
    video = xarray.open_zarr(dense_store, group="dense/1", consolidated=False)
    assert video["pooled"].dims == ("time", "embed") and "time" in video.coords
    np.testing.assert_array_equal(video["time"].values, CacheReader(dense_store).dense(1, "time"))


@pytest.mark.parametrize("args, message", [
    (["--fps", "0"], "--fps 0: expected frames per second"),
    (["--fps", "fast"], "--fps fast: expected frames per second"),
    (["--fps", "2", "--clips", "2"], "--clips cannot be used with it"),
    (["--tokens", "cls"], "--tokens cls is for dense stores"),
])
def test_bad_dense_options_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    write_cfr(tmp_path / "v" / "a.mp4", 1)
    result = run_cli("extract", tmp_path / "v", tmp_path / "s.zarr", "--model-config", TINY_CONFIG, *args)
    assert result.code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result
    assert not (tmp_path / "s.zarr").exists()


def test_annotations_give_splits_and_segments_and_every_problem_is_said(
        dense_inputs: tuple[Path, dict[str, WrittenVideo]], tmp_path: Path) -> None:
    """An ActivityNet-style JSON (ids with and without `v_`) for the three videos and one that is not there;
    its subsets become the store's splits, its segments the store's table, each problem one line."""
    database = {
        "a_cfr": {"subset": "training", "duration": 9.0,
                  "annotations": [{"segment": [1.0, 3.5], "label": "Jump"}, {"segment": [5.0, 4.0], "label": "Jump"}]},
        "v_b_vfr": {"subset": "validation", "duration": 8.0, "annotations": [{"segment": [2.0, 6.5], "label": "Run"}]},
        "c_misstated": {"subset": "testing", "duration": 6.0, "annotations": []},
        "gone": {"subset": "training", "duration": 3.0, "annotations": [{"segment": [0.0, 1.0], "label": "Run"}]},
    }
    annotations = tmp_path / "activity_net.json"
    annotations.write_text(json.dumps({"version": "1.3", "database": database}))
    store = tmp_path / "annotated.zarr"
    args = [a for a in dense_args(dense_inputs[0], store, "--annotations", annotations) if a != "--quiet"]
    result = run_cli(*args)
    assert result.code == 0, result
    said = [line for line in result.stderr.splitlines() if line.startswith("annotations: ")]
    assert len(said) == 2 and any("video not in store" in line for line in said) \
        and any("inverted" in line for line in said), result.stderr
    reader = CacheReader(store)
    assert list(reader.column("split")) == ["train", "val", "test"]
    table = read_segments(store)
    assert table.classes == ("Jump", "Run")
    np.testing.assert_array_equal(table.video, [0, 1])
    np.testing.assert_array_equal(np.stack([table.start, table.end], 1), [[1.0, 3.5], [2.0, 6.5]])
    np.testing.assert_array_equal(table.label, [0, 1])
    info = run_cli("info", store)
    assert "segments     2 in 2 videos, 2 classes" in info.stdout, info
    (store / "segments" / "start" / "c" / "0").unlink()
    verified = run_cli("verify", store)
    assert verified.code == 1 and "segments/start" in verified.stdout, verified


def test_dry_run_says_what_a_run_would_do_and_writes_nothing(
        dense_store: Path, dense_inputs: tuple[Path, dict[str, WrittenVideo]], tmp_path: Path) -> None:
    store = tmp_path / "planned.zarr"
    before = sorted(p.name for p in tmp_path.iterdir())
    planned = run_cli(*dense_args(dense_inputs[0], store, "--dry-run"))
    assert planned.code == 0 and "videos       3 found, 0 listed but missing" in planned.stdout, planned
    assert f"{store} would be created (clipcache/3)" in planned.stdout
    frames = int(planned.stdout.split(" frames, ")[0].rsplit(" ", 1)[1])
    assert frames == 9 * RATE + 8 * RATE + 4 * RATE  # the misstated container says 4 s: an estimate
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    resumed = run_cli(*dense_args(dense_inputs[0], dense_store, "--dry-run"))
    assert "exists with these settings: 0 videos pending" in resumed.stdout, resumed
    other = run_cli(*dense_args(dense_inputs[0], dense_store, "--dry-run", "--layers", "-1"))
    assert "would be refused" in other.stdout and "layers" in other.stdout, other
    clips = run_cli("extract", dense_inputs[0], store, "--model-config", TINY_CONFIG, "--frames", "4", "--layers",
                    "-1", "--dry-run")
    assert clips.code == 0 and "estimate     12 frames" in clips.stdout and not store.exists(), clips
