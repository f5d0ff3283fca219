"""Dense (fixed-rate) frames of untrimmed videos: the frame nearest each grid time, by presentation time,
whatever the codec, frame rate or container header says; bounded memory; one-line reasons for bad files."""
from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from clipcache import InputError
from clipcache.pipeline.demo.synthetic import write_video
from clipcache.pipeline.extract.dense_frames import DenseFrames, DensePiece, estimate, sample_count
from clipcache.pipeline.extract.video import VideoDecodeError
from clipcache.pipeline.extract.views import ViewRecipe, eval_views
from untrimmed_videos import (
    WrittenVideo,
    misstate_length,
    read_code,
    truncate,
    write_audio_only,
    write_cfr,
    write_untrimmed,
    write_vfr,
)

WHOLE = ViewRecipe(32, resize_mode="squash")  # the whole frame in the crop, so its code can be read back
RATES = [1, 2, 10, 20, None]  # 20 exceeds the 10 fps files' rate: frames chosen twice, ties between frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, WrittenVideo]:
    root = tmp_path_factory.mktemp("dense")
    misstated = write_cfr(root / "misstated.mp4", 4)
    misstate_length(misstated.path, Fraction(1, 3))
    return {"cfr-h264": write_cfr(root / "cfr.mp4", 4.5), "vp9": write_cfr(root / "cfr.webm", 3, codec="vp9"),
            "mpeg4": write_cfr(root / "cfr.avi", 3, codec="mpeg4"), "vfr-mkv": write_vfr(root / "vfr.mkv", 7),
            "vfr-mp4": write_vfr(root / "vfr.mp4", 7), "misstated": misstated}


def _decode(path: Path, fps: float | None, views: ViewRecipe = WHOLE, piece: int = 7
            ) -> tuple[DenseFrames, list[DensePiece]]:
    dense = DenseFrames(path, fps, views, piece)
    return dense, list(dense)


def _joined(pieces: list[DensePiece]) -> DensePiece:
    return DensePiece(*(np.concatenate([getattr(p, name) for p in pieces]) for name in ("pixels", "time",
                                                                                           "frame_index")))


def _nearest(times: list[Fraction], grid: list[Fraction]) -> list[int]:
    """Brute force: for each grid time the written frame nearest to it, the first of equals."""
    return [min(range(len(times)), key=lambda j: (abs(times[j] - s), j)) for s in grid]


def _grid(video: WrittenVideo, fps: float | None) -> list[Fraction]:
    if fps is None:
        return list(video.times)
    return [Fraction(k) / fps for k in range(sample_count(video.end, fps))]


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("kind", ["cfr-h264", "vp9", "mpeg4", "vfr-mkv", "vfr-mp4", "misstated"])
def test_each_sample_is_the_frame_nearest_its_grid_time(videos: dict[str, WrittenVideo], kind: str,
                                                        fps: float | None) -> None:
    video = videos[kind]
    dense, pieces = _decode(video.path, fps)
    got = _joined(pieces)
    grid = _grid(video, fps)
    expected = _nearest(video.times, grid)
    assert len(got.time) == len(grid)  # = sample_count(true end, F)
    assert [read_code(crop[0]) for crop in got.pixels] == expected  # the frame that was written at that time
    assert got.frame_index.tolist() == expected  # every frame decodes, so decoded number = written serial
    assert got.time.tolist() == [float(video.times[j]) for j in expected]
    bounds = [*video.times[1:], video.end]
    for s, stored in zip(grid, got.time):  # within half the frame interval around the grid time
        j = max(j for j, t in enumerate(video.times) if t <= s)
        assert abs(stored - float(s)) <= float(bounds[j] - video.times[j]) / 2 + 1e-9
    assert [len(p.time) for p in pieces[:-1]] == [7] * (len(pieces) - 1) and 0 < len(pieces[-1].time) <= 7
    assert dense.info.num_frames == len(video.times) and dense.info.duration == pytest.approx(float(video.end))
    assert (dense.info.width, dense.info.height) == (64, 48)


