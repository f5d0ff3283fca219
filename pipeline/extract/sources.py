"""Which videos a run covers, with labels and splits: a folder layout or list files.

Every source yields POSIX paths relative to the input root, so a store can move with its videos. A
list's rows are kept in the order of what they name (the listed path, clip id or file name), found or
not, so a video's index in the store is the same on every run and does not move when a missing file
appears later; a row whose video is not found is kept as missing, never dropped. Nothing in a list is
left out without a line saying so (`skipped`): a header is recognised by its column names only, `#`
starts a comment only where no video of that name exists, and UTF-8 byte-order marks are removed.
Labels are kept as strings; when every label is an integer ("0", "1", ..., "10") the classes are sorted
numerically, and a UCF101 list with `classInd.txt` beside it takes its classes (all of them, in its
order) from there, as published code does.
"""
from __future__ import annotations

import csv
import json
import os
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from clipcache import InputError
from clipcache.cache.schema import canonical_split

# the containers FFmpeg (PyAV) and decord open as video, most common first (the order breaks ties between copies)
VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "avi", "mkv", "webm", "mov", "mpg", "mpeg", "m4v", "wmv", "flv", "3gp",
                                     "3g2", "ts", "m2ts", "mts", "ogv", "vob", "asf", "f4v", "mxf")
_SPLIT_FOLDERS = ("train", "val", "validation", "test")
_HMDB_FILE = re.compile(r"_test_split(\d+)\.txt$")
_GLOB = re.compile(r"[*?\[]")
_SSV2_SPLIT = re.compile(r"(train|validation|test)", re.IGNORECASE)
# a table's first row is a header only when it is made of these names
_PATH_COLUMNS = {"path", "video", "videos", "file", "filename", "file_name", "video_path", "name", "clip"}
_OTHER_COLUMNS = {"label", "labels", "class", "class_name", "category", "action", "split", "subset", "set"}


@dataclass(frozen=True)
class VideoEntry:
    path: str  # POSIX path relative to the input root; what the list names when the video was not found
    label: str | None  # class name, None when unknown
    split: str  # "" when unknown
    listed: str = ""  # what the list names, normalised (the order key); the path itself for folders
    found: bool = True
    note: str = ""  # how the row was resolved when that was a choice (a clip present twice)


@dataclass(frozen=True)
class VideoList:
    root: Path  # absolute input root; entries' paths are relative to it
    entries: tuple[VideoEntry, ...]  # sorted by `listed`
    classes: tuple[str, ...]  # labels of entries index into this
    skipped: tuple[str, ...] = ()  # one line per kind of list line that is not a video (headers, comments), and
    # for a folder scan one counting the files left out by their extension

    @property
    def missing(self) -> tuple[str, ...]:
        """What the lists name that was not found."""
        return tuple(e.listed for e in self.entries if not e.found)


@dataclass(frozen=True)
class _Row:
    ref: str  # what the list names: a relative or absolute path, a file name or a stem
    label: str | None
    split: str
    where: str = ""  # "<list> line <n>", for messages
    comment: bool = False  # starts with '#': a comment unless a video of that name exists


@dataclass
class _Parsed:
    rows: list[_Row]
    skipped: list[str] = field(default_factory=list)
    classes: tuple[str, ...] | None = None  # the dataset's own class list, when the list comes with one


def _extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    """"mp4", ".MP4" and " mp4" alike, as users type them on the command line, in the order given."""
    return tuple(dict.fromkeys(e.strip().lower().lstrip(".") for e in extensions))


def _read_text(path: Path) -> str:
    """A text list without its UTF-8 byte-order mark (editors on Windows add one)."""
    return path.read_text(encoding="utf-8-sig")


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:5]))
    return f"line{'s' if len(numbers) > 1 else ''} {shown}" + (f" and {len(numbers) - 5} more" if len(numbers) > 5
                                                                else "")


def _video_paths(root: Path, extensions: tuple[str, ...]) -> tuple[list[str], Counter[str]]:
    """Sorted relative paths of the videos under root, and how many other files there are by extension.
    Hidden files and folders are skipped; symlinked folders are followed (datasets are often linked in) but
    each real folder is walked once, so a link loop ends."""
    found, walked, others = [], set(), Counter()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder).relative_to(root)
        for f in files:
            suffix = os.path.splitext(f)[1][1:].lower()
            if f.startswith("."):
                continue
            if suffix in extensions:
                found.append((base / f).as_posix())
            else:
                others[f".{suffix}" if suffix else "no extension"] += 1
    return sorted(found), others


