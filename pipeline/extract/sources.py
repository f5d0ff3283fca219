"""Which videos a run covers, with labels and splits: a folder layout or a list file.

Every source yields POSIX paths relative to the input root, sorted, so a video's index in the store is
the same on every run and a store can move with its videos. Rows of a list whose video is not found are
returned in `missing` for the caller to report, never dropped silently. Labels are kept as strings;
when every label is an integer ("0", "1", ..., "10") the classes are sorted numerically.
"""
from __future__ import annotations

import csv
import json
import os
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from clipcache import InputError

VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "avi", "mkv", "webm", "mov")
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
           "validation": "val", "test": "test", "testing": "test"}
_SPLIT_FOLDERS = ("train", "val", "validation", "test")
_HMDB_FILE = re.compile(r"_test_split(\d+)\.txt$")
_GLOB = re.compile(r"[*?\[]")
_SSV2_SPLIT = re.compile(r"(train|validation|test)", re.IGNORECASE)


@dataclass(frozen=True)
class VideoEntry:
    path: str  # POSIX path relative to the input root (so a store can move with its videos)
    label: str | None  # class name, None when unknown
    split: str  # "" when unknown


@dataclass(frozen=True)
class VideoList:
    root: Path  # absolute input root; entries' paths are relative to it
    entries: tuple[VideoEntry, ...]  # sorted by path
    classes: tuple[str, ...]  # sorted unique labels (labels of entries index into this)
    missing: tuple[str, ...]  # list rows whose video was not found (reported, not fatal)


@dataclass(frozen=True)
class _Row:
    ref: str  # what the list names: a relative or absolute path, a file name or a stem
    label: str | None
    split: str


def _split(name: str) -> str:
    """Known split spellings to train/val/test, so every source agrees with `--split val`."""
    name = name.strip().lower()
    return _SPLITS.get(name, name)


def _extensions(extensions: Sequence[str]) -> frozenset[str]:
    """"mp4", ".MP4" and " mp4" alike, as users type them on the command line."""
    return frozenset(e.strip().lower().lstrip(".") for e in extensions)


def _video_paths(root: Path, extensions: frozenset[str]) -> list[str]:
    """Sorted relative paths of the videos under root. Hidden files and folders are skipped; symlinked
    folders are followed (datasets are often linked in) but each real folder is walked once, so a link
    loop ends."""
    found, walked = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder).relative_to(root)
        found += [(base / f).as_posix() for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1][1:].lower() in extensions]
    return sorted(found)


def _folder_entry(path: str) -> VideoEntry:
    """root/<class>/<video>, root/<split>/<class>/<video> or root/<video> (no label); deeper folders:
    the label is the video's parent folder, the split still the first folder when it is a split name."""
    parts = PurePosixPath(path).parts
    split = _split(parts[0]) if len(parts) > 1 and parts[0].lower() in _SPLIT_FOLDERS else ""
    folders = parts[1:-1] if split else parts[:-1]
    return VideoEntry(path, folders[-1] if folders else None, split)


def _parse_table(path: Path) -> list[_Row]:
    """`path[,label[,split]]` rows, separated by tabs, commas or whitespace (whichever the first row
    uses). A first row whose first cell has no file extension ("path", "video") is a header; blank lines
    and `#` lines are skipped."""
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    delimiter = "\t" if "\t" in lines[0][1] else "," if "," in lines[0][1] else None
    rows = []
    for n, line in lines:
        cells = [c.strip() for c in (next(csv.reader([line], delimiter=delimiter)) if delimiter else line.split())]
        if n == lines[0][0] and not PurePosixPath(cells[0]).suffix:
            continue
        if (len(cells) > 3 and any(cells[3:])) or not cells[0]:
            raise InputError(f"line {n}: expected path[,label[,split]], got {line.strip()!r}")
        cells += [""] * (3 - len(cells))
        rows.append(_Row(cells[0], cells[1] or None, _split(cells[2])))
    return rows


