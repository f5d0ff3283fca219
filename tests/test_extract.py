"""`clipcache extract` end to end: exact preprocessing, layout, resume, ranks, refusals, bad input."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from clipcache.cache.lock import lock_folder
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import DONE, FAILED, MISSING, PENDING, UNFINISHED
from clipcache.pipeline.demo.synthetic import shape_frames, write_video
from clipcache.pipeline.extract.decord_loader import load_decord
from conftest import (
    REPO,
    TINY_CONFIG,
    assert_choice_refused,
    assert_stores_equal,
    run_cli,
    run_cli_process,
    tiny_extract_args,
    torchrun,
)
from mounts import read_only


def test_store_layout_and_table(reference_store: Path, demo_videos: Path) -> None:
    reader = CacheReader(reference_store)
    s = reader.settings
    assert reader.num_videos == 9 and (reader.status == DONE).all()
    assert s.classes == ("blue_stripes", "green_circle", "red_square")
    assert s.layers == (1, 2) and s.tokens == 17 and s.width == 64 and s.embed_dim == 32
    paths = list(reader.column("path"))
    assert paths == sorted(paths) and paths[0] == "train/blue_stripes/000.mp4"
    assert set(reader.column("split")) == {"train", "val"}
    assert list(reader.column("label")[:2]) == [0, 0]
    assert reader.tokens(2, [0]).shape == (1, 1, 4, 17, 64)
    assert reader.pooled(slice(0, 9)).shape == (9, 1, 4, 32)
    np.testing.assert_array_equal(reader.column("frame_index")[0], [[1, 4, 7, 10]])  # TSN centres of 12 frames
    assert reader.column("num_frames")[0] == 12 and reader.column("width")[0] == 64
    assert reader.column("height")[0] == 48 and reader.column("fps")[0] == pytest.approx(10)
    assert reader.column("duration")[0] == pytest.approx(1.2, abs=0.15)


def test_pooled_equals_open_clip_preprocess_and_encode(tmp_path: Path) -> None:
    """The stored embedding is open_clip's own preprocess + encode_image of the same decoded frames
    (odd, non-square frames exercise the resize and crop arithmetic; weights come from a checkpoint)."""
    import open_clip

    open_clip.add_model_config(TINY_CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-vit")
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    video = write_video(tmp_path / "v" / "c" / "odd.mp4", shape_frames(9, 70, 94, (200, 30, 90), "circle"))
    store = tmp_path / "s.zarr"
    assert run_cli(*tiny_extract_args(tmp_path / "v", store, "--pretrained", checkpoint)).code == 0
    reader = CacheReader(store)
    assert reader.settings.pretrained == str(checkpoint)
    index = reader.column("frame_index")[0, 0]
    frames = load_decord().VideoReader(str(video), num_threads=1).get_batch(list(index)).asnumpy()
    blocks, taps = model.visual.transformer.resblocks, {}
    for layer in reader.settings.layers:  # the residual stream after each stored block, tapped independently
        blocks[layer].register_forward_hook(lambda _m, _i, out, layer=layer: taps.__setitem__(layer, out))
    with torch.no_grad():
        expected = model.eval().encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames]))
    stored = torch.from_numpy(reader.pooled([0])[0, 0].astype(np.float32))
    assert torch.nn.functional.cosine_similarity(stored, expected, dim=-1).min() >= 0.9999
    for layer, tapped in taps.items():  # (T, L, D): CLS first, then the patches in row-major order
        tokens = torch.from_numpy(reader.tokens(layer, [0])[0, 0].astype(np.float32))
        assert tokens.shape == tapped.shape
        assert torch.nn.functional.cosine_similarity(tokens, tapped, dim=-1).min() >= 0.9999


def test_rerun_skips_finished_work(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    store = tmp_path / "copy.zarr"
    shutil.copytree(reference_store, store)
    result = run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "2"))
    assert result.code == 0 and "0 processed" in result.stdout
    assert_stores_equal(store, reference_store)


def test_kill_9_then_rerun_equals_uninterrupted(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    """A real SIGKILL in the middle of a run; the rerun must produce the uninterrupted run's bytes."""
    store = tmp_path / "killed.zarr"
    args = [str(a) for a in tiny_extract_args(demo_videos, store, "--shard-videos", "2")]
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    finished_groups = 0
    while time.monotonic() < deadline and process.poll() is None:
        if store.exists():
            status = zarr.open_group(str(store), mode="r")["videos/status"][:]
            finished_groups = int((status != PENDING).sum())
            if finished_groups >= 2:
                break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    status = zarr.open_group(str(store), mode="r")["videos/status"][:]
    assert (status == PENDING).any(), "the run finished before it could be killed"
    result = run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "2"))
    assert result.code == 0, result
    assert_stores_equal(store, reference_store)


