"""Temporal annotations: every format read from real files, every rule counted, segments kept in a real zarr
store with checksums."""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import xarray
import zarr
from zarr.codecs import Crc32cCodec

from clipcache import InputError
from clipcache.cache.segments import (
    SegmentsDamageError,
    SegmentTable,
    clip_to_duration,
    read_segments,
    write_segments,
)
from clipcache.pipeline.extract.annotations import (
    Segment,
    apply_rules,
    clip_table,
    match_videos,
    read_annotations,
)
from conftest import run_cli, synthetic_store


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _plain(segments: tuple[Segment, ...]) -> list[tuple[str, float, float, str, bool]]:
    return [(s.video, s.start, s.end, s.label, s.ambiguous) for s in segments]


def _rows(table: SegmentTable) -> list[tuple[int, float, float, int, bool]]:
    return list(zip(table.video.tolist(), table.start.tolist(), table.end.tolist(), table.label.tolist(),
                    table.ambiguous.tolist()))


@pytest.fixture
def thumos(tmp_path: Path) -> list[Path]:
    """A validation folder and a test folder, with the quirks of the real files."""
    val, test = tmp_path / "annotation_val", tmp_path / "annotation_test"
    _write(val / "Diving_val.txt", "video_validation_0000051 67.5 75.9 \nvideo_validation_0000051 10 12\n\n")
    _write(val / "BaseballPitch_val.txt", b"video_validation_0000052 1.2 3.4\r\nvideo_validation_0000052 5 6\r\n")
    _write(val / "Ambiguous_val.txt", "video_validation_0000051 20 22\n")
    _write(val / "readme.md", "not annotations")
    _write(test / "CliffDiving_test.txt", "video_test_0000004 0.2 1.1\n")
    _write(test / "Diving_test.txt", "video_test_0000004 0.2 1.1\nvideo_test_0000270 3 4\n")
    _write(test / "Ambiguous_test.txt", "video_test_0001292 5 9\n")
    return [val, test]