def _parse_kinetics(path: Path) -> list[_Row]:
    """Kinetics annotations (`label,youtube_id,time_start,time_end,split`, extra columns ignored, no
    label in the test set) name clips `<youtube_id>_<start:06d>_<end:06d>.<ext>`."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        absent = {"youtube_id", "time_start", "time_end"} - set(reader.fieldnames or ())
        if absent:
            raise InputError(f"missing columns {', '.join(sorted(absent))}")
        rows = []
        for row in reader:
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise InputError(f"line {reader.line_num}: times are not numbers") from None
            rows.append(_Row(f"{row['youtube_id'].strip()}_{start:06d}_{end:06d}",
                             (row.get("label") or "").strip() or None, _split(row.get("split") or "")))
    return rows


def _parse_ucf(path: Path) -> list[_Row]:
    """UCF101 trainlistNN.txt (`Class/v_Class_g08_c01.avi 1`) or testlistNN.txt (path only); the label
    is the folder, the split the file name's."""
    split = "train" if path.name.lower().startswith("trainlist") else "test"
    refs = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return [_Row(ref, PurePosixPath(ref).parent.name or None, split) for ref in refs]


def _hmdb_files(spec: Path) -> list[Path]:
    """The split files a folder, a glob or a single `<class>_test_split<k>.txt` names. When several
    split numbers are present the lowest (split 1 of the official three) is used; pick another with a
    glob such as `splits/*_test_split2.txt`."""
    files = sorted(spec.glob("*_test_split*.txt") if spec.is_dir() else spec.parent.glob(spec.name))
    numbers = {int(m.group(1)) for f in files if (m := _HMDB_FILE.search(f.name))}
    if not numbers:
        raise InputError("no HMDB51 split files (<class>_test_split<k>.txt)")
    return [f for f in files if f.name.endswith(f"_test_split{min(numbers)}.txt")]


def _parse_hmdb(spec: Path) -> list[_Row]:
    """HMDB51 split files: lines `<video>.avi <0|1|2>` (1 train, 2 test, 0 not in this split, skipped);
    the label is the file name's class prefix."""
    rows = []
    for file in _hmdb_files(spec):
        label = _HMDB_FILE.split(file.name)[0]
        for n, line in enumerate(file.read_text().splitlines(), 1):
            cells = line.split()
            if cells and (len(cells) != 2 or cells[1] not in ("0", "1", "2")):
                raise InputError(f"{file.name} line {n}: expected '<video> <0|1|2>', got {line.strip()!r}")
            if cells and cells[1] != "0":
                rows.append(_Row(cells[0], label, "train" if cells[1] == "1" else "test"))
    return rows


def _parse_ssv2(path: Path) -> list[_Row]:
    """Something-Something v2 JSON (`[{"id", "template": "Holding [something]", ...}]`) names videos
    `<id>.<ext>`; the label is the template without brackets (the test set has none), the split the
    file name's."""
    items = json.loads(path.read_text(encoding="utf-8-sig"))
    if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
        raise InputError('expected a JSON list of {"id": ..., "template": ...} objects')
    found = _SSV2_SPLIT.search(path.name)
    split = _split(found.group(1)) if found else ""
    return [_Row(str(item["id"]), re.sub(r"[\[\]]", "", item["template"]) if "template" in item else None, split)
            for item in items]


def _parser(list_file: Path) -> tuple[Callable[[Path], list[_Row]], bool]:
    """The list's format, from its name and first characters, and whether its videos are looked up by
    name anywhere under root (named lists) rather than only at the listed path (plain tables)."""
    if list_file.is_dir() or _HMDB_FILE.search(list_file.name) or _GLOB.search(list_file.name):
        return _parse_hmdb, True
    if not list_file.exists():
        raise InputError("no such file")
    with list_file.open(encoding="utf-8-sig") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(("[", "{")):
        return _parse_ssv2, True
    if "youtube_id" in head.partition("\n")[0]:
        return _parse_kinetics, True
    if re.match(r"(train|test)list", list_file.name.lower()):
        return _parse_ucf, True
    return _parse_table, False