def test_torchrun_two_ranks_equal_single_process(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    store = tmp_path / "new" / "folder" / "ranks.zarr"  # folders that do not exist yet: the ranks make them
    result = run_cli_process(*tiny_extract_args(demo_videos, store, "--shard-videos", "2"), launcher=torchrun(2))
    assert result.code == 0, result
    assert_stores_equal(store, reference_store)


def test_other_settings_refused_unless_overwrite(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    store = tmp_path / "copy.zarr"
    shutil.copytree(reference_store, store)
    args = tiny_extract_args(demo_videos, store, "--shard-videos", "2")
    refused = run_cli(*args, "--frames", "6")  # the last --frames wins
    assert refused.code == 2
    assert "frames: 4 -> 6" in refused.stderr and "--overwrite" in refused.stderr
    assert CacheReader(store).settings.frames == 4  # nothing was lost
    assert run_cli(*args, "--frames", "6", "--overwrite").code == 0
    assert CacheReader(store).settings.frames == 6


def test_int8_store_is_close_to_float16(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    store = tmp_path / "int8.zarr"
    assert run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "2", "--dtype", "int8")).code == 0
    a = CacheReader(reference_store).tokens(2, slice(0, 9)).astype(np.float32)
    b = CacheReader(store).tokens(2, slice(0, 9))
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() >= 0.999
    info = json.loads(run_cli("info", store, "--json").stdout)
    ref = json.loads(run_cli("info", reference_store, "--json").stdout)
    assert info["bytes_per_video"] < 0.6 * ref["bytes_per_video"]


def test_views_clips_crops_and_augmentation(tmp_path: Path) -> None:
    write_video(tmp_path / "v" / "c" / "wide.mp4", shape_frames(20, 48, 96, (30, 200, 30), "square", motion="right"))
    store = tmp_path / "views.zarr"
    args = tiny_extract_args(tmp_path / "v", store, "--clips", "2", "--crops", "3", "--augment", "2")
    assert run_cli(*args).code == 0
    reader = CacheReader(store)
    assert reader.settings.views == 8
    index = reader.column("frame_index")[0]
    np.testing.assert_array_equal(index[0], index[2])  # the three crops of clip 0 share frames
    assert not np.array_equal(index[0], index[3])  # clip 1 takes other frames
    pooled = reader.pooled([0])[0].astype(np.float32)
    assert not np.allclose(pooled[0], pooled[1])  # left and centre crops differ
    assert not np.allclose(pooled[6], pooled[7])  # two augmented views differ
    again = tmp_path / "again.zarr"
    args = ("--clips", "2", "--crops", "3", "--augment", "2")
    assert run_cli(*tiny_extract_args(tmp_path / "v", again, *args)).code == 0
    assert_stores_equal(store, again)  # seeded augmentation


def test_info_reports_counts_and_failures(reference_store: Path) -> None:
    info = json.loads(run_cli("info", reference_store, "--json").stdout)
    assert (info["done"], info["failed"], info["pending"]) == (9, 0, 0)
    assert info["layers"] == [1, 2] and info["frames"] == 4 and info["dtype"] == "float16"
    assert info["bytes_per_video"] >= 2 * 4 * 17 * 64 * 2
    text = run_cli("info", reference_store).stdout
    assert "9 done, 0 failed, 0 pending" in text


def test_bad_videos_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "v"
    write_video(root / "c" / "good.mp4", shape_frames(8, 32, 32, (10, 10, 200)))
    write_video(root / "c" / "short.mp4", shape_frames(2, 32, 32, (10, 200, 10)))
    (root / "c" / "empty.mp4").write_bytes(b"")
    (root / "c" / "text.avi").write_text("not a video at all\n" * 20)
    os.mkfifo(root / "c" / "fifo.mp4")
    (root / "c" / "loop1.mp4").symlink_to(root / "c" / "loop2.mp4")
    (root / "c" / "loop2.mp4").symlink_to(root / "c" / "loop1.mp4")
    (root / "c" / "dangling.mp4").symlink_to(root / "c" / "gone.mp4")
    store = tmp_path / "bad.zarr"
    result = run_cli(*tiny_extract_args(root, store))
    assert result.code == 0, result
    reader = CacheReader(store)
    by_path = dict(zip(reader.column("path"), reader.status))
    assert by_path == {"c/empty.mp4": FAILED, "c/good.mp4": DONE, "c/short.mp4": DONE, "c/text.avi": FAILED,
                       "c/fifo.mp4": FAILED, "c/loop1.mp4": FAILED, "c/loop2.mp4": FAILED, "c/dangling.mp4": FAILED}
    errors = dict(zip(reader.column("path"), reader.column("error")))
    assert errors["c/empty.mp4"] and "\n" not in errors["c/empty.mp4"]
    assert errors["c/fifo.mp4"] == "not a regular file: a FIFO (named pipe)"
    assert errors["c/loop1.mp4"] == "symbolic link loop" and errors["c/dangling.mp4"] == "broken symbolic link"
    assert "repeated" in dict(zip(reader.column("path"), reader.column("note")))["c/short.mp4"]
    assert "c/empty.mp4" in result.stderr and "c/text.avi" in result.stderr
    assert "6 failed" in result.stdout
    strict = run_cli(*tiny_extract_args(root, tmp_path / "strict.zarr", "--strict"))
    assert strict.code == 1


def test_hung_decoder_is_abandoned_after_timeout(tmp_path: Path) -> None:
    write_video(tmp_path / "v" / "c" / "a.mp4", shape_frames(8, 32, 32, (10, 10, 200)))
    store = tmp_path / "t.zarr"
    result = run_cli(*tiny_extract_args(tmp_path / "v", store, "--timeout", "0.001"))
    assert result.code == 1 and "no video could be extracted (1 failed" in result.stderr  # nothing usable: exit 1
    assert "timed out after 0.001s" in CacheReader(store).column("error")[0]


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "--frames must be at least 1"),
    (["--crops", "2"], "--crops must be 1 or 3"),
    (["--layers", "7"], "--layers 7: the model has blocks 0..2"),
    (["--layers=-5:"], "--layers '-5:': -5 is beyond the model's 3 blocks"),
    (["--layers=-10:"], "--layers '-10:': -10 is beyond the model's 3 blocks"),
    (["--layers", "1:9"], "--layers '1:9': 9 is beyond the model's 3 blocks"),
    (["--shard", "2/2"], "--shard '2/2'"),
    (["--timeout", "nan"], "--timeout must be a finite number, got nan"),
    (["--device", "banana"], "--device banana: expected auto, cpu, cuda or cuda:N"),
    (["--pretrained", "nonexistent-tag"], "--pretrained nonexistent-tag"),
])
def test_bad_arguments_are_one_line_errors(demo_videos: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(*tiny_extract_args(demo_videos, tmp_path / "x.zarr", *args))
    assert result.code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.zarr").exists() or args[0] == "--pretrained"


@pytest.mark.parametrize("option, value, choices", [("--dtype", "bf16", "'float16', 'int8'"),
                                                    ("--sampling", "tsn", "'uniform', 'dense'")])
def test_choice_typos_get_the_list_of_choices(demo_videos: Path, tmp_path: Path, option: str, value: str,
                                              choices: str) -> None:
    assert_choice_refused(run_cli(*tiny_extract_args(demo_videos, tmp_path / "x.zarr", option, value)), option, value,
                          choices)
    assert not (tmp_path / "x.zarr").exists()


def test_missing_input_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(*tiny_extract_args(tmp_path / "absent", tmp_path / "x.zarr"))
    assert result.code == 2 and "absent" in result.stderr


# one writer per store

def _hold_lock(store: Path) -> subprocess.Popen:
    """Another live process holding the store's lock, as a run of clipcache would."""
    code = ("import sys, time; from pathlib import Path; from clipcache.cache.lock import Holder, StoreLock; "
            "StoreLock(Path(sys.argv[1])).acquire(Holder.this_process('another run')); print('held', flush=True); "
            "time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_run_is_refused_naming_the_holder(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    store = tmp_path / "copy.zarr"
    shutil.copytree(reference_store, store)
    holder = _hold_lock(store)
    try:
        args = tiny_extract_args(demo_videos, store, "--shard-videos", "2")
        for extra in ([], ["--frames", "6", "--overwrite"]):
            refused = run_cli(*args, *extra)
            assert refused.code == 2 and refused.stderr.count("\n") == 1, refused
            assert f"in use by another clipcache run (pid {holder.pid} on {socket.gethostname()}, started " \
                   in refused.stderr
        assert_stores_equal(store, reference_store)  # the refused --overwrite deleted nothing
    finally:
        holder.kill()
        holder.wait()
    loud = [a for a in tiny_extract_args(demo_videos, store, "--shard-videos", "2") if a != "--quiet"]
    result = run_cli(*loud)  # a dead holder's lock is stale
    assert result.code == 0 and "removed the stale lock of a run that died" in result.stderr, result
    assert not (tmp_path / ".copy.zarr.lock").exists()


def _lock_guard_free(store: Path) -> bool:
    """Whether nobody is registering with the store's lock or setting the store up (its folder's flock)."""
    try:
        fd = os.open(lock_folder(store), os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # drops the flock too


def test_shards_of_one_job_array_share_the_lock(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    """Shard 1/2 runs for real and is stopped while it holds the lock: shard 0/2 goes on beside it,
    a second shard 1/2 and a run of the whole store are refused."""
    store = tmp_path / "shards.zarr"
    args = [str(a) for a in tiny_extract_args(demo_videos, store, "--shard-videos", "2")]
    first = subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args, "--shard", "1/2"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:  # stop it once it has set the store up
            if (store / "videos" / "status").exists() and _lock_guard_free(store):
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)
        assert (CacheReader(store).status[[2, 3, 6, 7]] == PENDING).any(), "shard 1/2 finished before it was stopped"
        assert run_cli(*args, "--shard", "0/2").code == 0
        again = run_cli(*args, "--shard", "1/2")
        assert again.code == 2 and f"pid {first.pid}" in again.stderr and "shard 1/2" in again.stderr, again
        assert run_cli(*args).code == 2
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert_stores_equal(store, reference_store)


# redoing videos in place: --retry-failed and --repair

def _files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_retry_failed_redoes_failed_videos_in_place_with_resume_guarantees(tmp_path: Path) -> None:
    """A video that failed (empty file, fixed since) is redone by --retry-failed only. Every state a kill
    could leave (the old files plus any prefix of the run's chunk writes, each an atomic rename) keeps
    the other videos' bytes and the failure, reads intact, and resumes to the same final store."""
    root = tmp_path / "v"
    for i, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200), (200, 200, 20)]):
        write_video(root / "c" / f"{i}.mp4", shape_frames(8, 32, 32, colour))
    saved = (root / "c" / "3.mp4").read_bytes()
    (root / "c" / "3.mp4").write_bytes(b"")
    store = tmp_path / "s.zarr"
    args = tiny_extract_args(root, store, "--shard-videos", "2")
    assert run_cli(*args).code == 0
    (root / "c" / "3.mp4").write_bytes(saved)
    assert "0 processed" in run_cli(*args).stdout  # a plain rerun leaves failures alone
    before = _files(store)
    retried = run_cli(*args, "--retry-failed")
    assert retried.code == 0 and "1 processed" in retried.stdout, retried
    assert list(CacheReader(store).status) == [DONE] * 4
    after = _files(store)
    changed = sorted((name for name in after if after[name] != before.get(name)),
                     key=lambda name: (store / name).stat().st_mtime_ns)
    assert changed[-1] == "videos/status/c/1" and all("/c/1" in name for name in changed), changed
    for k in range(len(changed)):
        state = tmp_path / f"state{k}.zarr"
        shutil.copytree(tmp_path / "s.zarr", state)
        for name in before:
            (state / name).write_bytes(before[name])
        for name in changed[:k]:
            (state / name).write_bytes(after[name])
        reader = CacheReader(state)
        assert list(reader.status) == [DONE, DONE, DONE, FAILED]
        np.testing.assert_array_equal(reader.tokens(2, [0, 1, 2]), CacheReader(store).tokens(2, [0, 1, 2]))
        if k == len(changed) // 2:
            assert run_cli("verify", state).code == 0
            assert run_cli(*tiny_extract_args(root, state, "--shard-videos", "2", "--retry-failed")).code == 0
            assert_stores_equal(state, store)