def test_thumos14_folders(thumos: list[Path]) -> None:
    annotations = read_annotations(thumos)
    assert annotations.format == "thumos14"
    assert annotations.classes == ("BaseballPitch", "Diving", "CliffDiving")  # by file name, folder by folder
    assert _plain(annotations.segments) == [
        ("video_validation_0000051", 20.0, 22.0, "Ambiguous", True),
        ("video_validation_0000052", 1.2, 3.4, "BaseballPitch", False),
        ("video_validation_0000052", 5.0, 6.0, "BaseballPitch", False),
        ("video_validation_0000051", 67.5, 75.9, "Diving", False),
        ("video_validation_0000051", 10.0, 12.0, "Diving", False),
        ("video_test_0001292", 5.0, 9.0, "Ambiguous", True),
        ("video_test_0000004", 0.2, 1.1, "CliffDiving", False),
        ("video_test_0000004", 0.2, 1.1, "Diving", False),  # CliffDiving also listed as Diving: both kept
        ("video_test_0000270", 3.0, 4.0, "Diving", False),  # kept, though many works drop it
    ]
    assert annotations.splits == {"video_validation_0000051": "val", "video_validation_0000052": "val",
                                  "video_test_0001292": "test", "video_test_0000004": "test",
                                  "video_test_0000270": "test"}
    assert annotations.durations == {}
    assert annotations.problems.counts == {"CRLF line ends": 1, "trailing whitespace": 1, "blank line": 1,
                                           "ignored file": 1}
    assert annotations.problems.examples["blank line"] == ["annotation_val/Diving_val.txt:3"]
    assert annotations.problems.examples["ignored file"] == ["annotation_val/readme.md"]
    names = [s["name"] for s in annotations.sources]
    assert names == ["annotation_val/Ambiguous_val.txt", "annotation_val/BaseballPitch_val.txt",
                     "annotation_val/Diving_val.txt", "annotation_test/Ambiguous_test.txt",
                     "annotation_test/CliffDiving_test.txt", "annotation_test/Diving_test.txt"]
    crlf = thumos[0] / "BaseballPitch_val.txt"
    assert annotations.sources[1]["sha256"] == hashlib.sha256(crlf.read_bytes()).hexdigest()

    store = ["val/video_validation_0000051.mp4", "val/video_validation_0000052.mp4", "test/video_test_0000004.mp4",
             "test/video_test_0000270.mp4", "test/video_test_0001292.mp4"]
    table, problems = apply_rules(annotations, store)
    assert _rows(table) == [(0, 10.0, 12.0, 1, False), (0, 20.0, 22.0, -1, True), (0, 67.5, 75.9, 1, False),
                            (1, 1.2, 3.4, 0, False), (1, 5.0, 6.0, 0, False), (2, 0.2, 1.1, 1, False),
                            (2, 0.2, 1.1, 2, False), (3, 3.0, 4.0, 1, False), (4, 5.0, 9.0, -1, True)]
    assert table.classes == annotations.classes and table.format == "thumos14"
    assert table.counts == annotations.problems.counts  # nothing dropped or clipped, the reading notes kept
    assert problems.lines()[0] == "blank line: 1 lines skipped, e.g. annotation_val/Diving_val.txt:3"

    # the segment of video 0 runs past its decoded end (70 s); video 1 ends at 5.5 s: one clipped, one after it
    clipped, found = clip_table(table, {0: 70.0, 1: 5.5})
    assert _rows(clipped) == [(0, 10.0, 12.0, 1, False), (0, 20.0, 22.0, -1, True), (0, 67.5, 70.0, 1, False),
                              (1, 1.2, 3.4, 0, False), (1, 5.0, 5.5, 0, False), (2, 0.2, 1.1, 1, False),
                              (2, 0.2, 1.1, 2, False), (3, 3.0, 4.0, 1, False), (4, 5.0, 9.0, -1, True)]
    assert found.counts == {"past the end": 2}
    unknown, found = clip_table(table, {0: math.nan})  # a duration that is not known judges nothing
    assert _rows(unknown) == _rows(table) and found.counts == {} and unknown.counts == table.counts
    clipped, found = clip_table(table, {1: 5.0, 4: 5.0})
    assert len(clipped) == len(table) - 2 and found.counts == {"after the end": 2}
    assert clipped.counts == {**table.counts, "after the end": 2}


def test_clip_to_duration() -> None:
    assert clip_to_duration(1.0, 4.0, 10.0) == (1.0, 4.0)
    assert clip_to_duration(1.0, 14.0, 10.0) == (1.0, 10.0)
    assert clip_to_duration(10.0, 14.0, 10.0) is None
    assert clip_to_duration(12.0, 14.0, 10.0) is None


def test_single_thumos_file(tmp_path: Path) -> None:
    annotations = read_annotations([_write(tmp_path / "Ambiguous_test.txt", "video_test_1 1 2\n")])
    assert annotations.classes == () and _plain(annotations.segments) == [("video_test_1", 1.0, 2.0, "Ambiguous", True)]


def _activitynet(tmp_path: Path) -> Path:
    database = {
        "v_abc": {"subset": "training", "duration": 30.5, "url": "https://youtube.com/watch?v=abc",
                  "annotations": [{"segment": [1.5, 10.0], "label": "Long jump"},
                                  {"segment": [12.0, 31.0], "label": "Archery"}]},
        "def": {"subset": "validation", "duration": 20.0,
                "annotations": [{"segment": [0.0, 5.0], "label": "Archery"}]},
        "v_ghi": {"subset": "testing", "duration": 12.25, "annotations": []},
        "jkl": {"subset": "testing", "duration": 8.0},
    }
    return _write(tmp_path / "activity_net.v1-3.min.json", json.dumps({"version": "VERSION 1.3", "database": database}))


