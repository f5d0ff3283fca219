"""Temporal annotations of untrimmed videos, for action localisation: reading the formats researchers have,
checking them, and turning them into a store's segment table (`cache/segments.py`).

Formats, told apart by the path and its content (several paths merge into one set of annotations):

| format | files | splits, durations |
|---|---|---|
| `thumos14` | folder of `<Class>_val.txt` / `<Class>_test.txt`: `video start end` (seconds) | val / test |
| `activitynet` | JSON `{"database": {id: {"subset", "duration", "annotations": [{"segment", "label"}]}}}` | given |
| `actionformer` | the same JSON with a video's `fps` or an annotation's `label_id` (ActionFormer, OpenTAD) | given |
| `csv` | `video,start,end,label[,split]`, tabs in `.tsv` (or a tab in the first line), header optional | column |

THUMOS14 trains on its validation videos and tests on its test videos: its `_val` files give split `val`, so a
head is trained with `train-head --train-split val`. `Ambiguous_*.txt` regions are neither action nor background:
they are kept as ambiguous segments (label -1 in the store), not as a class; a CSV row labelled `Ambiguous` is one
too. Many published works drop the test videos video_test_0000270, video_test_0001292 and video_test_0001496
(wrong or only ambiguous annotations); they are kept here, as the files give them: leave them out of the
evaluation if a comparison needs it. CliffDiving instances are also listed as Diving: both are kept (two labels).
Class order: THUMOS14 by file name, ActivityNet and CSV in order of first appearance, ActionFormer by `label_id`
(a class's index is its rank among the label_ids, which is the label_id itself when they run 0..K-1); several
paths add their new classes in the order the paths are given, so fix that order (or pass `classes`) to keep
the numbering of stores made from different files equal. A segment
given in seconds (`segment`) is taken as is; ActionFormer's `segment(frames)` is used, divided by the video's
`fps`, only where seconds are absent. Video names match store videos by file stem, with or without ActivityNet's
`v_` prefix (an exact stem first).

Nothing is dropped or changed silently: every rule counts what it touched, kept as `counts` in the store, and is
printed as one line per kind with a few examples (`Problems.lines`). Rules, in the order they are judged (a
segment counts under the first that drops it):

| kind | action |
|---|---|
| video not in store | drop: the name matches no store video |
| ambiguous video name | drop: the name matches several store videos |
| unknown label | drop: a label outside the class list, or an ActionFormer label_id that disagrees with its label |
| non-finite | drop: a start or end that is NaN or infinite |
| inverted | drop: end < start |
| empty | drop: end == start |
| before the video | drop: ends at or before 0 |
| negative start | clip the start to 0 |
| duplicate | keep one: the same video, start, end, label and ambiguity more than once |
| past the end | clip the end to the video's duration (`clip_table`, once the video is decoded) |
| after the end | drop: starts at or after the video's end (`clip_table`) |

Reading notes, also counted: blank lines (skipped), CRLF line ends and trailing whitespace (read as the text),
files in a THUMOS14 folder that are no class file (skipped), a video given two splits or two durations by
different files (the first kept).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.cache.schema import canonical_split
from clipcache.cache.segments import AMBIGUOUS_LABEL, SegmentTable, clip_segments
from clipcache.pipeline.extract.sources import VIDEO_EXTENSIONS

THUMOS14, ACTIVITYNET, ACTIONFORMER, CSV = "thumos14", "activitynet", "actionformer", "csv"
_THUMOS_FILE = re.compile(r"^(?P<label>.+)_(?P<split>val|test)\.txt$")
AMBIGUOUS = "Ambiguous"  # THUMOS14's name for regions that are neither action nor background

# what each problem kind does, and what it counts (printed by Problems.lines)
RULES: dict[str, tuple[str, str]] = {
    "video not in store": ("dropped", "segments"),
    "ambiguous video name": ("dropped", "segments"),
    "unknown label": ("dropped", "segments"),
    "non-finite": ("dropped", "segments"),
    "inverted": ("dropped", "segments"),
    "empty": ("dropped", "segments"),
    "before the video": ("dropped", "segments"),
    "negative start": ("clipped to 0", "segments"),
    "duplicate": ("one kept", "segments"),
    "past the end": ("clipped to the end", "segments"),
    "after the end": ("dropped", "segments"),
    "blank line": ("skipped", "lines"),
    "CRLF line ends": ("read", "files"),
    "trailing whitespace": ("read", "lines"),
    "ignored file": ("skipped", "files"),
    "split conflict": ("first kept", "videos"),
    "duration conflict": ("first kept", "videos"),
}
EXAMPLES = 3

# a table's first row is a header when every cell is one of these (lower case) names
_COLUMNS = {
    "video": {"video", "video_id", "video_name", "videos", "name", "path", "file", "filename", "id"},
    "start": {"start", "t_start", "t-start", "start_time", "begin"},
    "end": {"end", "t_end", "t-end", "end_time", "stop"},
    "label": {"label", "class", "class_name", "action", "category"},
    "split": {"split", "subset"},
}


@dataclass(frozen=True)
class Segment:
    video: str  # as the file names it
    start: float  # seconds
    end: float
    label: str
    ambiguous: bool = False
    origin: str = field(default="", compare=False)  # file:line or file:video, for reports


@dataclass
class Problems:
    """How many items each problem kind touched, with the first few described, so reports name real cases."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES:
            shown.append(example)

    def merged(self, other: Problems) -> Problems:
        result = Problems({**self.counts}, {k: [*v] for k, v in self.examples.items()})
        for kind, n in other.counts.items():
            result.counts[kind] = result.counts.get(kind, 0) + n
            shown = result.examples.setdefault(kind, [])
            shown += other.examples.get(kind, [])[:EXAMPLES - len(shown)]
        return result

    def lines(self) -> list[str]:
        """One line per kind, in the order of RULES: `kind: N units action, e.g. ...`."""
        lines = []
        for kind in (kind for kind in RULES if kind in self.counts):
            action, unit = RULES[kind]
            lines.append(f"{kind}: {self.counts[kind]} {unit} {action}, e.g. {'; '.join(self.examples[kind])}")
        return lines