def _left_out_line(root: Path, others: Counter[str]) -> list[str]:
    """The line that counts a folder's files whose extension --extensions does not name, by extension."""
    if not others:
        return []
    counts = ", ".join(f"{n} {suffix}" for suffix, n in sorted(others.items(), key=lambda item: (-item[1], item[0])))
    total = sum(others.values())
    return [f"{root}: {total} file{'s' if total > 1 else ''} whose extension is not in --extensions ({counts})"]


def _folder_entry(path: str) -> VideoEntry:
    """root/<class>/<video>, root/<split>/<class>/<video> or root/<video> (no label); deeper folders:
    the label is the video's parent folder, the split still the first folder when it is a split name."""
    parts = PurePosixPath(path).parts
    split = canonical_split(parts[0]) if len(parts) > 1 and parts[0].lower() in _SPLIT_FOLDERS else ""
    folders = parts[1:-1] if split else parts[:-1]
    return VideoEntry(path, folders[-1] if folders else None, split, listed=path)


def _is_header(cells: list[str]) -> bool:
    names = [c.strip().lower() for c in cells]
    return names[0] in _PATH_COLUMNS and all(n in _OTHER_COLUMNS for n in names[1:] if n)


def _parse_table(path: Path) -> _Parsed:
    """`path[,label[,split]]` rows, separated by tabs, commas or whitespace (whichever the first row that
    does not start with `#` uses).
    The first row is a header only when it consists of known column names (path, video, label, class,
    split, ...); a row starting with `#` is a comment unless a video of that name exists."""
    lines = [(n, line) for n, line in enumerate(_read_text(path).splitlines(), 1) if line.strip()]
    if not lines:
        return _Parsed([])
    first = next((line for _, line in lines if not line.lstrip().startswith("#")), lines[0][1])
    delimiter = "\t" if "\t" in first else "," if "," in first else None
    parsed, comments = _Parsed([]), []
    for n, line in lines:
        cells = [c.strip() for c in (next(csv.reader([line], delimiter=delimiter)) if delimiter else line.split())]
        comment = line.lstrip().startswith("#")
        if n == lines[0][0] and not comment and _is_header(cells):
            parsed.skipped.append(f"{path} line {n}: header ({', '.join(cells)})")
            continue
        if (len(cells) > 3 and any(cells[3:])) or not cells[0]:
            if comment:
                comments.append(n)
                continue
            raise InputError(f"line {n}: expected path[,label[,split]], got {line.strip()!r}")
        cells += [""] * (3 - len(cells))
        parsed.rows.append(_Row(cells[0], cells[1] or None, canonical_split(cells[2]), f"{path} line {n}", comment))
    if comments:
        parsed.skipped.append(f"{path} {_lines(comments)}: comments")
    return parsed


def _parse_kinetics(path: Path) -> _Parsed:
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
                             (row.get("label") or "").strip() or None, canonical_split(row.get("split") or ""),
                             f"{path} line {reader.line_num}"))
    return _Parsed(rows)


def _ucf_classes(list_file: Path) -> tuple[str, ...] | None:
    """UCF101's `classInd.txt` (`<index> <class>`, from 1) beside the list, in its order."""
    index_file = list_file.parent / "classInd.txt"
    if not index_file.is_file():
        return None
    numbered = []
    for n, line in enumerate(_read_text(index_file).splitlines(), 1):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != 2 or not cells[0].isdigit():
            raise InputError(f"{index_file} line {n}: expected '<index> <class>', got {line.strip()!r}")
        numbered.append((int(cells[0]), cells[1]))
    numbered.sort()
    if [number for number, _ in numbered] != list(range(1, len(numbered) + 1)):
        raise InputError(f"{index_file}: class indices are not 1..{len(numbered)}")
    return tuple(name for _, name in numbered)


def _parse_ucf(path: Path) -> _Parsed:
    """UCF101 trainlistNN.txt (`Class/v_Class_g08_c01.avi 1`) or testlistNN.txt (path only); the label
    is the folder, the split the file name's. With classInd.txt beside it, the classes are its classes
    and a trainlist's class index is checked against it."""
    split = "train" if path.name.lower().startswith("trainlist") else "test"
    classes = _ucf_classes(path)
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        cells = line.split()
        if not cells:
            continue
        label = PurePosixPath(cells[0]).parent.name or None
        if classes is not None:
            if label not in classes:
                raise InputError(f"line {n}: class {label!r} is not in classInd.txt")
            if len(cells) > 1 and cells[1] != str(classes.index(label) + 1):
                raise InputError(f"line {n}: class index {cells[1]} of {label} disagrees with classInd.txt "
                                 f"({classes.index(label) + 1})")
        rows.append(_Row(cells[0], label, split, f"{path} line {n}"))
    return _Parsed(rows, classes=classes)


