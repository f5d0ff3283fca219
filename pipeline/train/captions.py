"""Caption files: the sentences that describe a store's videos, for text-video retrieval.

Three layouts, told apart by their content (never by the file's name):
- the MSR-VTT annotation JSON: `{"videos": [{"video_id", "split", ...}], "sentences": [{"video_id", "caption",
  ...}]}` (train_val_videodatainfo.json, test_videodatainfo.json, CLIP4Clip's MSRVTT_data.json); its splits
  train/validate/test become train/val/test;
- a CSV or TSV whose first row names its columns: a video column (video, video_id, path, video_path or
  clip_name), a caption column (caption, sentence or text) and optionally split; other columns are ignored, so
  the 1k-A test CSV (`key,vid_key,video_id,sentence`) is one;
- a CSV or TSV without a header: `video,caption` per line (a caption with unquoted commas keeps them).
Blank lines and lines starting with `#` are skipped; a byte-order mark is ignored.

A video is named by its path as the store records it, or by its id: the path's stem (`video7020` for
`videos/video7020.mp4`). Captions of videos the store does not hold are `unknown`, kept for the report, never
dropped silently. A row that repeats an earlier one (the same store video and sentence, however the video is
named) is counted once: scored twice it would be its own distractor and a second query; the repeats are
counted (`repeated`) for the report.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import canonical_split

VIDEO_COLUMNS = ("video", "video_id", "path", "video_path", "clip_name")  # the first present names the video
CAPTION_COLUMNS = ("caption", "sentence", "text")
SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class CaptionFile:
    """A caption file as read: per caption, the video as the file names it and the sentence, in file order."""

    path: Path
    sha256: str  # of the file's bytes
    videos: tuple[str, ...]
    sentences: tuple[str, ...]
    splits: dict[str, str] | None  # video name -> train/val/test..., when the file gives splits

    @property
    def source(self) -> dict[str, Any]:
        """How results and cached embeddings name the file: its absolute path and its content's hash."""
        return {"captions": str(self.path.resolve()), "captions_sha256": self.sha256}


def read_captions(path: Path) -> CaptionFile:
    """Parse a caption file of any of the three layouts; bad content is an InputError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"--captions {path}: a folder; name the caption file in it")
    if not path.is_file():
        raise InputError(f"--captions {path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        pairs, splits = _parse_json(text) if text.lstrip().startswith(("{", "[")) else _parse_table(text)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not pairs:
        raise InputError(f"{path}: no captions")
    videos, sentences = zip(*pairs)
    return CaptionFile(path, hashlib.sha256(data).hexdigest(), videos, sentences, splits)


def _parse_json(text: str) -> tuple[list[tuple[str, str]], dict[str, str] | None]:
    """MSR-VTT's annotation layout: sentences with video_id and caption; videos with video_id and split. Any
    other JSON is refused naming what differs (a CSV parser would only see odd lines)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    layout = 'expected the MSR-VTT layout: {"videos": [...], "sentences": [{"video_id", "caption"}]}'
    if not isinstance(data, dict):
        raise InputError(f"the JSON is {_json_kind(data)}; {layout}")
    sentences, videos = data.get("sentences"), data.get("videos", [])
    if not isinstance(sentences, list):
        found = 'no "sentences"' if sentences is None else f'"sentences" is {_json_kind(sentences)}'
        raise InputError(f"{found}; {layout}")
    if not isinstance(videos, list):
        raise InputError(f'"videos" is {_json_kind(videos)}; {layout}')
    pairs = []
    for n, item in enumerate(sentences):
        video, caption = (item.get("video_id"), item.get("caption")) if isinstance(item, dict) else (None, None)
        if not isinstance(video, (str, int)) or not isinstance(caption, str):
            raise InputError(f"sentence {n}: expected an object with video_id and caption, got {str(item)[:80]!r}")
        pairs.append(_pair(str(video), caption, f"sentence {n}"))
    splits: dict[str, str] = {}
    for n, item in enumerate(videos):
        video, split = (item.get("video_id"), item.get("split")) if isinstance(item, dict) else (None, None)
        if isinstance(video, (str, int)) and isinstance(split, str):
            _set_split(splits, str(video).strip(), split, f"video {n}")
    return pairs, splits or None


def _json_kind(value: Any) -> str:
    """How a message names a JSON value: "a list", "an object", else the value itself ("5")."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return json.dumps(value)[:40]


def _parse_table(text: str) -> tuple[list[tuple[str, str]], dict[str, str] | None]:
    """CSV or TSV (a tab in the first row makes it TSV), with a header that names its columns or without."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return [], None
    delimiter = "\t" if "\t" in lines[0][1] else ","
    rows = [(n, cells) for (n, _), cells in zip(lines, csv.reader([line for _, line in lines], delimiter=delimiter))]
    header = [cell.strip().lower() for cell in rows[0][1]]
    video = next((header.index(name) for name in VIDEO_COLUMNS if name in header), None)
    caption = next((header.index(name) for name in CAPTION_COLUMNS if name in header), None)
    if video is not None and caption is not None:
        split = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None
        return _named_columns(rows[1:], video, caption, split, len(header))
    pairs = []
    for n, cells in rows:
        if len(cells) < 2:
            raise InputError(f"line {n}: expected video,caption (or a header naming a video column, one of "
                             f"{', '.join(VIDEO_COLUMNS)}, and a caption column, one of {', '.join(CAPTION_COLUMNS)})"
                             f", got {delimiter.join(cells)!r}")
        pairs.append(_pair(cells[0], delimiter.join(cells[1:]), f"line {n}"))
    return pairs, None


