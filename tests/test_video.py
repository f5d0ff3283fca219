"""Decoding real files of every awkward kind: the right frames come back or a one-line reason."""
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

from clipcache.pipeline.demo.synthetic import write_video
from clipcache.pipeline.extract.video import VideoDecodeError, VideoInfo, decode_frames
from untrimmed_videos import write_audio_only


def _indexed_frames(n: int, height: int = 32, width: int = 64, noise: int = 0) -> np.ndarray:
    """Frame i is a grey of mean level 8 * i (plus fresh noise, which makes every frame cost bits),
    so a decoded frame tells which index it was."""
    rng = np.random.default_rng(0)
    levels = np.arange(n, dtype=np.int32)[:, None, None, None] * 8 + 8
    frames = levels + rng.integers(-noise, noise + 1, (n, height, width, 3)) if noise else \
        np.broadcast_to(levels, (n, height, width, 3))
    return np.clip(frames, 0, 255).astype(np.uint8)


def _levels(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 8)) - 1 for f in frames]


def _pick(indices: list[int]):
    return lambda num_frames: np.array(indices)


class _Collected:
    """A frame sink that keeps what `decode_frames` delivers: each distinct frame once, in order."""

    def start(self, info: VideoInfo, index: np.ndarray) -> None:
        self.info, self.index, self.delivered = info, index, []

    def frame(self, k: int, rgb: np.ndarray) -> None:
        assert k == len(self.delivered)
        self.delivered.append(rgb.copy())

    @property
    def frames(self) -> np.ndarray:
        return np.stack(self.delivered)


def _decode(path: Path, choose) -> tuple[_Collected, np.ndarray]:
    decoded = _Collected()
    decoded.notes = decode_frames(path, choose, decoded)
    return decoded, decoded.index


@pytest.mark.parametrize("codec, ext", [("h264", "mp4"), ("mpeg4", "avi"), ("vp9", "webm"), ("h264", "mkv"),
                                        ("h264", "mov")])
def test_codecs_and_containers_give_the_asked_frames(tmp_path: Path, codec: str, ext: str) -> None:
    path = write_video(tmp_path / f"v.{ext}", _indexed_frames(20), codec=codec)
    decoded, index = _decode(path, _pick([[2, 5], [5, 19]]))
    assert index.shape == (2, 2) and len(decoded.frames) == 3  # frame 5 decoded once
    assert [_levels(decoded.frames[row]) for row in index] == [[2, 5], [5, 19]]
    assert decoded.info.num_frames == 20 and decoded.info.fps == pytest.approx(10)


@pytest.mark.parametrize("codec, encoder", [("av1", "libsvtav1"), ("hevc", "libx265")])
def test_newer_codecs_when_the_encoder_exists(tmp_path: Path, codec: str, encoder: str) -> None:
    if encoder not in av.codecs_available:
        pytest.skip(f"PyAV has no {encoder} encoder here")
    path = write_video(tmp_path / "v.mkv", _indexed_frames(10, 64, 64), codec=codec)
    decoded, index = _decode(path, _pick([3, 7]))
    assert _levels(decoded.frames[index]) == [3, 7]


@pytest.mark.parametrize("height, width", [(33 * 2, 17 * 2), (32, 48), (32, 16), (70, 94)])
def test_awkward_sizes(tmp_path: Path, height: int, width: int) -> None:
    path = write_video(tmp_path / "v.mp4", _indexed_frames(6, height, width))
    decoded, index = _decode(path, _pick([1, 4]))
    assert decoded.frames.shape[1:] == (height, width, 3)
    assert _levels(decoded.frames[index]) == [1, 4]


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:8, :16] = 255  # a bright block in the top-left corner
    path = write_video(tmp_path / "v.mp4", np.stack([frame] * 4), rotation=90)
    decoded, index = _decode(path, _pick([0]))
    image = decoded.frames[index[0]]
    assert image.shape == (64, 32, 3)  # portrait after rotation
    assert image[-4:, :4].mean() > 200 and image[:4, :4].mean() < 50  # counter-clockwise