def _relative(ref: str, root: Path) -> str:
    """A listed path as a POSIX path relative to root; one that leads outside root is an error.
    Folders of absolute paths are resolved (root is), the file itself is not (symlink farms)."""
    path = Path(ref)
    if path.is_absolute():
        path = Path(os.path.realpath(path.parent), path.name)
        if not path.is_relative_to(root):
            raise InputError(f"{ref} lies outside the input root {root}")
        return path.relative_to(root).as_posix()
    relative = posixpath.normpath(path.as_posix())
    if relative == ".." or relative.startswith("../"):
        raise InputError(f"{ref} lies outside the input root {root}")
    return relative


def _by_name(paths: Sequence[str]) -> dict[str, list[str]]:
    """Video paths by file name and by stem, built once for lists that name videos without folders."""
    index: dict[str, list[str]] = {}
    for path in paths:
        name = PurePosixPath(path).name
        for key in {name, PurePosixPath(name).stem}:
            index.setdefault(key, []).append(path)
    return index


def _resolve(rows: list[_Row], root: Path, paths: list[str], anywhere: bool) -> tuple[list[VideoEntry], list[str]]:
    """Rows to entries at their relative path, or (named lists) by file name then stem anywhere under
    root; a name matching several videos or a video listed twice is ambiguous, so an error."""
    known, index = set(paths), _by_name(paths) if anywhere else {}
    entries, missing, seen = [], [], set()
    for row in rows:
        relative = _relative(row.ref, root)
        name = PurePosixPath(relative).name
        found = [relative] if relative in known else index.get(name) or index.get(PurePosixPath(name).stem, [])
        if len(found) > 1:
            raise InputError(f"{row.ref} matches several videos: {', '.join(found)}")
        if not found:
            missing.append(row.ref)
            continue
        if found[0] in seen:
            raise InputError(f"{found[0]} is listed twice")
        seen.add(found[0])
        entries.append(VideoEntry(found[0], row.label, row.split))
    return entries, missing


def _from_list(list_file: Path, root: Path, paths: list[str]) -> tuple[list[VideoEntry], list[str]]:
    """Parse and resolve a list file; every problem becomes one error line naming the file."""
    try:
        parse, anywhere = _parser(list_file)
        rows = parse(list_file)
        if not rows:
            raise InputError("no rows")
        entries, missing = _resolve(rows, root, paths, anywhere)
    except OSError as error:
        raise InputError(f"{list_file}: cannot read ({error.strerror or error})") from None
    except ValueError as error:
        raise InputError(f"{list_file}: {error}") from None
    if not entries:
        raise InputError(f"{list_file}: none of its {len(missing)} rows found under {root}")
    return entries, missing


def _classes(labels: set[str]) -> tuple[str, ...]:
    """Sorted labels; numeric order when all are integers, so "2" comes before "10"."""
    numeric = all(re.fullmatch(r"-?\d+", label) for label in labels)
    return tuple(sorted(labels, key=(lambda label: (int(label), label)) if numeric else None))


def discover_videos(root: Path, list_file: Path | None = None,
                    extensions: Sequence[str] = VIDEO_EXTENSIONS) -> VideoList:
    """The videos of a run, sorted by path, with labels, splits, classes and the list's missing rows.
    `list_file` may be a CSV/TSV/TXT table, a Kinetics CSV, a UCF101 train/testlist, an HMDB51 split
    folder (or glob, or one split file) or a Something-Something v2 JSON; without it root's folders
    give labels and splits."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    allowed = _extensions(extensions)
    paths = _video_paths(root, allowed)
    if list_file is None:
        if not paths:
            raise InputError(f"{root}: no videos ({', '.join(sorted(allowed))})")
        entries, missing = [_folder_entry(p) for p in paths], []
    else:
        entries, missing = _from_list(Path(list_file), root, paths)
    entries.sort(key=lambda e: e.path)
    classes = _classes({e.label for e in entries if e.label is not None})
    return VideoList(root, tuple(entries), classes, tuple(missing))