@dataclass(frozen=True)
class Annotations:
    sources: tuple[dict[str, str], ...]  # {"name", "sha256"} of every file read
    format: str  # the formats read, joined by "+"
    segments: tuple[Segment, ...]
    classes: tuple[str, ...]
    splits: dict[str, str]  # video -> train/val/test, for every video a file names (annotated or not)
    durations: dict[str, float]  # video -> seconds, where the file gives it
    problems: Problems


@dataclass(frozen=True)
class VideoMatch:
    index: dict[str, int]  # annotation video name -> store video index
    ambiguous: dict[str, tuple[int, ...]]  # names that match several store videos


def read_annotations(paths: Sequence[Path | str]) -> Annotations:
    """Every path read in its format and merged; an unreadable or malformed file raises InputError naming it."""
    if not paths:
        raise InputError("no annotation files given")
    parts = [_read_path(Path(path)) for path in paths]
    problems = Problems()
    splits: dict[str, str] = {}
    durations: dict[str, float] = {}
    for part in parts:
        problems = problems.merged(part.problems)
        _merge_first(splits, part.splits, "split conflict", problems)
        _merge_first(durations, part.durations, "duration conflict", problems)
    return Annotations(
        sources=tuple(s for part in parts for s in part.sources),
        format="+".join(dict.fromkeys(part.format for part in parts)),
        segments=tuple(s for part in parts for s in part.segments),
        classes=tuple(dict.fromkeys(c for part in parts for c in part.classes)),
        splits=splits, durations=durations, problems=problems)


def match_videos(annotations: Annotations, store_paths: Sequence[str]) -> VideoMatch:
    """Store video index of each annotation video name: its file stem, else the stem with `v_` added or removed.
    Two names that differ only by `v_` may so reach one store video (their segments then meet there, and their
    duplicates are found); a name that reaches several store videos is reported, never guessed."""
    by_stem: dict[str, list[int]] = {}
    for index, path in enumerate(store_paths):
        by_stem.setdefault(PurePosixPath(path).stem, []).append(index)
    names = dict.fromkeys([*(s.video for s in annotations.segments), *annotations.splits, *annotations.durations])
    index: dict[str, int] = {}
    ambiguous: dict[str, tuple[int, ...]] = {}
    for name in names:
        stem = _stem(name)
        found = by_stem.get(stem) or by_stem.get(stem[2:] if stem.startswith("v_") else f"v_{stem}", [])
        if len(found) == 1:
            index[name] = found[0]
        elif found:
            ambiguous[name] = tuple(found)
    return VideoMatch(index, ambiguous)