def test_rotation_is_applied_on_the_fallback_path_too(tmp_path: Path) -> None:
    frame = np.zeros((32, 48, 3), np.uint8)  # width 48 sends decord's batch copy off the rails
    frame[:8, :16] = 255
    path = write_video(tmp_path / "v.mp4", np.stack([frame] * 4), rotation=90)
    decoded, index = _decode(path, _pick([0]))
    assert decoded.frames.shape[1:] == (48, 32, 3)
    assert decoded.frames[index[0]][-4:, :4].mean() > 200


def test_truncated_file_keeps_the_frames_that_decode(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mp4", _indexed_frames(30, 32, 64, noise=12), faststart=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    decoded, index = _decode(cut, lambda n: np.arange(n))
    assert 0 < decoded.info.num_frames < 30
    assert _levels(decoded.frames[index]) == list(range(decoded.info.num_frames))
    assert decoded.notes and "decode" in decoded.notes[0]


def test_variable_frame_rate(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        pts = 0
        for i, frame in enumerate(_indexed_frames(12)):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = pts
            pts += 20 if i % 2 else 70  # irregular gaps
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    decoded, index = _decode(path, _pick([0, 11]))
    assert _levels(decoded.frames[index]) == [0, 11]


def test_one_frame_video(tmp_path: Path) -> None:
    path = write_video(tmp_path / "one.mp4", _indexed_frames(1))
    decoded, index = _decode(path, lambda n: np.zeros(4, int))
    assert decoded.info.num_frames == 1 and len(decoded.frames) == 1 and list(index) == [0, 0, 0, 0]


def _first_half(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b"") and p, "empty file"),
    (lambda p: p.write_text("certainly not a video\n" * 50) and p, "cannot open"),
    (lambda p: p.write_bytes(_first_half(write_video(p.with_name("src.mp4"), _indexed_frames(20)))) and p,
     "cannot open"),  # the MP4 index (moov) sits at the end: half a file has none
    (write_audio_only, "no video stream"),
    (lambda p: Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(p, format="PNG"), "a still image"),
])
def test_bad_files_raise_one_line_reasons(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.mp4"
    make(path)
    with pytest.raises(VideoDecodeError) as error:
        _decode(path, _pick([0]))
    message = str(error.value)
    assert reason in message and "\n" not in message and len(message) < 200


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="file not found"):
        _decode(tmp_path / "absent.mp4", _pick([0]))


def test_many_distinct_frames_of_a_large_video_take_bounded_memory(tmp_path: Path) -> None:
    """64 distinct 1280x720 frames are 177 MB decoded; held at once (with their copies) they peaked at
    418 MB over the process's size, and 128 frames of 4K at 7.2 GB. Decoded one at a time they cost
    a few frames, measured as the decode worker's peak resident memory."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (720 // 8, 1280 // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    video = write_video(tmp_path / "large.mp4", np.stack([np.roll(base, 16 * t, axis=1) for t in range(64)]),
                        fps=25, codec="mpeg4")
    script = (
        "import json, resource, sys; from pathlib import Path\n"
        "from clipcache.pipeline.extract.prepare import PrepareRecipe, prepare_video\n"
        "from clipcache.pipeline.extract.sampling import SamplingPlan\n"
        "from clipcache.pipeline.extract.views import ViewRecipe\n"
        "recipe = PrepareRecipe(SamplingPlan(int(sys.argv[2])), ViewRecipe(64), augment=0, seed=0)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "video = prepare_video(Path(sys.argv[1]), 0, recipe)\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024\n"
        "crops = {int(f): video.pixels[0, t].tobytes().hex() for t, f in enumerate(video.frame_index[0])}\n"
        "print(json.dumps({'mb': grown, 'notes': video.notes, 'crops': crops}))\n")
    runs = {frames: json.loads(subprocess.run([sys.executable, "-c", script, str(video), str(frames)], check=True,
                                              capture_output=True, text=True).stdout) for frames in (64, 8)}
    assert runs[64]["mb"] < 120, runs[64]["mb"]
    assert runs[64]["notes"] == ["decoded with PyAV: 64 distinct frames of 1280x720 decoded one at a time"]
    assert runs[8]["notes"] == []  # 8 frames fit: decord, as always
    assert all(runs[64]["crops"][frame] == crop for frame, crop in runs[8]["crops"].items())  # the same pixels