def test_activitynet_json(tmp_path: Path) -> None:
    annotations = read_annotations([_activitynet(tmp_path)])
    assert annotations.format == "activitynet"
    assert annotations.classes == ("Long jump", "Archery")  # in order of appearance
    assert _plain(annotations.segments) == [("v_abc", 1.5, 10.0, "Long jump", False),
                                            ("v_abc", 12.0, 31.0, "Archery", False),
                                            ("def", 0.0, 5.0, "Archery", False)]
    assert annotations.splits == {"v_abc": "train", "def": "val", "v_ghi": "test", "jkl": "test"}
    assert annotations.durations == {"v_abc": 30.5, "def": 20.0, "v_ghi": 12.25, "jkl": 8.0}
    assert annotations.problems.counts == {}

    # on disk: v_abc as abc (prefix removed), def as v_def (prefix added), ghi exactly, jkl absent
    store = ["videos/abc.mp4", "videos/v_def.mkv", "videos/v_ghi.mp4", "videos/other.mp4"]
    match = match_videos(annotations, store)
    assert match.index == {"v_abc": 0, "def": 1, "v_ghi": 2} and match.ambiguous == {}
    table, problems = apply_rules(annotations, store)
    assert _rows(table) == [(0, 1.5, 10.0, 0, False), (0, 12.0, 31.0, 1, False), (1, 0.0, 5.0, 1, False)]
    assert problems.counts == {}
    clipped, found = clip_table(table, {0: annotations.durations["v_abc"]})
    assert clipped.end.tolist() == [10.0, 30.5, 5.0] and found.counts == {"past the end": 1}


def test_name_matching(tmp_path: Path) -> None:
    annotations = read_annotations([_write(tmp_path / "a.csv", "v_abc,1,2,x\nabc,3,4,x\nv_v_q,1,2,x\nsame,1,2,x\n"
                                                                  "v_none,1,2,x\n")])
    store = ["train/v_abc.mp4", "train/abc.mp4", "v_q.mp4", "train/same.mp4", "val/same.webm"]
    match = match_videos(annotations, store)
    # an exact stem wins over the other spelling; a name for which two store videos qualify is not guessed
    assert match.index == {"v_abc": 0, "abc": 1, "v_v_q": 2}
    assert match.ambiguous == {"same": (3, 4)}
    table, problems = apply_rules(annotations, store)
    assert table.video.tolist() == [0, 1, 2]
    assert problems.counts == {"ambiguous video name": 1, "video not in store": 1}
    assert problems.examples["video not in store"] == ["v_none [1, 2] x (a.csv:5)"]


def _actionformer(tmp_path: Path) -> Path:
    database = {
        "video_validation_0000051": {
            "subset": "Validation", "duration": 169.79, "fps": 30.0,
            "annotations": [{"label": "Diving", "segment": [2.2, 3.3], "segment(frames)": [66.0, 99.0], "label_id": 1},
                            {"label": "Billiards", "segment(frames)": [30.0, 90.0], "label_id": 0},
                            {"label": "Diving", "segment": [5.0, 6.0], "label_id": 1},
                            {"label": "Diving", "segment": [8.0, 9.0], "label_id": 0}]},  # disagrees: dropped
        "video_test_0000004": {
            "subset": "Test", "duration": 30.0, "fps": 25.0,
            "annotations": [{"label": "Billiards", "segment": [1.0, 2.0], "label_id": 0},
                            {"label": "Billiards", "segment": [3.0, 4.0], "label_id": 0}]},
    }
    return _write(tmp_path / "thumos14.json", json.dumps({"database": database}))


