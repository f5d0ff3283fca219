"""Untrimmed test videos written with PyAV, returned with what is in them.

Frames carry their own serial number as a 4x4 grid of black and white blocks (16 bits, robust to H.264, VP9
and MPEG-4 at 64x48, and readable from a squashed crop of the whole frame), so a test can tell which written
frame a decoder delivered and, through `WrittenVideo.times`, at what presentation time it was written.
The action videos put instances of known classes and times on a background with distractors; some classes
differ in appearance, others only in the direction they move.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from clipcache.pipeline.demo.synthetic import CODECS, DEMO_CLASSES

SIZE = (48, 64)  # height, width
GRID = 4  # GRID x GRID code blocks: serials up to 2**16 - 1
MOTION_KINDS = ("square_left", "square_right")  # the same white square, moving one way or the other
ACTION_KINDS = (*DEMO_CLASSES, *MOTION_KINDS)


@dataclass(frozen=True)
class WrittenVideo:
    path: Path
    times: list[Fraction]  # presentation time (seconds) of each written frame; index = the frame's serial
    last_duration: Fraction  # how long the last frame is shown

    @property
    def end(self) -> Fraction:
        return self.times[-1] + self.last_duration


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    kind: str


def code_frame(serial: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A frame whose blocks spell `serial` in binary, most significant bit top-left, row by row."""
    if not 0 <= serial < 2 ** (GRID * GRID):
        raise ValueError(f"serial {serial} does not fit {GRID * GRID} bits")
    bits = np.array([(serial >> (GRID * GRID - 1 - b)) & 1 for b in range(GRID * GRID)], np.uint8).reshape(GRID, GRID)
    cells = bits.repeat(size[0] // GRID, 0).repeat(size[1] // GRID, 1) * 255
    return np.repeat(cells[:, :, None], 3, axis=2)


def read_code(image: np.ndarray) -> int:
    """The serial a frame (or any crop that shows the whole frame, such as a squashed view) spells."""
    height, width = image.shape[:2]
    serial = 0
    for row in range(GRID):
        for col in range(GRID):
            top, left = row * height // GRID, col * width // GRID
            cell = image[top + height // (4 * GRID): top + 3 * height // (4 * GRID),
                         left + width // (4 * GRID): left + 3 * width // (4 * GRID)]
            serial = serial << 1 | int(cell.mean() > 127)
    return serial


def write_timed(path: Path, frames: Iterable[np.ndarray], times: list[Fraction], time_base: Fraction,
                codec: str = "h264", last_duration: Fraction | None = None, faststart: bool = False) -> WrittenVideo:
    """Encode frames at the given presentation times (seconds, multiples of `time_base`), each packet's
    duration set to the gap to the next frame, so the container records the true end. Frames may be a
    generator: none is held after it is encoded."""
    name, pix_fmt = CODECS[codec]
    gaps = [b - a for a, b in zip(times, times[1:])]
    last_duration = last_duration or (min(gaps) if gaps else time_base)
    duration_of = {int(t / time_base): int(d / time_base) for t, d in zip(times, [*gaps, last_duration])}
    if any(t % time_base for t in times):
        raise ValueError("every time must be a multiple of the time base")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options={"movflags": "faststart"} if faststart else {}) as container:
        rate = 1 / (min(gaps) if gaps else time_base)
        stream = container.add_stream(name, rate=Fraction(rate).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = SIZE[1], SIZE[0], pix_fmt
        stream.codec_context.thread_count = 1  # the same frames always give the same file (as write_video)
        stream.codec_context.time_base = time_base
        stream.time_base = time_base

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                packet.duration = duration_of[int(packet.pts * packet.time_base / time_base)]
                container.mux(packet)

        count = 0
        for frame, time in zip(frames, times, strict=True):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts, video_frame.time_base = int(time / time_base), time_base
            mux(stream.encode(video_frame))
            count += 1
        mux(stream.encode())
    return WrittenVideo(path, list(times), last_duration)


def _coded(count: int) -> Iterator[np.ndarray]:
    """Coded frames with fresh noise, which makes every frame cost bits (a cut file then ends mid-stream)."""
    rng = np.random.default_rng(0)
    for serial in range(count):
        noise = rng.integers(-40, 41, (*SIZE, 3))
        yield np.clip(code_frame(serial).astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_cfr(path: Path, seconds: float, fps: int = 10, codec: str = "h264", faststart: bool = False) -> WrittenVideo:
    """Constant frame rate, `seconds` long (a whole number of frames), coded frames."""
    count = round(seconds * fps)
    times = [Fraction(i, fps) for i in range(count)]
    return write_timed(path, _coded(count), times, Fraction(1, fps), codec, faststart=faststart)


def vfr_times(seconds: float) -> list[Fraction]:
    """Bursts of 25 fps (40 ms apart) for 0.6 s and stretches of 5 fps (200 ms apart) for 1.4 s, in turn,
    with a 70 ms step between them: times no single rate explains, all whole milliseconds."""
    times, now, burst = [], Fraction(0), True
    while now < seconds:
        stop = now + Fraction(6 if burst else 14, 10)
        step = Fraction(40 if burst else 200, 1000)
        while now < stop and now < seconds:
            times.append(now)
            now += step
        now += Fraction(70, 1000) - step
        burst = not burst
    return times


def write_vfr(path: Path, seconds: float, codec: str = "h264") -> WrittenVideo:
    """Variable frame rate (`vfr_times`) in a millisecond time base (.mkv or .mp4), coded frames."""
    times = vfr_times(seconds)
    return write_timed(path, _coded(len(times)), times, Fraction(1, 1000), codec)


_DURATION_FIELDS = {  # MP4 box -> offsets of its duration after the box type, for header versions 0 and 1
    b"mvhd": ((20, ">I"), (28, ">Q")), b"tkhd": ((24, ">I"), (32, ">Q")), b"mdhd": ((20, ">I"), (28, ">Q"))}


def misstate_length(path: Path, factor: Fraction) -> None:
    """Scale the durations an MP4's headers state (movie, track and media headers) by `factor`, leaving the
    frames and their timestamps as they are: a container that misstates its length. FFmpeg takes a stream's
    length as the smaller of its media header's and its frames' sum, so only a factor below 1 shows."""
    data = bytearray(path.read_bytes())
    for box, fields in _DURATION_FIELDS.items():
        at = data.find(box)
        if at < 0:
            raise ValueError(f"{path.name} has no {box.decode()} box")
        offset, form = fields[data[at + 4]]  # the version byte follows the type
        (stated,) = struct.unpack_from(form, data, at + offset)
        struct.pack_into(form, data, at + offset, int(stated * factor))
    path.write_bytes(bytes(data))


def truncate(video: WrittenVideo, keep: float, path: Path) -> Path:
    """The first `keep` fraction of a file's bytes (write it with faststart so the MP4 index survives)."""
    data = video.path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _draw(frame: np.ndarray, centre: tuple[float, float], radius: int, colour: tuple[int, int, int],
          shape: str) -> None:
    yy, xx = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    dy, dx = yy - centre[0], xx - centre[1]
    inside = (abs(dy) < radius) & (abs(dx) < radius)
    if shape == "circle":
        inside = dy ** 2 + dx ** 2 < radius ** 2
    elif shape == "stripes":
        inside &= ((xx + yy) // 3) % 2 == 0
    frame[inside] = colour


def _action_frames(times: list[Fraction], segments: list[Segment], places: list[tuple[float, float]],
                   seed: int) -> Iterator[np.ndarray]:
    """Noisy background, a grey blob on a random walk and a flickering brightness (distractors), and each
    instance drawn while its time runs: appearance classes still at their place, motion classes crossing."""
    rng = np.random.default_rng(seed)
    height, width = SIZE
    background = rng.integers(70, 150, (height, width, 3)).astype(np.int16)
    blob = np.array([height / 2, width / 2])
    radius = height // 6
    for time in times:
        blob = np.clip(blob + rng.normal(0, 1.5, 2), radius, [height - radius, width - radius])
        frame = np.clip(background + int(rng.integers(-12, 13)), 0, 255).astype(np.uint8)
        _draw(frame, (blob[0], blob[1]), radius - 2, (110, 110, 110), "circle")
        for segment, (row, col) in zip(segments, places):
            if not segment.start <= time < segment.end:
                continue
            progress = float(time - Fraction(segment.start)) / (segment.end - segment.start)
            if segment.kind in MOTION_KINDS:
                travel = radius + progress * (width - 2 * radius)
                col = travel if segment.kind == "square_right" else width - travel
                _draw(frame, (row, col), radius, (240, 240, 240), "square")
            else:
                colour, shape = DEMO_CLASSES[segment.kind]
                _draw(frame, (row, col), radius, colour, shape)
        yield frame


def write_untrimmed(path: Path, duration: float, fps: int, instances: list[tuple[float, float, str]],
                    seed: int = 0, codec: str = "h264") -> list[Segment]:
    """An untrimmed video of `duration` seconds at `fps` holding the given (start, end, kind) action instances
    (kinds: ACTION_KINDS; instances may overlap) on a distracting background; returns them as Segments."""
    segments = []
    for start, end, kind in instances:
        if kind not in ACTION_KINDS:
            raise ValueError(f"kind {kind!r}: choose one of {', '.join(ACTION_KINDS)}")
        if not 0 <= start < end <= duration:
            raise ValueError(f"instance ({start}, {end}) is not inside 0..{duration} s")
        segments.append(Segment(float(start), float(end), kind))
    rng = np.random.default_rng([seed, 1])
    places = [(float(rng.uniform(SIZE[0] / 4, 3 * SIZE[0] / 4)), float(rng.uniform(SIZE[1] / 4, 3 * SIZE[1] / 4)))
              for _ in segments]
    times = [Fraction(i, fps) for i in range(round(duration * fps))]
    write_timed(path, _action_frames(times, segments, places, seed), times, Fraction(1, fps), codec)
    return segments


def annotated_store(root: Path, videos: list[tuple[str, list[tuple[float, float, str]], str]], duration: float,
                    rate: int) -> Path:
    """`root/store.zarr`: the action videos (name, instances, split) written at 8 fps, annotated by a CSV of their
    instances, extracted through the CLI at `rate` frames per second with the tiny model."""
    from conftest import TINY_CONFIG, run_cli

    rows = ["video,start,end,label,split"]
    for seed, (name, instances, split) in enumerate(videos):
        write_untrimmed(root / "videos" / f"{name}.mp4", duration, 8, instances, seed=seed)
        rows += [f"{name},{s},{e},{kind},{split}" for s, e, kind in instances]
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    store = root / "store.zarr"
    result = run_cli("extract", root / "videos", store, "--model-config", TINY_CONFIG, "--fps", str(rate),
                     "--annotations", root / "annotations.csv", "--workers", "1", "--quiet")
    assert result.code == 0, result
    return store