def test_repair_redoes_exactly_the_damaged_groups(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    store = tmp_path / "damaged.zarr"
    shutil.copytree(reference_store, store)
    shard = store / "tokens/2/c/1/0/0/0/0"  # group 1 (videos 2, 3): flip a byte of video 3
    data = bytearray(shard.read_bytes())
    data[len(data) // 2 + 100] ^= 1
    shard.write_bytes(bytes(data))
    (store / "videos/label/c/3").unlink()  # group 3 (videos 6, 7)
    args = tiny_extract_args(demo_videos, store, "--shard-videos", "2")
    resumed = run_cli(*args)
    assert resumed.code == 2 and "--repair" in resumed.stderr and resumed.stderr.count("\n") == 1, resumed
    assert run_cli("verify", store).code == 1
    repaired = run_cli(*args, "--repair")
    assert repaired.code == 0 and "4 processed" in repaired.stdout, repaired
    assert run_cli("verify", store).code == 0
    assert_stores_equal(store, reference_store)


# never delete or write into what is not ours

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_overwrite_removes_only_a_clipcache_store(demo_videos: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["format"] = "someone-else/1"
    (tmp_path / "file.zarr").write_text("a file")
    videos = _snapshot(demo_videos)
    cases = [(demo_videos, "--overwrite", "is or contains the input folder"),
             (demo_videos.parent, "--overwrite", "is or contains the input folder"),
             (demo_videos, "--strict", "exists, is not empty and is not a clipcache store"),
             (notes, "--overwrite", "exists, is not empty and is not a clipcache store"),
             (notes, "--strict", "exists, is not empty and is not a clipcache store"),
             (tmp_path / "other.zarr", "--overwrite", "is a zarr store but not a clipcache store"),
             (tmp_path / "file.zarr", "--overwrite", "exists and is not a folder")]
    for store, flag, reason in cases:
        result = run_cli(*tiny_extract_args(demo_videos, store, flag))
        assert result.code == 2 and reason in result.stderr and result.stderr.count("\n") == 1, (store, result)
    assert _snapshot(demo_videos) == videos and (notes / "todo.txt").read_text() == "my notes"
    assert zarr.open_group(str(tmp_path / "other.zarr"), mode="r").attrs["format"] == "someone-else/1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.zarr", "notes", "other.zarr"]  # no lock left


def test_demo_out_replaces_only_what_the_demo_made(tmp_path: Path) -> None:
    from clipcache.pipeline.demo.run import prepare_out

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "paper.tex").write_text("draft")
    refused = run_cli("demo", "--out", mine)
    assert refused.code == 2 and "not empty and was not made by clipcache demo" in refused.stderr, refused
    assert refused.stderr.count("\n") == 1 and _snapshot(mine) == {"paper.tex": b"draft"}
    (tmp_path / "f").write_text("x")
    as_file = run_cli("demo", "--out", tmp_path / "f")
    assert as_file.code == 2 and "is a file" in as_file.stderr and as_file.stderr.count("\n") == 1
    made = tmp_path / "made"
    prepare_out(made)  # what the demo does first: a new folder is marked as the demo's
    (made / "videos").mkdir()
    (made / "videos" / "old.mp4").write_bytes(b"old")
    (made / "kept.txt").write_text("a file the user put there")
    prepare_out(made)  # a second demo replaces its own outputs only
    assert not (made / "videos").exists() and (made / "kept.txt").read_text() == "a file the user put there"


def test_a_run_where_every_video_failed_exits_1(tmp_path: Path) -> None:
    (tmp_path / "v" / "c").mkdir(parents=True)
    (tmp_path / "v" / "c" / "bad.mp4").write_text("not a video")
    result = run_cli(*tiny_extract_args(tmp_path / "v", tmp_path / "s.zarr"))
    assert result.code == 1 and "no video could be extracted (1 failed, 0 missing)" in result.stderr, result


def test_ctrl_c_stops_with_one_line_and_loses_nothing(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, once a group is written."""
    store = tmp_path / "interrupted.zarr"
    args = [str(a) for a in tiny_extract_args(demo_videos, store, "--shard-videos", "2")]
    for _ in range(5):  # on a busy machine the run may finish before the signal lands: then run it again
        shutil.rmtree(store, ignore_errors=True)
        process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 240  # a bound only a hang exceeds
        while time.monotonic() < deadline and process.poll() is None:
            if store.exists() and (zarr.open_group(str(store), mode="r")["videos/status"][:] != PENDING).any():
                break
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        if (CacheReader(store).status == PENDING).any():
            break
    assert (CacheReader(store).status == PENDING).any(), "five runs finished before they could be interrupted"
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines() == ["clipcache: interrupted; finished shard groups are kept, rerun the same "
                                           "command to resume"]
    assert run_cli("verify", store).code == 0 and not (tmp_path / ".interrupted.zarr.lock").exists()
    assert run_cli(*args).code == 0
    assert_stores_equal(store, reference_store)


def test_a_missing_array_is_named_and_repaired(reference_store: Path, demo_videos: Path, tmp_path: Path) -> None:
    store = tmp_path / "lost.zarr"
    shutil.copytree(reference_store, store)
    shutil.rmtree(store / "tokens/1")
    with pytest.raises(ValueError, match="array tokens/1 is missing"):
        CacheReader(store).tokens(1, [0])
    args = tiny_extract_args(demo_videos, store, "--shard-videos", "2")
    resumed = run_cli(*args)
    assert resumed.code == 2 and "arrays tokens/1 are missing" in resumed.stderr and "--repair" in resumed.stderr
    assert "tokens/1" in run_cli("verify", store).stdout
    assert run_cli(*args, "--repair").code == 0
    assert_stores_equal(store, reference_store)


def test_leftovers_of_killed_creations_are_removed(demo_videos: Path, tmp_path: Path) -> None:
    for name in (".s.zarr.tmp-0123abcd", ".s.zarr.old-89abcdef", ".s.zarr.tmp-mine", ".t.zarr.tmp-0123abcd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "zarr.json").write_text("{}")
    assert run_cli(*tiny_extract_args(demo_videos, tmp_path / "s.zarr", "--shard-videos", "9")).code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.tmp-mine", ".t.zarr.tmp-0123abcd", "s.zarr"]


def test_a_read_only_store_is_refused_with_nothing_deleted(reference_store: Path, demo_videos: Path,
                                                          tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(reference_store, shared / "store.zarr")
    with read_only(shared):
        for extra in ([], ["--overwrite", "--frames", "6"]):
            result = run_cli(*tiny_extract_args(demo_videos, shared / "store.zarr", "--shard-videos", "2", *extra))
            assert result.code == 2 and result.stderr.count("\n") == 1, result
            assert "store.zarr: the store is not writable (read-only file system or no permission)" in result.stderr
        assert run_cli("verify", shared / "store.zarr").code == 0
        assert_stores_equal(shared / "store.zarr", reference_store)


# rows of a list whose video is missing

def test_missing_rows_are_kept_and_extracted_once_they_appear(tmp_path: Path) -> None:
    """Two Kinetics-style lists (train and val) into one store; one listed clip is missing, then appears."""
    root = tmp_path / "k400"
    for i, clip in enumerate(["aaa_000000_000010", "bbb_000005_000015"]):
        write_video(root / "train" / f"{clip}.mp4", shape_frames(8, 32, 32, (40 * i, 200, 30)))
    train = tmp_path / "train.csv"
    train.write_text("label,youtube_id,time_start,time_end,split\nx,aaa,0,10,train\ny,ccc,3,13,train\n")
    val = tmp_path / "val.csv"
    val.write_text("label,youtube_id,time_start,time_end,split\ny,bbb,5,15,val\n")
    store = tmp_path / "s.zarr"
    args = tiny_extract_args(root, store, "--list", train, "--list", val)
    first = run_cli(*args)
    assert first.code == 0 and "2 done, 0 failed, 0 pending, 1 missing" in first.stdout, first
    reader = CacheReader(store)
    assert list(zip(reader.column("path"), reader.column("split"), reader.status)) == [
        ("train/aaa_000000_000010.mp4", "train", DONE), ("train/bbb_000005_000015.mp4", "val", DONE),
        ("ccc_000003_000013", "train", MISSING)]
    info = json.loads(run_cli("info", store, "--json").stdout)
    assert info["missing"] == 1 and info["missing_videos"] == ["ccc_000003_000013"]
    assert run_cli(*args, "--strict").code == 1
    write_video(root / "replacement" / "ccc_000003_000013.mp4", shape_frames(8, 32, 32, (9, 9, 200)))
    second = run_cli(*args)
    assert second.code == 0 and "1 processed" in second.stdout and "3 done" in second.stdout, second
    reader = CacheReader(store)
    assert reader.column("path")[2] == "replacement/ccc_000003_000013.mp4" and reader.status[2] == DONE
    fresh = tmp_path / "fresh.zarr"
    assert run_cli(*tiny_extract_args(root, fresh, "--list", train, "--list", val)).code == 0
    assert_stores_equal(store, fresh)


def test_encoding_does_not_depend_on_which_videos_share_a_batch(tmp_path: Path) -> None:
    """A video retried alone is encoded in a batch of the same shape as in a full run (padded), so the
    store equals an uninterrupted one byte for byte; the batch size itself is part of the identity."""
    root = tmp_path / "v"
    for i in range(6):
        write_video(root / "c" / f"{i}.mp4", shape_frames(12, 40, 56, (40 * i, 255 - 40 * i, 90), "circle", seed=i))
    fresh = tmp_path / "fresh.zarr"
    assert run_cli(*tiny_extract_args(root, fresh, "--frames", "7", "--batch-size", "24")).code == 0
    saved = (root / "c" / "4.mp4").read_bytes()
    (root / "c" / "4.mp4").write_bytes(b"")
    store = tmp_path / "s.zarr"
    args = tiny_extract_args(root, store, "--frames", "7", "--batch-size", "24")
    assert run_cli(*args).code == 0
    (root / "c" / "4.mp4").write_bytes(saved)
    assert run_cli(*args, "--retry-failed").code == 0
    assert_stores_equal(store, fresh)
    other = run_cli(*tiny_extract_args(root, store, "--frames", "7", "--batch-size", "8"))
    assert other.code == 2 and "batch_size: 24 -> 8" in other.stderr, other


def test_a_video_encodes_to_the_same_bytes_alone_or_in_a_full_batch() -> None:
    """16 one-frame videos of random pixels: each encoded alone (as a retry or a found missing video is)
    stores the same float16 values as in the full group's batch (unpadded, one value differed)."""
    from dataclasses import replace as with_fields

    from test_cache_format import _settings

    from clipcache.pipeline.extract.decode_pool import Outcome, Task
    from clipcache.pipeline.extract.encoder import FrozenImageEncoder
    from clipcache.pipeline.extract.groups import GroupEncoder
    from clipcache.pipeline.extract.plan import GroupWork
    from clipcache.pipeline.extract.prepare import PreparedVideo
    from clipcache.pipeline.extract.sources import VideoEntry
    from clipcache.pipeline.extract.video import VideoInfo
    from clipcache.pipeline.models import load_model

    loaded = load_model("", None, TINY_CONFIG)
    size = loaded.preprocess["image_size"]
    settings = with_fields(_settings(), frames=1, tokens=17, width=64, embed_dim=32, image_size=size, num_videos=16,
                           shard_videos=16, batch_size=16)
    entries = tuple(VideoEntry(f"{i}.mp4", None, "", f"{i}.mp4") for i in range(16))
    encode = GroupEncoder(FrozenImageEncoder(loaded, settings.layers, torch.device("cpu")), settings, 16, entries)
    pixels = np.random.default_rng(1).integers(0, 256, (16, 1, 1, size, size, 3), dtype=np.uint8)
    info = VideoInfo(1, 10.0, size, size, 0.1)
    outcomes = {i: Outcome(Task(i, Path(f"{i}.mp4")), PreparedVideo(pixels[i], np.zeros((1, 1), np.int32), info, []),
                           None) for i in range(16)}
    full = encode(GroupWork(0, tuple(range(16)), None), outcomes)
    for i in range(16):
        keep = np.ones(16, dtype=bool)
        keep[i] = False
        alone = encode(GroupWork(0, (i,), keep), {i: outcomes[i]})
        np.testing.assert_array_equal(alone.pooled[i].astype(np.float16), full.pooled[i].astype(np.float16))
        for layer in settings.layers:
            np.testing.assert_array_equal(alone.tokens[layer][i].astype(np.float16),
                                          full.tokens[layer][i].astype(np.float16))


def test_a_store_of_the_previous_format_is_read_and_resumed(reference_store: Path, demo_videos: Path,
                                                           tmp_path: Path) -> None:
    """The attributes of a clipcache/1 store: no batch size recorded; same options otherwise."""
    store = tmp_path / "old.zarr"
    shutil.copytree(reference_store, store)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["format"] = "clipcache/1"
    del meta["attributes"]["batch_size"]
    (store / "zarr.json").write_text(json.dumps(meta))
    assert CacheReader(store).format_version == 1
    result = run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "2", "--batch-size", "7"))
    assert result.code == 0 and "0 processed" in result.stdout, result


def test_an_unfinished_store_left_by_a_stopped_copy_is_replaced(demo_videos: Path, reference_store: Path,
                                                                tmp_path: Path) -> None:
    """A folder whose root says `clipcache/unfinished` is clipcache's own half-written store (a copy stopped
    midway): readers refuse it, and extract removes it under the lock and makes the store."""
    store = tmp_path / "half.zarr"
    shutil.copytree(reference_store, store)
    root = json.loads((store / "zarr.json").read_text())
    (store / "zarr.json").write_text(json.dumps({**root, "attributes": {"format": UNFINISHED}}))
    refused = run_cli("info", store)
    assert refused.code == 2 and "an unfinished store" in refused.stderr, refused
    result = run_cli(*tiny_extract_args(demo_videos, store, "--shard-videos", "2"))
    assert result.code == 0, result
    assert_stores_equal(store, reference_store)
