"""The frames a dense (fixed-rate) store holds for one untrimmed video, decoded in one sequential pass.

Which frames, for a rate of F samples per second:
- times are presentation timestamps (pts x time base), relative to the first decoded frame's, which is time 0;
  frame counts and the container's stated duration or rate are never used, so variable-frame-rate files and
  containers that misstate their length come out right;
- the video ends at the last decoded frame's time plus its duration (the frame's own, else the median interval
  between frames, else the stream's stated rate, else 1/F);
- sample k (time k/F) exists for every k >= 0 with k/F < end (`sample_count`), and takes the decoded frame
  nearest to k/F, the earlier of two at the same distance; its stored time is that frame's own time, so it
  lies within half the local frame interval of k/F. Where F exceeds the local frame rate a frame serves
  several samples: it is cropped once and the crop reused;
- F = None (or 0) stores every decoded frame;
- frames whose timestamp does not advance past the previous frame's (or that have none) are skipped, with a note.

This is not what ffmpeg's fps filter does (libavfilter/vf_fps.c, round=near): it rounds each frame's time to the
output grid and gives output tick k the LAST frame whose rounded time is <= k, i.e. the last frame before
(k + 1/2)/F, so 30 fps taken to 1 fps yields frames 14, 44, 74 (times 0.47, 1.47, ...) where this rule takes
frames 0, 30, 60; its frame count is round(end x F) rather than ceil. Nearest-by-time keeps every stored time
within half a frame interval of its grid time, which is what localisation labels are measured against.

The decision needs one frame of look-ahead: sample k goes to the previous frame once the next frame's time is
past the midpoint, so only the previous decoded frame is held and pieces of at most `piece` samples leave as
they fill; memory does not grow with the video's length. Only chosen frames are converted to RGB (the
expensive step) and cropped with `views.eval_views`, exactly as the clip path crops. A corrupt or truncated
tail ends the video at the last decodable frame, with a note.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from clipcache import InputError
from clipcache.cache.dense import sample_rate
from clipcache.pipeline.extract.video import VideoDecodeError, VideoInfo, check_regular_file
from clipcache.pipeline.extract.views import ViewRecipe, eval_views

MISSTATED = 0.1  # a stated length this far (relative) from the decoded one earns a note


@dataclass(frozen=True)
class DensePiece:
    """Consecutive samples of one video."""

    pixels: np.ndarray  # (n, V, S, S, 3) uint8, V = the recipe's crops
    time: np.ndarray  # (n,) float64 seconds since the first frame: the chosen frame's own time
    frame_index: np.ndarray  # (n,) int32 decoded frame number of each sample's frame


def sample_count(end: float | Fraction, fps: float | Fraction) -> int:
    """How many samples a video ending at `end` seconds stores at `fps`: the k >= 0 with k/fps < end."""
    rate = sample_rate(fps)
    if rate is None:
        raise InputError("sample_count needs a frame rate (every frame has no fixed count)")
    return max(0, math.ceil(Fraction(end) * rate))


def open_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream, or VideoDecodeError when there is none or the file is a still image."""
    if not container.streams.video:
        raise VideoDecodeError("no video stream (audio-only or not a video)")
    if container.format.name.endswith("_pipe") or container.format.name == "image2":
        raise VideoDecodeError(f"not a video file (a still image: {container.format.name})")
    return container.streams.video[0]