def _hmdb_files(spec: Path) -> list[Path]:
    """The split files a folder, a glob or a single `<class>_test_split<k>.txt` names. When several
    split numbers are present the lowest (split 1 of the official three) is used; pick another with a
    glob such as `splits/*_test_split2.txt`."""
    files = sorted(spec.glob("*_test_split*.txt") if spec.is_dir() else spec.parent.glob(spec.name))
    numbers = {int(m.group(1)) for f in files if (m := _HMDB_FILE.search(f.name))}
    if not numbers:
        raise InputError("no HMDB51 split files (<class>_test_split<k>.txt)")
    return [f for f in files if f.name.endswith(f"_test_split{min(numbers)}.txt")]


def _parse_hmdb(spec: Path) -> _Parsed:
    """HMDB51 split files: lines `<video>.avi <0|1|2>` (1 train, 2 test, 0 not in this split); the label
    is the file name's class prefix. File names may start with `#`: these files have no comments."""
    parsed, unused = _Parsed([]), 0
    for file in _hmdb_files(spec):
        label = _HMDB_FILE.split(file.name)[0]
        for n, line in enumerate(_read_text(file).splitlines(), 1):
            cells = line.split()
            if cells and (len(cells) != 2 or cells[1] not in ("0", "1", "2")):
                raise InputError(f"{file.name} line {n}: expected '<video> <0|1|2>', got {line.strip()!r}")
            if cells and cells[1] == "0":
                unused += 1
            elif cells:
                parsed.rows.append(_Row(cells[0], label, "train" if cells[1] == "1" else "test", f"{file} line {n}"))
    if unused:
        parsed.skipped.append(f"{spec}: {unused} rows marked 0 (not in this split)")
    return parsed


def _parse_ssv2(path: Path) -> _Parsed:
    """Something-Something v2 JSON (`[{"id", "template": "Holding [something]", ...}]`) names videos
    `<id>.<ext>`; the label is the template without brackets (the test set has none), the split the
    file name's."""
    items = json.loads(_read_text(path))
    if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
        raise InputError('expected a JSON list of {"id": ..., "template": ...} objects')
    found = _SSV2_SPLIT.search(path.name)
    split = canonical_split(found.group(1)) if found else ""
    return _Parsed([_Row(str(item["id"]), re.sub(r"[\[\]]", "", item["template"]) if "template" in item else None,
                         split, f"{path} item {n}") for n, item in enumerate(items, 1)])


def _parser(list_file: Path) -> tuple[Callable[[Path], _Parsed], bool]:
    """The list's format, from its name and first characters, and whether its videos are looked up by
    name anywhere under root (named lists) rather than only at the listed path (plain tables)."""
    if list_file.is_dir() or _HMDB_FILE.search(list_file.name) or _GLOB.search(list_file.name):
        return _parse_hmdb, True
    if not list_file.exists():
        raise InputError("no such file")
    head = _read_text(list_file)[:4096].lstrip()
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


def choose_copy(copies: list[str], extensions: tuple[str, ...]) -> str:
    """The copy of a clip present several times under root (Kinetics' cvdfoundation layout has
    `replacement/` files for broken originals, and some clips as both .mp4 and .mkv): a copy inside a
    folder named replacement* first, then the extension listed first in --extensions, then the
    shortest path, then the first in sorted order."""
    def rank(path: str) -> tuple[bool, int, int, str]:
        parts = PurePosixPath(path)
        replacement = any(folder.lower().startswith("replacement") for folder in parts.parts[:-1])
        suffix = parts.suffix.lower().lstrip(".")
        return not replacement, extensions.index(suffix) if suffix in extensions else len(extensions), len(path), path
    return min(copies, key=rank)


def _resolve(rows: list[_Row], root: Path, paths: list[str], anywhere: bool, extensions: tuple[str, ...]
             ) -> tuple[list[VideoEntry], list[str]]:
    """Rows to entries at their relative path, or (named lists) by file name then stem anywhere under
    root, choosing one copy of a clip present several times; returns the entries (missing ones too)
    and the comment rows left out."""
    known, index = set(paths), _by_name(paths) if anywhere else {}
    entries, comments = [], []
    for row in rows:
        relative = _relative(row.ref, root)
        name = PurePosixPath(relative).name
        copies = [relative] if relative in known else index.get(name) or index.get(PurePosixPath(name).stem, [])
        if row.comment and not copies:
            comments.append(row.where)
            continue
        note = ""
        if len(copies) > 1:
            chosen = choose_copy(copies, extensions)
            note = f"listed clip present {len(copies)} times, used {chosen} (others: " \
                   f"{', '.join(c for c in copies if c != chosen)})"
            copies = [chosen]
        entries.append(VideoEntry(copies[0] if copies else relative, row.label, row.split, relative, bool(copies),
                                  note))
    return entries, comments