def apply_rules(annotations: Annotations, store_paths: Sequence[str], classes: Sequence[str] | None = None
                ) -> tuple[SegmentTable, Problems]:
    """The segments of the store's videos after the rules of the module docstring, sorted by video and start;
    `classes` fixes the class list (else the files' own). Returns the table (its counts include the reading
    notes) and the problems, with examples, to print."""
    classes = tuple(classes) if classes is not None else annotations.classes
    label_index = {name: i for i, name in enumerate(classes)}
    match = match_videos(annotations, store_paths)
    problems = annotations.problems.merged(Problems())  # a copy: the annotations stay as read
    kept: dict[tuple[int, float, float, int, bool], None] = {}
    for segment in annotations.segments:
        row = _judge(segment, match, label_index, problems)
        if row is None:
            continue
        if row in kept:
            problems.add("duplicate", _describe(segment))
        kept[row] = None
    rows = sorted(kept)  # by video, then start
    video, start, end, label, ambiguous = (list(column) for column in zip(*rows)) if rows else ([], [], [], [], [])
    table = SegmentTable(np.array(video, np.int32), np.array(start, np.float64), np.array(end, np.float64),
                         np.array(label, np.int32), np.array(ambiguous, bool), classes, annotations.format,
                         annotations.sources, dict(problems.counts))
    return table, problems


def clip_table(table: SegmentTable, durations: Mapping[int, float]) -> tuple[SegmentTable, Problems]:
    """`cache.segments.clip_segments` with what it did counted (`past the end`, `after the end`) in the returned
    problems and added to the table's counts."""
    clipped, events = clip_segments(table, durations)
    found = Problems()
    for kind, what in events:
        found.add(kind, what)
    counts = Problems(dict(table.counts)).merged(found).counts
    return replace(clipped, counts=counts), found


# ---- the rules


def _judge(segment: Segment, match: VideoMatch, label_index: dict[str, int], problems: Problems
           ) -> tuple[int, float, float, int, bool] | None:
    """The row a segment becomes, or None when a rule drops it (counted)."""
    what = _describe(segment)
    start, end = segment.start, segment.end
    video = match.index.get(segment.video)
    label = AMBIGUOUS_LABEL if segment.ambiguous else label_index.get(segment.label)
    kind = ("ambiguous video name" if segment.video in match.ambiguous else
            "video not in store" if video is None else
            "unknown label" if label is None else
            "non-finite" if not (math.isfinite(start) and math.isfinite(end)) else
            "inverted" if end < start else
            "empty" if end == start else
            "before the video" if end <= 0 else None)
    if kind:
        problems.add(kind, what)
        return None
    assert video is not None and label is not None  # else a rule above applied
    if start < 0:
        problems.add("negative start", what)
        start = 0.0
    return video, start, end, label, segment.ambiguous


def _describe(segment: Segment) -> str:
    kind = "ambiguous" if segment.ambiguous else segment.label
    return f"{segment.video} [{segment.start:g}, {segment.end:g}] {kind} ({segment.origin})"