def test_ties_and_frames_shown_twice(videos: dict[str, WrittenVideo]) -> None:
    """10 fps at F = 20: every odd grid time falls midway between two frames and takes the earlier."""
    _, pieces = _decode(videos["cfr-h264"].path, 20)
    assert _joined(pieces).frame_index.tolist()[:8] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_the_misstated_file_really_misstates_and_says_so(videos: dict[str, WrittenVideo]) -> None:
    video = videos["misstated"]
    stated, samples = estimate(video.path, 2)
    assert stated < 0.5 * float(video.end) and samples == sample_count(stated, 2)
    dense, _ = _decode(video.path, 2)
    assert dense.info.duration == pytest.approx(float(video.end))
    assert any("the container states" in note for note in dense.notes), dense.notes
    assert estimate(videos["cfr-h264"].path, 2) == (pytest.approx(4.5), 9)
    assert estimate(videos["cfr-h264"].path, None) == (pytest.approx(4.5), 45)


def test_vfr_rate_is_measured_from_timestamps(videos: dict[str, WrittenVideo]) -> None:
    video = videos["vfr-mkv"]
    dense, _ = _decode(video.path, 1)
    assert dense.info.fps == pytest.approx(len(video.times) / float(video.end))


def test_sample_count_is_the_grid_times_before_the_end() -> None:
    assert [sample_count(end, 2) for end in (0, Fraction(1, 100), Fraction(1, 2), Fraction(51, 100))] == [0, 1, 1, 2]
    assert sample_count(Fraction(10), Fraction(30000, 1001)) == 300
    assert sample_count(Fraction(1001, 100), 29.97) == 300  # 10.01 s at 29.97 fps: the 300th is at 9.976 s


def test_a_truncated_file_gives_what_decodes_and_a_note(tmp_path: Path) -> None:
    """Which frames survive a cut depends on the codec's frame order (a B-frame cut off loses only itself), so
    every frame's code tells which survived; the frames at 2 fps are then the nearest of those."""
    full = write_cfr(tmp_path / "full.mp4", 6, faststart=True)
    cut = truncate(full, 0.6, tmp_path / "cut.mp4")
    every, pieces = _decode(cut, None)
    survived = [read_code(crop[0]) for crop in _joined(pieces).pixels]
    assert survived == sorted(survived) and survived[:20] == list(range(20)) and len(survived) < len(full.times)
    assert _joined(pieces).time.tolist() == [float(full.times[j]) for j in survived]
    end = full.times[survived[-1]] + Fraction(1, 10)
    assert every.info.num_frames == len(survived) and every.info.duration == pytest.approx(float(end))
    assert any("decoding stopped" in note for note in every.notes), every.notes
    dense, pieces = _decode(cut, 2)
    kept = [full.times[j] for j in survived]
    grid = [Fraction(k, 2) for k in range(sample_count(end, 2))]
    assert [read_code(crop[0]) for crop in _joined(pieces).pixels] == [survived[j] for j in _nearest(kept, grid)]


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, reason", [
    (write_audio_only, "no video stream"),
    (lambda p: _written(p, b""), "empty file"),
    (lambda p: _written(p, b"certainly not a video\n" * 50), "cannot open"),
    (lambda p: p.with_name("absent.mp4"), "file not found"),
])
def test_files_without_frames_give_one_line_reasons(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path / "bad.mp4")
    with pytest.raises(VideoDecodeError) as error:
        _decode(path, 2)
    assert reason in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("recipe", [ViewRecipe(32), ViewRecipe(40, "bilinear", crops=3)])