def test_actionformer_json(tmp_path: Path) -> None:
    annotations = read_annotations([_actionformer(tmp_path)])
    assert annotations.format == "actionformer"
    assert annotations.classes == ("Billiards", "Diving")  # by label_id, not by appearance
    assert _plain(annotations.segments) == [("video_validation_0000051", 2.2, 3.3, "Diving", False),
                                            ("video_validation_0000051", 1.0, 3.0, "Billiards", False),
                                            ("video_validation_0000051", 5.0, 6.0, "Diving", False),
                                            ("video_test_0000004", 1.0, 2.0, "Billiards", False),
                                            ("video_test_0000004", 3.0, 4.0, "Billiards", False)]
    assert annotations.splits == {"video_validation_0000051": "val", "video_test_0000004": "test"}
    assert annotations.durations == {"video_validation_0000051": 169.79, "video_test_0000004": 30.0}
    assert annotations.problems.counts == {"unknown label": 1}
    assert "label_id 0 disagrees" in annotations.problems.examples["unknown label"][0]
    table, problems = apply_rules(annotations, ["video_validation_0000051.mp4", "video_test_0000004.mp4"])
    assert _rows(table) == [(0, 1.0, 3.0, 0, False), (0, 2.2, 3.3, 1, False), (0, 5.0, 6.0, 1, False),
                            (1, 1.0, 2.0, 0, False), (1, 3.0, 4.0, 0, False)]
    assert table.counts == {"unknown label": 1}


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    headed = _write(tmp_path / "segments.csv", "label,video,end,start,subset\r\nJump,a,2.5,1,training\r\n"
                                               "Ambiguous,a,4,3,training\r\nRun,b,1,0,validation\r\n")
    plain = _write(tmp_path / "more.csv", "c,0,1,Swim\n\nd,1e1,1.5e1,Jump,test\n")
    tabs = _write(tmp_path / "tabs.tsv", "e\t0\t1\tRun\n")
    annotations = read_annotations([headed, plain, tabs])
    assert annotations.format == "csv"
    assert annotations.classes == ("Jump", "Run", "Swim")
    assert _plain(annotations.segments) == [("a", 1.0, 2.5, "Jump", False), ("a", 3.0, 4.0, "Ambiguous", True),
                                            ("b", 0.0, 1.0, "Run", False), ("c", 0.0, 1.0, "Swim", False),
                                            ("d", 10.0, 15.0, "Jump", False), ("e", 0.0, 1.0, "Run", False)]
    assert annotations.splits == {"a": "train", "b": "val", "d": "test"}
    assert annotations.problems.counts == {"CRLF line ends": 1, "blank line": 1}
    assert [s["name"] for s in annotations.sources] == ["segments.csv", "more.csv", "tabs.tsv"]


