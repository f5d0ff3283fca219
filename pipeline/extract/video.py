"""Decoding the chosen frames of one video with decord, once each, turning every failure into a reason.

decord reads the frame count from the container header, which can be wrong (truncated or variable
frame rate files), and its batch copy fails on some frame widths; whenever decord cannot deliver the
chosen frames, PyAV decodes the file sequentially, finds the true frame count and the frames are
chosen again. decord2 applies display-matrix rotation itself; the PyAV path applies it explicitly.
Its C++ layer reports the cause of a failure on the process's stderr rather than in the exception,
so that stream is captured while a video is opened and decoded and its last line becomes the reason.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
import numpy as np

from clipcache.pipeline.extract.decord_loader import load_decord

decord = load_decord()
FRAME_BUDGET_BYTES = 128 << 20  # distinct decoded frames decord may hold for one video (21 of 1080p)
_LOG_PREFIX = re.compile(r"^\[[\d:]+\] \S+: ")  # "[12:00:00] /src/video_reader.cc:86: "
_CHECK_FAILED = re.compile(r"^.*\(-?\d+ vs\. -?\d+\)\s*")  # "Check failed: f(x) >= 0 (-22 vs. 0) "


class VideoDecodeError(Exception):
    """A video that cannot be used; the message is a one-line reason."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int  # decodable frames
    fps: float
    width: int  # as displayed (after rotation)
    height: int
    duration: float  # seconds


class FrameSink(Protocol):
    """Where decoded frames go, one by one (see `decode_frames`)."""

    def start(self, info: VideoInfo, index: np.ndarray) -> None: ...

    def frame(self, k: int, rgb: np.ndarray) -> None: ...


@contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2; yields a list that holds its lines afterwards."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines())


def _reason(exc: BaseException, log: list[str]) -> str:
    """The most specific one-line cause: decord's last logged error, else the exception's first line."""
    for line in reversed(log):
        text = _LOG_PREFIX.sub("", line.strip())
        if "ERROR" in text:
            return text.split("ERROR", 1)[1].strip(" :") or text
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _CHECK_FAILED.sub("", _LOG_PREFIX.sub("", text)) or text


def _open(path: Path) -> "decord.VideoReader":
    with _native_stderr() as log:
        try:
            return decord.VideoReader(str(path), num_threads=1, ctx=decord.cpu(0))
        except Exception as exc:  # decord raises RuntimeError or DECORDError
            error = exc
    reason = _reason(error, log)
    if "cannot find video stream" in reason:
        reason = "no video stream (audio-only or not a video)"
    elif reason.startswith("opening:"):
        reason = f"cannot open: {reason.rsplit(', ', 1)[-1]}"  # drop the repeated path
    raise VideoDecodeError(reason)


def _pyav_frames(path: Path, keep: set[int]) -> Iterator[tuple[int, float, np.ndarray | None]]:
    """Decode sequentially with PyAV, yielding (frame number, fps, RGB frame or None when not in `keep`)
    for every decodable frame, one at a time: the fallback for streams decord mis-decodes (some frame
    widths make its batch copy fail) and for files whose header promises frames that are not there.
    Display rotation is applied here."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream (audio-only or not a video)")
            if container.format.name.endswith("_pipe") or container.format.name == "image2":
                raise VideoDecodeError(f"not a video file (a still image: {container.format.name})")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            count = 0
            try:
                for frame in container.decode(stream):
                    image = None
                    if count in keep:
                        rgb = frame.to_ndarray(format="rgb24")
                        image = np.ascontiguousarray(np.rot90(rgb, (frame.rotation or 0) // 90))
                    yield count, fps, image
                    count += 1
            except av.FFmpegError:
                pass  # a truncated or corrupt tail: the decodable frames end here
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"cannot decode: {str(exc).splitlines()[0]}") from None


def _decode_with_pyav(path: Path, choose: Callable[[int], np.ndarray], sink: FrameSink, header_count: int,
                      why: str = "") -> list[str]:
    """PyAV's sequential decode, each chosen frame handed on as it comes: the fallback where decord fails
    (`why` empty), and the bounded-memory path for requests too large to hold at once."""
    count = sum(1 for _ in _pyav_frames(path, keep=set()))
    if count == 0:
        raise VideoDecodeError("no decodable frames (truncated or corrupt)")
    wanted = choose(count)
    unique, inverse = np.unique(wanted, return_inverse=True)
    position = {int(frame): k for k, frame in enumerate(unique)}
    delivered = 0
    for number, fps, image in _pyav_frames(path, keep=set(position)):
        if image is None:
            continue
        if delivered == 0:
            height, width = image.shape[:2]
            sink.start(VideoInfo(count, fps, int(width), int(height), count / fps if fps > 0 else 0.0),
                       inverse.reshape(np.shape(wanted)))
        sink.frame(position[number], image)
        delivered += 1
    if delivered != len(unique):
        raise VideoDecodeError(f"decoded {delivered} of the {len(unique)} chosen frames on a second pass")
    why = why or f"decord failed on this stream (header {header_count} frames, {count} decode)"
    return [f"decoded with PyAV: {why}"]


def _frame_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the first video stream from the container's header, without decoding."""
    try:
        with av.open(str(path)) as container:
            streams = container.streams.video
            return (streams[0].codec_context.width, streams[0].codec_context.height) if streams else None
    except av.FFmpegError:
        return None