def _stem(name: str) -> str:
    """A video name without folders or a video file extension (`v_x.mp4` -> `v_x`)."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.stem if path.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS else path.name


def _merge_first(into: dict[str, Any], values: dict[str, Any], kind: str, problems: Problems) -> None:
    for video, value in values.items():
        if video in into and into[video] != value:
            problems.add(kind, f"{video}: {into[video]} kept, {value} also given")
        else:
            into.setdefault(video, value)


# ---- reading


@dataclass
class _Part:
    """What one path holds, before merging."""

    format: str
    sources: list[dict[str, str]] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    problems: Problems = field(default_factory=Problems)


def _read_path(path: Path) -> _Part:
    if path.is_dir():
        return _read_thumos_folder(path)
    if not path.exists():
        raise InputError(f"{path}: no such annotation file or folder")
    if _THUMOS_FILE.match(path.name):
        part = _Part(THUMOS14)
        _read_thumos_file(path, path.name, part)
        return part
    if path.suffix.lower() == ".json":
        return _read_json(path)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return _read_table(path)
    raise InputError(f"{path}: not an annotation file (a THUMOS14 folder or <Class>_val/_test.txt, .json, .csv, "
                     ".tsv or .txt)")


def _text(path: Path, name: str, part: _Part) -> str:
    """The file's text (a UTF-8 byte-order mark removed), its sha256 recorded as a source, CRLF noted."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start})") from None
    part.sources.append({"name": name, "sha256": hashlib.sha256(data).hexdigest()})
    if "\r\n" in text:
        part.problems.add("CRLF line ends", name)
    return text.replace("\r\n", "\n")


def _number(value: Any, what: str, where: str) -> float:
    """A JSON number or numeric text as float (NaN and infinities pass, for the rules to count)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{where}: {what} {value!r} is not a number")
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{where}: {what} {value!r} is not a number") from None


def _read_thumos_folder(folder: Path) -> _Part:
    part = _Part(THUMOS14)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for file in files:
        if _THUMOS_FILE.match(file.name):
            _read_thumos_file(file, f"{folder.name}/{file.name}", part)
        else:
            part.problems.add("ignored file", f"{folder.name}/{file.name}")
    if not part.sources:
        raise InputError(f"{folder}: no THUMOS14 annotation files (<Class>_val.txt or <Class>_test.txt) in it")
    return part


def _read_thumos_file(path: Path, name: str, part: _Part) -> None:
    """One class's file: `video start end` per line, whitespace separated; the class and split from its name."""
    found = _THUMOS_FILE.match(path.name)
    assert found is not None
    label, split = found["label"], canonical_split(found["split"])
    if label != AMBIGUOUS and label not in part.classes:
        part.classes.append(label)
    lines = _text(path, name, part).split("\n")
    if lines[-1] == "":
        lines.pop()  # after the newline that ends the file
    for number, line in enumerate(lines, 1):
        if not line.strip():
            part.problems.add("blank line", f"{name}:{number}")
            continue
        if line != line.rstrip():
            part.problems.add("trailing whitespace", f"{name}:{number}")
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise InputError(f"{where}: {len(fields)} fields, expected 'video start end'")
        video = fields[0]
        part.segments.append(Segment(video, _number(fields[1], "start", where), _number(fields[2], "end", where),
                                     label, label == AMBIGUOUS, f"{name}:{number}"))
        _merge_first(part.splits, {video: split}, "split conflict", part.problems)


def _read_json(path: Path) -> _Part:
    """ActivityNet-1.3, or ActionFormer/OpenTAD when a video has `fps` or an annotation `label_id`."""
    part = _Part(ACTIVITYNET)
    text = _text(path, path.name, part)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict) or not all(isinstance(v, dict) for v in database.values()):
        raise InputError(f"{path}: no 'database' object of videos (ActivityNet or ActionFormer JSON)")
    former = any("fps" in v or any(isinstance(a, dict) and "label_id" in a for a in v.get("annotations") or [])
                 for v in database.values())
    part.format = ACTIONFORMER if former else ACTIVITYNET
    ids: list[int | None] = []  # per segment, its label_id (ActionFormer)
    for video, entry in database.items():
        where = f"{path}: video {video}"
        if entry.get("subset"):
            part.splits[video] = canonical_split(str(entry["subset"]))
        if entry.get("duration") is not None:
            part.durations[video] = _number(entry["duration"], "duration", where)
        annotations = entry.get("annotations") or []
        if not isinstance(annotations, list):
            raise InputError(f"{where}: 'annotations' is not a list")
        for number, item in enumerate(annotations):
            start, end = _json_segment(item, entry, f"{where}, annotation {number}")
            part.segments.append(Segment(video, start, end, item["label"], False, f"{path.name}:{video}"))
            ids.append(int(_number(item["label_id"], "label_id", where)) if "label_id" in item else None)
            if item["label"] not in part.classes:
                part.classes.append(item["label"])
    if former:
        part.classes = _label_id_classes(ids, part)
    return part