def test_every_rule_is_counted(tmp_path: Path) -> None:
    first = _write(tmp_path / "first.csv", "\n".join([
        "v_a,1,2,Jump,train",     # kept
        "v_a,1,2,Jump,train",     # duplicate of the row above
        "v_a,-1,3,Jump,train",    # negative start: clipped to 0
        "v_a,-3,0,Jump,train",    # ends at the video's start
        "v_a,4,4,Jump,train",     # empty
        "v_a,6,5,Jump,train",     # inverted
        "v_a,nan,5,Jump,train",   # non-finite
        "v_a,1,inf,Jump,train",   # non-finite
        "v_a,1,2,Swim,train",     # a label outside the class list given below
        "zzz,1,2,Jump,train",     # no such video in the store
        "b,1,2,Run,val",          # kept
    ]) + "\n")
    # a second split for v_a, and three duplicates: the same video under both spellings counts as one
    second = _write(tmp_path / "second.csv", "v_a,1,2,Jump,val\na,1,2,Jump\nb,1,2,Run,val\n")
    annotations = read_annotations([first, second])
    assert annotations.problems.counts == {"split conflict": 1}
    assert annotations.problems.examples["split conflict"] == ["v_a: train kept, val also given"]
    assert annotations.splits == {"v_a": "train", "zzz": "train", "b": "val"}
    table, problems = apply_rules(annotations, ["a.mp4", "b.mp4"], classes=["Run", "Jump"])
    assert table.classes == ("Run", "Jump")
    assert _rows(table) == [(0, 0.0, 3.0, 1, False), (0, 1.0, 2.0, 1, False), (1, 1.0, 2.0, 0, False)]
    assert problems.counts == {"split conflict": 1, "duplicate": 4, "negative start": 1, "before the video": 1,
                               "empty": 1, "inverted": 1, "non-finite": 2, "unknown label": 1,
                               "video not in store": 1}
    assert table.counts == problems.counts
    assert problems.examples["duplicate"] == ["v_a [1, 2] Jump (first.csv:2)", "v_a [1, 2] Jump (second.csv:1)",
                                              "a [1, 2] Jump (second.csv:2)"]
    assert problems.lines()[0] == "video not in store: 1 segments dropped, e.g. zzz [1, 2] Jump (first.csv:10)"
    assert annotations.problems.counts == {"split conflict": 1}  # the annotations themselves are unchanged


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("bad.json", '{"database": {"a": {', "not valid JSON"),
    ("nodb.json", '{"videos": []}', "no 'database'"),
    ("seg.json", '{"database": {"a": {"annotations": [{"label": "x", "segment": [1]}]}}}', "is not [start, end]"),
    ("num.json", '{"database": {"a": {"annotations": [{"label": "x", "segment": ["one", 2]}]}}}', "is not a number"),
    ("Diving_val.txt", "video_validation_1 1.0 2.0\nvideo_validation_1 3.0\n", ":2: 2 fields"),
    ("Diving_test.txt", "video_test_1 1.0 two\n", "'two' is not a number"),
    ("rows.csv", "a,1,2,x\nb,1,x,y\n", ":2: end 'x' is not a number"),
    ("short.csv", "a,1,2\n", "3 fields"),
    ("header.csv", "video,start,end\na,1,2\n", "no label column"),
    ("latin.csv", "caf\xe9,1,2,x\n".encode("latin-1"), "not UTF-8"),
    ("notes.doc", "x", "not an annotation file"),
])
def test_malformed_files_name_the_file(tmp_path: Path, name: str, text: str | bytes, reason: str) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(InputError, match=re.escape(reason)) as error:
        read_annotations([path])
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such annotation file"):
        read_annotations([tmp_path / "absent.json"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no THUMOS14 annotation files"):
        read_annotations([tmp_path / "empty"])


# segments in a store


def _store(tmp_path: Path) -> Path:
    root = zarr.open_group(str(tmp_path / "store.zarr"), mode="w")
    root.attrs["format"] = "clipcache/2"
    return tmp_path / "store.zarr"


def _table(tmp_path: Path) -> SegmentTable:
    annotations = read_annotations([_activitynet(tmp_path), _actionformer(tmp_path)])
    store = ["abc.mp4", "v_def.mp4", "video_validation_0000051.mp4", "video_test_0000004.mp4"]
    return apply_rules(annotations, store)[0]


def test_segments_round_trip(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert read_segments(store) is None
    table = _table(tmp_path)
    assert table.format == "activitynet+actionformer" and len(table) == 8
    write_segments(store, table)
    back = read_segments(store)
    assert back is not None
    for name, values in table.columns().items():
        assert getattr(back, name).dtype == values.dtype and np.array_equal(getattr(back, name), values), name
    assert (back.classes, back.format, back.sources, back.counts) == \
        (table.classes, table.format, table.sources, table.counts)
    assert [s["name"] for s in back.sources] == ["activity_net.v1-3.min.json", "thumos14.json"]
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)
    assert list(root.group_keys()) == ["segments"]  # the hidden work folders are no zarr nodes
    for name in ("video", "start", "end", "label", "ambiguous"):
        array = root[f"segments/{name}"]
        assert array.metadata.dimension_names == ("segment",)
        assert isinstance(array.metadata.codecs[-1], Crc32cCodec)
    assert "segments" in zarr.open_group(str(store), mode="r").metadata.consolidated_metadata.metadata

    smaller = apply_rules(read_annotations([_activitynet(tmp_path)]), ["abc.mp4"])[0]
    write_segments(store, smaller)  # replaces the table
    again = read_segments(store)
    assert again is not None and _rows(again) == _rows(smaller) and again.format == "activitynet"
    assert sorted(p.name for p in store.iterdir()) == ["segments", "zarr.json"]


def test_segments_need_a_store(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a zarr store"):
        write_segments(tmp_path / "absent.zarr", _table(tmp_path))
    assert not (tmp_path / "absent.zarr").exists()


def test_empty_table(tmp_path: Path) -> None:
    store = _store(tmp_path)
    table = apply_rules(read_annotations([_activitynet(tmp_path)]), ["nothing.mp4"])[0]
    write_segments(store, table)
    back = read_segments(store)
    assert back is not None and len(back) == 0 and back.counts == {"video not in store": 3}


@pytest.mark.parametrize("damage", ["flip", "delete", "cut"])
def test_damaged_segments_raise(tmp_path: Path, damage: str) -> None:
    store = _store(tmp_path)
    write_segments(store, _table(tmp_path))
    chunk = next((store / "segments" / "start" / "c").iterdir())
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
    elif damage == "cut":
        chunk.write_bytes(bytes(data[:-6]))
    else:
        chunk.unlink()
    with pytest.raises(SegmentsDamageError, match="segments/start is damaged") as error:
        read_segments(store)
    assert str(store) in str(error.value)


def test_row_count_is_checked(tmp_path: Path) -> None:
    store = _store(tmp_path)
    write_segments(store, _table(tmp_path))
    zarr.open_group(str(store / "segments"), mode="r+").attrs["rows"] = 9
    with pytest.raises(SegmentsDamageError, match="8 rows, its table has 9"):
        read_segments(store)


def test_a_writer_killed_between_its_renames_leaves_the_old_table(tmp_path: Path) -> None:
    """The states a crash can leave: the old table moved aside before the new one is in place, and a half-written
    new table in the partial folder. The reader takes the old, whole table; the next writer cleans up."""
    store = _store(tmp_path)
    old = _table(tmp_path)
    write_segments(store, old)
    (store / ".segments-old").mkdir()
    (store / "segments").rename(store / ".segments-old" / "segments")
    partial = zarr.open_group(str(store / ".segments-partial" / "segments"), mode="w")
    partial.create_array("video", shape=(3,), dtype="int32")  # no attributes, no other columns: half written
    back = read_segments(store)
    assert back is not None and _rows(back) == _rows(old)

    new = apply_rules(read_annotations([_activitynet(tmp_path)]), ["abc.mp4"])[0]
    write_segments(store, new)
    back = read_segments(store)
    assert back is not None and _rows(back) == _rows(new)
    assert sorted(p.name for p in store.iterdir()) == ["segments", "zarr.json"]


def test_non_finite_numbers_parse_for_the_rules(tmp_path: Path) -> None:
    annotations = read_annotations([_write(tmp_path / "Run_val.txt", "v 1 NaN\nv -inf 2\n")])
    starts = [s.start for s in annotations.segments]
    assert math.isnan(annotations.segments[0].end) and starts[1] == -math.inf
    table, problems = apply_rules(annotations, ["v.mp4"])
    assert len(table) == 0 and problems.counts == {"non-finite": 2}


def test_segments_in_a_clipcache_store(tmp_path: Path) -> None:
    """Beside a real store's arrays: verify still finds the store intact, xarray reads the table by its names."""
    store = synthetic_store(tmp_path / "s.zarr")
    table = _table(tmp_path)
    write_segments(store, table)
    assert run_cli("verify", store).code == 0
    dataset = xarray.open_zarr(store, group="segments", consolidated=False)
    assert dict(dataset.sizes) == {"segment": len(table)}
    assert np.array_equal(dataset["start"].values, table.start)