def _stated_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """The length the container's header claims, in seconds (stream's own, else the container's)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def estimate(path: Path, fps: float | None) -> tuple[float, int] | None:
    """(duration seconds, samples) from the container's header alone, for a dry run: an ESTIMATE, since headers
    can misstate the length (decoding decides). None when the header does not say or the file cannot be opened."""
    rate = sample_rate(fps)
    try:
        with av.open(str(path)) as container:
            stream = open_video_stream(container)
            duration = _stated_duration(container, stream)
            if duration is None:
                return None
            if rate is not None:
                return duration, sample_count(duration, rate)
            native = stream.average_rate or stream.guessed_rate
            frames = stream.frames or (round(duration * native) if native else 0)
            return (duration, int(frames)) if frames else None
    except (av.FFmpegError, OSError, VideoDecodeError):
        return None


class _Pieces:
    """Fills pieces of at most `size` samples; a crop chosen again is reused rather than made again."""

    def __init__(self, size: int, views: ViewRecipe) -> None:
        self.size, self.views = size, views
        self.crop_of: tuple[int, np.ndarray] | None = None  # (frame number, its crops): the last frame cropped
        self._new()

    def _new(self) -> None:
        shape = (self.size, self.views.crops, self.views.image_size, self.views.image_size, 3)
        self.pixels, self.time = np.empty(shape, np.uint8), np.empty(self.size, np.float64)
        self.frame_index, self.count = np.empty(self.size, np.int32), 0

    def add(self, number: int, time: Fraction, frame: av.VideoFrame) -> DensePiece | None:
        """Store one sample; returns the piece when it is full."""
        if self.crop_of is None or self.crop_of[0] != number:
            rgb = frame.to_ndarray(format="rgb24")
            rgb = np.ascontiguousarray(np.rot90(rgb, (frame.rotation or 0) // 90))
            self.crop_of = number, np.stack(eval_views(Image.fromarray(rgb), self.views))
        n = self.count
        self.pixels[n], self.time[n], self.frame_index[n] = self.crop_of[1], float(time), number
        self.count += 1
        return self.flush() if self.count == self.size else None

    def flush(self) -> DensePiece | None:
        """The samples held so far as a piece (None when there are none); the next samples start a new one."""
        if self.count == 0:
            return None
        n = self.count
        piece = DensePiece(self.pixels[:n], self.time[:n], self.frame_index[:n])
        self._new()
        return piece


class DenseFrames:
    """Iterating yields the video's DensePieces in order (decoding it anew each time); once iteration has
    finished, `info` (sizes after rotation, decoded frames, rate measured from the timestamps, duration =
    the end) and `notes` describe the video. Raises VideoDecodeError with a one-line reason for a file that
    gives no frames."""

    def __init__(self, path: Path, fps: float | None, views: ViewRecipe, piece: int) -> None:
        if piece < 1:
            raise InputError(f"piece must hold at least one sample, got {piece}")
        self.path, self.rate, self.views, self.piece = Path(path), sample_rate(fps), views, piece
        self.info: VideoInfo | None = None
        self.notes: list[str] = []

    def __iter__(self) -> Iterator[DensePiece]:
        check_regular_file(self.path)
        self.info, self.notes = None, []
        try:
            container = av.open(str(self.path))
        except av.FFmpegError as exc:
            raise VideoDecodeError(f"cannot open: {_first_line(exc)}") from None
        with container:
            yield from self._pieces(container, open_video_stream(container))

    def _decoded(self, container: av.container.InputContainer,
                 stream: av.video.stream.VideoStream) -> Iterator[tuple[int, av.VideoFrame]]:
        """(decoded frame number, frame) for every decodable frame. A packet that cannot be read or decoded ends
        the video there, after the frames the decoder still holds (its reordering delay) are drained."""
        number, packets, error = 0, container.demux(stream), None
        while error is None:
            try:
                frames = stream.decode(next(packets))
            except StopIteration:
                break
            except av.FFmpegError as exc:
                error, frames = exc, _drained(stream)
            for frame in frames:
                yield number, frame
                number += 1
        if error is not None:
            self.notes.append(f"decoding stopped after {number} frames ({_first_line(error)}): "
                              "the video ends at the last decodable frame")

    def _pieces(self, container: av.container.InputContainer,
                stream: av.video.stream.VideoStream) -> Iterator[DensePiece]:
        pieces, rate = _Pieces(self.piece, self.views), self.rate
        intervals: Counter[Fraction] = Counter()  # between consecutive timed frames (exact, and few distinct)
        origin: Fraction | None = None
        previous: tuple[int, Fraction, av.VideoFrame] | None = None  # the one frame of look-ahead
        k, decoded, timed, skipped = 0, 0, 0, 0
        for number, frame in self._decoded(container, stream):
            decoded += 1
            if frame.pts is None:
                skipped += 1
                continue
            time = frame.pts * (frame.time_base or stream.time_base)
            origin = time if origin is None else origin
            time -= origin
            if previous is not None:
                if time <= previous[1]:
                    skipped += 1
                    continue
                intervals[time - previous[1]] += 1
                midpoint = (previous[1] + time) / 2  # samples up to here are nearest the previous frame (ties too)
                while (k / rate <= midpoint) if rate else k < timed:
                    if full := pieces.add(*previous):
                        yield full
                    k += 1
            previous, timed = (number, time, frame), timed + 1
        if previous is None:
            raise VideoDecodeError("no decodable frames (truncated or corrupt)" if skipped == 0 else
                                   f"no presentation timestamps on any of its {skipped} frames")
        end = previous[1] + self._last_duration(previous[2], intervals, stream)
        while (k / rate < end) if rate else k < timed:
            if full := pieces.add(*previous):
                yield full
            k += 1
        if rest := pieces.flush():
            yield rest
        self._finish(previous[2], decoded, timed, skipped, end, _stated_duration(container, stream))

    def _last_duration(self, frame: av.VideoFrame, intervals: Counter[Fraction],
                       stream: av.video.stream.VideoStream) -> Fraction:
        """The last frame's display time: its own duration, else the median interval, else a stated rate."""
        if frame.duration:
            return frame.duration * (frame.time_base or stream.time_base)
        if intervals:
            middle, seen = (sum(intervals.values()) - 1) // 2, 0
            for interval in sorted(intervals):
                seen += intervals[interval]
                if seen > middle:
                    return interval
        native = stream.average_rate or stream.guessed_rate
        return 1 / Fraction(native) if native else (1 / self.rate if self.rate else Fraction(0))

    def _finish(self, last: av.VideoFrame, decoded: int, timed: int, skipped: int, end: Fraction,
                stated: float | None) -> None:
        turned = (last.rotation or 0) % 180 == 90
        width, height = (last.height, last.width) if turned else (last.width, last.height)
        self.info = VideoInfo(decoded, float(timed / end) if end else 0.0, width, height, float(end))
        if skipped:
            self.notes.append(f"{skipped} frames without an advancing timestamp skipped")
        if stated is not None and abs(stated - float(end)) > MISSTATED * float(end):
            self.notes.append(f"the container states {stated:.2f} s; its decodable frames end at {float(end):.2f} s")


def _drained(stream: av.video.stream.VideoStream) -> list[av.VideoFrame]:
    """The frames a decoder still holds after a bad packet (none when it cannot even be flushed)."""
    try:
        return stream.decode(None)
    except av.FFmpegError:
        return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