def _json_segment(item: Any, entry: dict[str, Any], where: str) -> tuple[float, float]:
    if not isinstance(item, dict) or not isinstance(item.get("label"), str):
        raise InputError(f"{where}: an annotation needs a 'label' (text) and a 'segment'")
    if "segment" in item:
        segment, scale = item["segment"], 1.0
    elif "segment(frames)" in item and "fps" in entry:
        segment, scale = item["segment(frames)"], _number(entry["fps"], "fps", where)
    else:
        raise InputError(f"{where}: no 'segment' (seconds), nor 'segment(frames)' with the video's 'fps'")
    if not isinstance(segment, list) or len(segment) != 2:
        raise InputError(f"{where}: segment {segment!r} is not [start, end]")
    return _number(segment[0], "start", where) / scale, _number(segment[1], "end", where) / scale


def _label_id_classes(ids: list[int | None], part: _Part) -> list[str]:
    """Classes in label_id order. Each label_id takes the label it is most often given (ties: the first in the
    file), a label only one label_id; a segment whose label_id disagrees with its label is dropped, counted as
    an unknown label. Labels given without a label_id follow, in order of appearance."""
    pairs = Counter((label_id, s.label) for label_id, s in zip(ids, part.segments) if label_id is not None)
    by_id: dict[int, str] = {}
    for (label_id, label), _ in pairs.most_common():
        if label_id not in by_id and label not in by_id.values():
            by_id[label_id] = label
    of_label = {label: label_id for label_id, label in by_id.items()}
    numbered = {label for _, label in pairs}
    kept = []
    for label_id, segment in zip(ids, part.segments):
        if label_id is not None and of_label.get(segment.label) != label_id:
            part.problems.add("unknown label", f"{_describe(segment)}: label_id {label_id} disagrees with the file "
                                               f"({label_id} is {by_id.get(label_id)!r}, {segment.label!r} is "
                                               f"{of_label.get(segment.label)})")
        else:
            kept.append(segment)
    part.segments = kept
    unnumbered = dict.fromkeys(s.label for s in kept if s.label not in numbered)
    return [by_id[label_id] for label_id in sorted(by_id)] + list(unnumbered)


def _read_table(path: Path) -> _Part:
    """`video,start,end,label[,split]`; a first row made of column names is a header (columns in any order)."""
    part = _Part(CSV)
    text = _text(path, path.name, part)
    first = next((line for line in text.split("\n") if line.strip()), "")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in first else ","
    columns = ["video", "start", "end", "label", "split"]
    optional = 1
    for number, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), 1):
        where = f"{path}:{number}"
        if not any(cell.strip() for cell in row):
            part.problems.add("blank line", f"{path.name}:{number}")
            continue
        cells = [cell.strip() for cell in row]
        header = _header(cells, where) if number == 1 else None
        if header:
            columns, optional = header, 0
            continue
        if not len(columns) - optional <= len(cells) <= len(columns):
            raise InputError(f"{where}: {len(cells)} fields, expected {','.join(columns[:4])}"
                             f"{'[,split]' if optional else ''}")
        values = dict(zip(columns, cells))
        label = values["label"]
        part.segments.append(Segment(values["video"], _number(values["start"], "start", where),
                                     _number(values["end"], "end", where), label, label.lower() == AMBIGUOUS.lower(),
                                     f"{path.name}:{number}"))
        if label.lower() != AMBIGUOUS.lower() and label not in part.classes:
            part.classes.append(label)
        if values.get("split"):
            _merge_first(part.splits, {values["video"]: canonical_split(values["split"])}, "split conflict",
                         part.problems)
    return part


def _header(cells: list[str], where: str) -> list[str] | None:
    """The columns a header row names, or None when the row is not a header."""
    names = [next((column for column, known in _COLUMNS.items() if cell.lower() in known), None) for cell in cells]
    if None in names:
        return None
    absent = [column for column in ("video", "start", "end", "label") if column not in names]
    if absent:
        raise InputError(f"{where}: the header names no {', '.join(absent)} column")
    return names  # type: ignore[return-value]
