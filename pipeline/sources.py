"""Which videos a run covers, with labels and splits: a folder layout or a list file.

Every source yields paths relative to the input root, sorted, so a video's index in the store is the
same on every run and a store can move with its videos. Rows of a list whose file is missing are
returned in `missing` (reported by the caller), never dropped silently.
"""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "avi", "mkv", "webm", "mov")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class VideoEntry:
    path: str  # POSIX, relative to the input root
    label: str | None  # class name, None when unknown
    split: str  # "" when unknown


@dataclass(frozen=True)
class VideoList:
    root: Path
    entries: tuple[VideoEntry, ...]
    classes: tuple[str, ...]  # sorted; labels index into it
    missing: tuple[str, ...]  # listed videos not found under root


Row = tuple[str, str | None, str]  # (path or file name or stem, label, split)


def normalise_split(name: str) -> str:
    return _SPLIT_NAMES.get(name.strip().lower(), name.strip().lower())


def _extensions(extensions: Sequence[str]) -> frozenset[str]:
    return frozenset(e.lower().lstrip(".") for e in extensions)


def _video_files(root: Path, extensions: frozenset[str]) -> list[Path]:
    """Videos under root, recursively, skipping hidden files and folders."""
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower().lstrip(".") in extensions
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _folder_entry(relative: PurePosixPath) -> VideoEntry:
    """root/<class>/<video>, root/<split>/<class>/<video>, or root/<video> (no label); deeper folders:
    the label is the video's parent folder."""
    parts = relative.parts
    split = normalise_split(parts[0]) if len(parts) >= 2 and parts[0].lower() in _SPLIT_NAMES else ""
    folders = parts[1:-1] if split else parts[:-1]
    return VideoEntry(str(relative), folders[-1] if folders else None, split)


def _parse_table(path: Path) -> list[Row]:
    """CSV/TSV/TXT rows `path[,label[,split]]` (comma, tab or whitespace separated, optional header)."""
    text = path.read_text(encoding="utf-8-sig")
    sample = text[:4096]
    delimiter = "\t" if "\t" in sample else "," if "," in sample else None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rows = csv.reader(lines, delimiter=delimiter) if delimiter else (line.split() for line in lines)
    parsed = [[cell.strip() for cell in row] for row in rows]
    if parsed and parsed[0] and parsed[0][0].lower() in ("path", "video", "file", "filename"):
        parsed = parsed[1:]
    return [(row[0], row[1] if len(row) > 1 and row[1] else None, normalise_split(row[2]) if len(row) > 2 else "")
            for row in parsed if row and row[0]]


def _parse_kinetics(path: Path) -> list[Row]:
    """Kinetics CSV: label,youtube_id,time_start,time_end,split -> <id>_<start:06d>_<end:06d>.*"""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        return [(f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}",
                 row.get("label") or None, normalise_split(row.get("split", "") or ""))
                for row in reader]


def _parse_ucf(path: Path) -> list[Row]:
    """UCF101 trainlistNN.txt (`Class/v_Class_g08_c01.avi 1`) or testlistNN.txt (path only)."""
    split = "train" if path.name.lower().startswith("trainlist") else "test"
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            video = line.split()[0]
            rows.append((video, PurePosixPath(video).parent.name or None, split))
    return rows


def _parse_hmdb(folder: Path) -> list[Row]:
    """HMDB51 split folder: `<class>_test_split<k>.txt` with `<video>.avi <0|1|2>` (1 train, 2 test,
    0 unused). The lowest split number present is used (split 1 when all three are there)."""
    files = sorted(folder.glob("*_test_split*.txt"))
    if not files:
        raise ValueError(f"{folder}: no HMDB51 split files (*_test_split<k>.txt)")
    number = min(re.search(r"_test_split(\d+)\.txt$", f.name).group(1) for f in files)
    rows = []
    for file in folder.glob(f"*_test_split{number}.txt"):
        label = file.name[: -len(f"_test_split{number}.txt")]
        for line in file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("1", "2"):
                rows.append((parts[0], label, "train" if parts[1] == "1" else "test"))
    return rows


def _parse_ssv2(path: Path) -> list[Row]:
    """Something-Something v2 JSON: [{"id", "template": "Holding [something]", ...}] -> <id>.*"""
    items = json.loads(path.read_text())
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of {{id, template}} objects")
    name = path.name.lower()
    split = "train" if "train" in name else "val" if "validation" in name else "test" if "test" in name else ""
    return [(str(item["id"]), item["template"].replace("[", "").replace("]", "") if "template" in item else None,
             split) for item in items]


def _detect(list_file: Path) -> Callable[[Path], list[Row]]:
    if list_file.is_dir():
        return _parse_hmdb
    if list_file.suffix.lower() == ".json":
        return _parse_ssv2
    first_line = list_file.read_text(encoding="utf-8-sig")[:1024].splitlines()[:1]
    if first_line and "youtube_id" in first_line[0]:
        return _parse_kinetics
    if re.match(r"(train|test)list\d*", list_file.name.lower()):
        return _parse_ucf
    return _parse_table


def _resolve(rows: Iterable[Row], root: Path, files: list[Path], source: Path
             ) -> tuple[list[VideoEntry], list[str]]:
    """Match list rows to files: a relative path under root, or (for name-only lists) a file name or stem
    found anywhere under root."""
    by_name: dict[str, Path] = {}
    for file in files:
        by_name.setdefault(file.name, file)
        by_name.setdefault(file.stem, file)
    entries, missing, seen = [], [], set()
    for name, label, split in rows:
        candidate = Path(name) if Path(name).is_absolute() else root / name
        if Path(name).is_absolute() and not candidate.resolve().is_relative_to(root):
            raise ValueError(f"{source}: {name} lies outside the input root {root}")
        file = candidate if candidate.is_file() else by_name.get(PurePosixPath(name).name)
        if file is None:
            missing.append(name)
            continue
        relative = file.resolve().relative_to(root).as_posix()
        if relative in seen:
            raise ValueError(f"{source}: {relative} is listed twice")
        seen.add(relative)
        entries.append(VideoEntry(relative, label, split))
    return entries, missing


def discover_videos(root: Path, list_file: Path | None = None,
                    extensions: Sequence[str] = VIDEO_EXTENSIONS) -> VideoList:
    """All videos of a run, sorted by path, with their labels, splits and the classes."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder")
    files = _video_files(root, _extensions(extensions))
    if list_file is None:
        entries, missing = [_folder_entry(PurePosixPath(f.relative_to(root).as_posix())) for f in files], []
    else:
        if not list_file.exists():
            raise ValueError(f"{list_file}: no such list file")
        try:
            rows = _detect(list_file)(list_file)
        except (KeyError, ValueError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(str(list_file)):
                raise
            raise ValueError(f"{list_file}: cannot parse ({type(exc).__name__}: {exc})") from None
        if not rows:
            raise ValueError(f"{list_file}: no rows")
        entries, missing = _resolve(rows, root, files, list_file)
    if not entries:
        where = f"{list_file} (none of its {len(missing)} rows found under {root})" if list_file else str(root)
        raise ValueError(f"{where}: no videos found (extensions: {', '.join(sorted(_extensions(extensions)))})")
    entries.sort(key=lambda e: e.path)
    classes = tuple(sorted({e.label for e in entries if e.label is not None}))
    return VideoList(root, tuple(entries), classes, tuple(missing))