def _named_columns(rows: list[tuple[int, list[str]]], video: int, caption: int, split: int | None, width: int
                   ) -> tuple[list[tuple[str, str]], dict[str, str] | None]:
    pairs: list[tuple[str, str]] = []
    splits: dict[str, str] = {}
    for n, cells in rows:
        if len(cells) != width:
            raise InputError(f"line {n}: {len(cells)} columns, the header names {width} (quote a caption that "
                             "holds the delimiter)")
        pairs.append(_pair(cells[video], cells[caption], f"line {n}"))
        if split is not None and cells[split].strip():
            _set_split(splits, pairs[-1][0], cells[split], f"line {n}")
    return pairs, splits or None


def _pair(video: str, caption: str, where: str) -> tuple[str, str]:
    video, caption = video.strip(), " ".join(caption.split())
    if not video or not caption:
        raise InputError(f"{where}: {'no video' if not video else 'an empty caption'}")
    return video, caption


def _set_split(splits: dict[str, str], video: str, split: str, where: str) -> None:
    split = canonical_split(split)
    if splits.setdefault(video, split) != split:
        raise InputError(f"{where}: video {video!r} is in split {split!r} here and {splits[video]!r} before")


@dataclass(frozen=True)
class Captions:
    """A caption file matched to a store: each caption's video as a store index (-1: the store does not hold
    it), and the split the file gives each store video ("" where it names none), when it gives splits."""

    file: CaptionFile
    video: np.ndarray  # (captions,) int64
    splits: np.ndarray | None  # (store videos,) str
    unknown: tuple[str, ...]  # the videos the file names that the store does not hold, each once
    repeated: np.ndarray  # (captions,) bool: the row repeats an earlier one (same store video and sentence)

    @property
    def unknown_captions(self) -> int:
        return int((self.video < 0).sum())

    @property
    def repeated_captions(self) -> int:
        return int(self.repeated.sum())

    def repeated_note(self) -> str | None:
        """The one line on stderr when rows repeat earlier ones."""
        if not self.repeated_captions:
            return None
        return (f"{self.file.path}: {self.repeated_captions} caption rows repeat an earlier row (the same video and "
                "sentence); each pair is counted once")

    def captioned(self, videos: np.ndarray) -> np.ndarray:
        """Those of `videos` (store indices) that have at least one caption, in the given order."""
        return videos[np.isin(videos, self.video)]

    def of(self, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The captions of `videos` (distinct store indices): (their positions in the file, in file order,
        repeats left out; for each, the position of its video in `videos`)."""
        position = np.full(max(self.video.max(initial=-1), videos.max(initial=-1)) + 1, -1, np.int64)
        position[videos] = np.arange(len(videos))
        rows = np.flatnonzero((self.video >= 0) & ~self.repeated)
        rows = rows[position[self.video[rows]] >= 0]
        return rows, position[self.video[rows]]


def match_captions(file: CaptionFile, reader: CacheReader) -> Captions:
    """Each caption's video in the store: its exact store path, else the one store video whose stem is the
    name (or the name's stem: `video7020.mp4`, `other/root/video7020.mp4`). A name that fits several store
    videos is refused, since either choice could be wrong."""
    paths = [str(p) for p in reader.column("path")]
    exact = {path: i for i, path in enumerate(paths)}
    stems: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        stems.setdefault(PurePosixPath(path).stem, []).append(i)

    def find(name: str) -> int:
        if name in exact:
            return exact[name]
        normal = PurePosixPath(name.replace("\\", "/"))
        if str(normal) in exact:
            return exact[str(normal)]
        fits = stems.get(name) or stems.get(normal.stem) or []
        if len(fits) > 1:
            raise InputError(f"{file.path}: video {name!r} fits {len(fits)} videos of {reader.path} "
                             f"({', '.join(paths[i] for i in fits[:3])}); name it by its path in the store")
        return fits[0] if fits else -1

    where = {name: find(name) for name in dict.fromkeys(file.videos + tuple(file.splits or ()))}
    splits = None
    if file.splits is not None:
        splits = np.full(len(paths), "", dtype=object)
        for name, split in file.splits.items():
            if where[name] >= 0:
                splits[where[name]] = split
    unknown = tuple(name for name in dict.fromkeys(file.videos) if where[name] < 0)
    video = np.array([where[name] for name in file.videos], np.int64)
    seen: set[tuple[int, str]] = set()
    repeated = np.zeros(len(video), bool)
    for row, pair in enumerate(zip(video.tolist(), file.sentences)):
        repeated[row] = pair[0] >= 0 and pair in seen
        seen.add(pair)
    return Captions(file, video, splits, unknown, repeated)