def _get_batch(reader: "decord.VideoReader", indices: np.ndarray) -> np.ndarray | None:
    with _native_stderr():
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()
        except Exception:
            return None
    return frames if len(frames) == len(indices) else None


def check_regular_file(path: Path) -> None:
    """A listed path that is not a readable regular file, with what it is instead (never opened: a FIFO
    would block the decoder)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise VideoDecodeError("broken symbolic link" if path.is_symlink() else "file not found") from None
    except OSError as error:
        raise VideoDecodeError("symbolic link loop" if error.errno == errno.ELOOP else
                               f"cannot read ({error.strerror or error})") from None
    kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    for test, kind in kinds.items():
        if test(mode):
            raise VideoDecodeError(f"not a regular file: {kind}")
    if path.stat().st_size == 0:
        raise VideoDecodeError("empty file (0 bytes)")


def decode_frames(path: Path, choose: Callable[[int], np.ndarray], sink: FrameSink) -> list[str]:
    """Decode the frames `choose(num_frames)` asks for (any shape), each distinct frame once, into `sink`:
    `start(info, index)` with an index array of the requested shape into the distinct frames, then
    `frame(k, rgb)` for each distinct frame k in increasing order. decord delivers them in one batch when
    they fit in FRAME_BUDGET_BYTES; more (many distinct frames of a large video: 128 of 4K held 3.2 GB
    and peaked at 7.7 GB) are decoded one at a time with PyAV, which holds one frame (128 distinct 4K
    frames: 0.2 GB, and 4x faster than decord on such dense requests). After a fallback to PyAV
    `start` comes again and every frame is delivered anew. Returns notes on the decode.
    """
    check_regular_file(path)
    try:
        reader = _open(path)
    except VideoDecodeError as decord_error:
        try:  # PyAV opens some streams decord's filter graph refuses
            return _decode_with_pyav(path, choose, sink, 0)
        except VideoDecodeError as pyav_error:  # the more telling reason of the two
            raise pyav_error if str(pyav_error).startswith("not a video") else decord_error from None
    num_frames = len(reader)
    if num_frames <= 0:
        return _decode_with_pyav(path, choose, sink, num_frames)
    wanted = choose(num_frames)
    unique, inverse = np.unique(wanted, return_inverse=True)
    fps = float(reader.get_avg_fps() or 0.0)
    size = _frame_size(path)
    if size is not None and len(unique) * size[0] * size[1] * 3 > FRAME_BUDGET_BYTES:
        del reader
        return _decode_with_pyav(path, choose, sink, num_frames,
                                 f"{len(unique)} distinct frames of {size[0]}x{size[1]} decoded one at a time")
    frames = _get_batch(reader, unique)
    if frames is None:
        return _decode_with_pyav(path, choose, sink, num_frames)
    height, width = frames.shape[1:3]
    sink.start(VideoInfo(num_frames, fps, int(width), int(height), num_frames / fps if fps > 0 else 0.0),
               inverse.reshape(np.shape(wanted)))
    for k, frame in enumerate(frames):
        sink.frame(k, frame)
    return []