def test_crops_are_the_clip_paths_views_of_the_same_frame(tmp_path: Path, recipe: ViewRecipe) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (12, 36, 80, 3), dtype=np.uint8)
    frames[:, :9, :20] = 255  # a bright block in the top-left corner, to tell rotations apart
    path = write_video(tmp_path / "v.mp4", frames, fps=10, rotation=90)
    with av.open(str(path)) as container:  # PyAV's own frames, rotated as displayed
        rgb = [np.rot90(f.to_ndarray(format="rgb24"), f.rotation // 90) for f in container.decode(video=0)]
    dense, pieces = _decode(path, 4, recipe, piece=3)
    got = _joined(pieces)
    size = recipe.image_size
    assert (dense.info.width, dense.info.height) == (36, 80) and got.pixels.shape[1:] == (recipe.crops, size, size, 3)
    assert rgb[0][-9:, :9].mean() > 200  # counter-clockwise: the corner block is now bottom-left
    for crops, number in zip(got.pixels, got.frame_index):
        expected = np.stack(eval_views(Image.fromarray(np.ascontiguousarray(rgb[number])), recipe))
        assert np.array_equal(crops, expected)


def test_untrimmed_action_videos_show_their_instances(tmp_path: Path) -> None:
    segments = write_untrimmed(tmp_path / "a.mp4", 12, 10, [(1, 4, "red_square"), (5, 7.5, "square_left"),
                                                            (8.5, 11, "square_right")], seed=3)
    got = _joined(_decode(tmp_path / "a.mp4", 2, ViewRecipe(64, resize_mode="squash"))[1])
    frames = got.pixels[:, 0].astype(int)
    red = ((frames[..., 0] > 180) & (frames[..., 1] < 90)).sum(axis=(1, 2)) > 20
    white = frames.min(axis=-1) > 215
    inside = {s.kind: (got.time >= s.start) & (got.time < s.end) for s in segments}
    assert np.array_equal(red, inside["red_square"])
    assert np.array_equal(white.sum(axis=(1, 2)) > 20, inside["square_left"] | inside["square_right"])
    columns = [np.nonzero(white[t])[1].mean() for t in np.flatnonzero(white.sum(axis=(1, 2)) > 20)]
    motion = np.diff(columns)
    left = int(inside["square_left"].sum())
    assert (motion[: left - 1] < 0).all() and (motion[left:] > 0).all()  # the same square, opposite ways


def test_a_long_video_streams_in_bounded_memory(tmp_path: Path) -> None:
    """Three minutes at 30 fps (5,400 frames: 50 MB of RGB at 64x48): every frame stored, pieces consumed as
    they come. Python allocations (tracemalloc, which sees numpy's) peak at a few pieces (0.6 MB measured),
    and the resident memory of a fresh process, after a warm-up, grows by far less than the decoded video."""
    long = write_cfr(tmp_path / "long.mp4", 180, fps=30)
    warm = write_cfr(tmp_path / "warm.mp4", 2, fps=30)
    script = (
        "import json, resource, sys, tracemalloc; from pathlib import Path\n"
        "from clipcache.pipeline.extract.dense_frames import DenseFrames\n"
        "from clipcache.pipeline.extract.views import ViewRecipe\n"
        "for piece in DenseFrames(Path(sys.argv[2]), None, ViewRecipe(32), 64): pass\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "tracemalloc.start()\n"
        "samples = sum(len(piece.time) for piece in DenseFrames(Path(sys.argv[1]), None, ViewRecipe(32), 64))\n"
        "peak = tracemalloc.get_traced_memory()[1]\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(json.dumps({'samples': samples, 'peak': peak, 'grown': grown * 1024}))\n")
    done = subprocess.run([sys.executable, "-c", script, str(long.path), str(warm.path)], check=True,
                          capture_output=True, text=True)
    run = json.loads(done.stdout)
    whole = len(long.times) * 48 * 64 * 3
    assert run["samples"] == len(long.times) == 5400
    assert run["peak"] < whole / 20, run
    assert run["grown"] < whole / 4, run


@pytest.mark.parametrize("fps, piece, message", [(-2, 8, "frame rate must be a positive"),
                                                 (float("nan"), 8, "frame rate must be a positive"),
                                                 (2, 0, "piece must hold at least one sample")])
def test_bad_settings_are_refused_in_one_line(videos: dict[str, WrittenVideo], fps: float, piece: int,
                                              message: str) -> None:
    with pytest.raises(InputError, match=message):
        DenseFrames(videos["cfr-h264"].path, fps, WHOLE, piece)
