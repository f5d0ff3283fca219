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
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from clipcache.pipeline.extract.decord_loader import load_decord

decord = load_decord()
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


@dataclass
class DecodedFrames:
    info: VideoInfo
    frames: np.ndarray  # (K, H, W, 3) uint8 RGB, each needed frame once
    notes: list[str] = field(default_factory=list)


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


def _pyav_frames(path: Path, keep: set[int] | None) -> tuple[int, dict[int, np.ndarray], float]:
    """Decode sequentially with PyAV: (decodable frame count, the kept frames, fps).

    The fallback for streams decord mis-decodes (some frame widths make its batch copy fail) and for
    files whose header promises frames that are not there; display rotation is applied here.
    """
    kept: dict[int, np.ndarray] = {}
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream (audio-only or not a video)")
            if container.format.name.endswith("_pipe") or container.format.name == "image2":
                raise VideoDecodeError(f"not a video file (a still image: {container.format.name})")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            try:
                for frame in container.decode(stream):
                    if keep is None or count in keep:
                        image = frame.to_ndarray(format="rgb24")
                        kept[count] = np.ascontiguousarray(np.rot90(image, (frame.rotation or 0) // 90))
                    count += 1
            except av.FFmpegError:
                pass  # a truncated or corrupt tail: the decodable frames end here
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"cannot decode: {str(exc).splitlines()[0]}") from None
    return count, kept, fps


def _decode_with_pyav(path: Path, choose: Callable[[int], np.ndarray], header_count: int
                      ) -> tuple[DecodedFrames, np.ndarray]:
    count, _, _ = _pyav_frames(path, keep=set())
    if count == 0:
        raise VideoDecodeError("no decodable frames (truncated or corrupt)")
    wanted = choose(count)
    unique, inverse = np.unique(wanted, return_inverse=True)
    _, kept, fps = _pyav_frames(path, keep=set(unique.tolist()))
    frames = np.stack([kept[i] for i in unique.tolist()])
    height, width = frames.shape[1:3]
    notes = [f"decoded with PyAV: decord failed on this stream (header {header_count} frames, {count} decode)"]
    info = VideoInfo(count, fps, int(width), int(height), count / fps if fps > 0 else 0.0)
    return DecodedFrames(info, frames, notes), inverse.reshape(np.shape(wanted))


def _get_batch(reader: "decord.VideoReader", indices: np.ndarray) -> np.ndarray | None:
    with _native_stderr():
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()
        except Exception:
            return None
    return frames if len(frames) == len(indices) else None


def _check_regular_file(path: Path) -> None:
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


def decode_frames(path: Path, choose: Callable[[int], np.ndarray]) -> tuple[DecodedFrames, np.ndarray]:
    """Decode the frames `choose(num_frames)` asks for (any shape), each distinct frame once.

    Returns the distinct frames and an index array of the requested shape into them.
    """
    _check_regular_file(path)
    try:
        reader = _open(path)
    except VideoDecodeError as decord_error:
        try:  # PyAV opens some streams decord's filter graph refuses
            return _decode_with_pyav(path, choose, 0)
        except VideoDecodeError as pyav_error:  # the more telling reason of the two
            raise pyav_error if str(pyav_error).startswith("not a video") else decord_error from None
    num_frames = len(reader)
    if num_frames <= 0:
        return _decode_with_pyav(path, choose, num_frames)
    wanted = choose(num_frames)
    unique, inverse = np.unique(wanted, return_inverse=True)
    frames = _get_batch(reader, unique)
    if frames is None:
        return _decode_with_pyav(path, choose, num_frames)
    fps = float(reader.get_avg_fps() or 0.0)
    height, width = frames.shape[1:3]
    info = VideoInfo(num_frames, fps, int(width), int(height), num_frames / fps if fps > 0 else 0.0)
    return DecodedFrames(info, frames), inverse.reshape(np.shape(wanted))