def locate_list(list_file: Path, root: Path) -> Path:
    """A list file as given (relative to the working directory), else relative to the videos root where
    datasets keep their split files."""
    def exists(path: Path) -> bool:
        return any(path.parent.glob(path.name)) if _GLOB.search(path.name) else path.exists()
    if list_file.is_absolute() or exists(list_file) or not exists(root / list_file):
        return list_file
    return root / list_file


def _from_list(list_file: Path, root: Path, paths: list[str], extensions: tuple[str, ...]
               ) -> tuple[list[VideoEntry], _Parsed]:
    """Parse and resolve a list file; every problem becomes one error line naming the file."""
    try:
        parse, anywhere = _parser(list_file)
        parsed = parse(list_file)
        entries, comments = _resolve(parsed.rows, root, paths, anywhere, extensions)
        if not entries:
            raise InputError("no rows" if not parsed.rows else "only comments")
    except OSError as error:
        raise InputError(f"{list_file}: cannot read ({error.strerror or error})") from None
    except ValueError as error:
        raise InputError(f"{list_file}: {error}") from None
    if not any(e.found for e in entries):
        raise InputError(f"{list_file}: none of its {len(entries)} rows found under {root}")
    if comments:
        parsed.skipped.append(f"{', '.join(comments[:3])}{' ...' if len(comments) > 3 else ''}: "
                              f"{len(comments)} rows starting with # and naming no video, taken as comments")
    return entries, parsed


def _classes(labels: set[str]) -> tuple[str, ...]:
    """Sorted labels; numeric order when all are integers, so "2" comes before "10"."""
    numeric = all(re.fullmatch(r"-?\d+", label) for label in labels)
    return tuple(sorted(labels, key=(lambda label: (int(label), label)) if numeric else None))


def _merge(lists: list[tuple[Path, list[VideoEntry], _Parsed]]) -> tuple[list[VideoEntry], tuple[str, ...] | None]:
    """Entries of several lists (official train and test lists into one store): a video or a listed
    name may appear once in all of them, and lists that bring their own classes must agree."""
    entries, seen, fixed = [], {}, None
    for list_file, found, parsed in lists:
        if parsed.classes is not None:
            if fixed is not None and parsed.classes != fixed:
                raise InputError(f"{list_file}: its class list differs from the other lists'")
            fixed = parsed.classes
        for entry in found:
            for key in {entry.listed, entry.path} if entry.found else {entry.listed}:
                if key in seen:
                    where = "" if seen[key] == list_file else f" (also in {seen[key]})"
                    raise InputError(f"{list_file}: {key} is listed twice{where}")
                seen[key] = list_file
            entries.append(entry)
    if fixed is not None:
        outside = sorted({e.label for e in entries if e.label is not None} - set(fixed))
        if outside:
            raise InputError(f"labels {outside[:3]} are not among the classes of the UCF101 classInd.txt")
    return entries, fixed


def discover_videos(root: Path, lists: Sequence[Path] = (), extensions: Sequence[str] = VIDEO_EXTENSIONS
                    ) -> VideoList:
    """The videos of a run with labels, splits and classes, sorted by what the lists name. Each of
    `lists` may be a CSV/TSV/TXT table, a Kinetics CSV, a UCF101 train/testlist, an HMDB51 split folder
    (or glob, or one split file) or a Something-Something v2 JSON; without lists root's folders give
    labels and splits."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    allowed = _extensions(extensions)
    paths, others = _video_paths(root, allowed)
    skipped: list[str] = []
    classes = None
    if not lists:
        if not paths:
            raise InputError(f"{root}: no videos ({', '.join(sorted(allowed))})")
        entries = [_folder_entry(p) for p in paths]
        skipped += _left_out_line(root, others)
    else:
        parsed = []
        for given in lists:
            list_file = locate_list(Path(given), root)
            found, result = _from_list(list_file, root, paths, allowed)
            parsed.append((list_file, found, result))
            skipped += result.skipped
        entries, classes = _merge(parsed)
    entries.sort(key=lambda e: e.listed)
    if classes is None:
        classes = _classes({e.label for e in entries if e.label is not None})
    return VideoList(root, tuple(entries), classes, tuple(skipped))

