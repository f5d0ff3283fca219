"""Video discovery: folder layouts and every list format, with missing files and bad lists."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.sources import discover_videos


def _touch(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x")


def _rows(listing) -> list[tuple]:
    return [(e.path, e.label, e.split) for e in listing.entries]


def test_class_folders(tmp_path: Path) -> None:
    _touch(tmp_path, "b/2.mp4", "a/1.AVI", "a/notes.txt", ".hidden/x.mp4", "a/.y.mp4", "top.mkv")
    listing = discover_videos(tmp_path)
    assert _rows(listing) == [("a/1.AVI", "a", ""), ("b/2.mp4", "b", ""), ("top.mkv", None, "")]
    assert listing.classes == ("a", "b") and listing.root == tmp_path.resolve()


def test_split_folders(tmp_path: Path) -> None:
    _touch(tmp_path, "train/cat/1.mp4", "Validation/cat/2.webm", "test/dog/3.mov", "val/x.mp4")
    assert _rows(discover_videos(tmp_path)) == [
        ("Validation/cat/2.webm", "cat", "val"), ("test/dog/3.mov", "dog", "test"),
        ("train/cat/1.mp4", "cat", "train"), ("val/x.mp4", None, "val")]


def test_extensions_are_configurable(tmp_path: Path) -> None:
    _touch(tmp_path, "a/1.mp4", "a/2.ts")
    assert [e.path for e in discover_videos(tmp_path, extensions=[".ts"]).entries] == ["a/2.ts"]


def test_table_list_with_header_labels_splits_and_missing(tmp_path: Path) -> None:
    _touch(tmp_path, "v/1.mp4", "v/2.mp4", "v/3.mp4")
    listing_file = tmp_path / "list.csv"
    listing_file.write_text("path,label,split\nv/2.mp4,juggling,train\nv/1.mp4,abseiling,validation\n"
                            "v/3.mp4\nv/absent.mp4,x,train\n")
    listing = discover_videos(tmp_path, listing_file)
    assert _rows(listing) == [("v/1.mp4", "abseiling", "val"), ("v/2.mp4", "juggling", "train"),
                              ("v/3.mp4", None, "")]
    assert listing.missing == ("v/absent.mp4",) and listing.classes == ("abseiling", "juggling")


@pytest.mark.parametrize("text", ["v/1.mp4\t0\nv/2.mp4\t1\n", "v/1.mp4 0\nv/2.mp4 1\n"])
def test_tab_and_space_separated_lists(tmp_path: Path, text: str) -> None:
    _touch(tmp_path, "v/1.mp4", "v/2.mp4")
    (tmp_path / "l.txt").write_text(text)
    assert _rows(discover_videos(tmp_path, tmp_path / "l.txt")) == [("v/1.mp4", "0", ""), ("v/2.mp4", "1", "")]


def test_kinetics_csv_resolves_zero_padded_names_anywhere(tmp_path: Path) -> None:
    _touch(tmp_path, "train/abseiling/abc_000012_000022.mp4", "x/def_000000_000010.webm")
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                                    "abseiling,abc,12,22,train,0\nair drumming,def,0,10,validate,0\n"
                                    "air drumming,zzz,5,15,train,0\n")
    listing = discover_videos(tmp_path, tmp_path / "k.csv")
    assert _rows(listing) == [("train/abseiling/abc_000012_000022.mp4", "abseiling", "train"),
                              ("x/def_000000_000010.webm", "air drumming", "val")]
    assert listing.missing == ("zzz_000005_000015",)


def test_ucf101_split_files(tmp_path: Path) -> None:
    _touch(tmp_path, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g01_c01.avi")
    (tmp_path / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n")
    (tmp_path / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    assert _rows(discover_videos(tmp_path, tmp_path / "trainlist01.txt")) == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", "train")]
    assert _rows(discover_videos(tmp_path, tmp_path / "testlist01.txt")) == [
        ("Archery/v_Archery_g01_c01.avi", "Archery", "test")]


def test_hmdb51_split_folder(tmp_path: Path) -> None:
    _touch(tmp_path, "videos/brush_hair/a.avi", "videos/brush_hair/b.avi", "videos/brush_hair/c.avi",
           "videos/cartwheel/d.avi")
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 1\n")
    (splits / "cartwheel_test_split2.txt").write_text("d.avi 2\n")
    assert _rows(discover_videos(tmp_path / "videos", splits)) == [
        ("brush_hair/a.avi", "brush_hair", "train"), ("brush_hair/b.avi", "brush_hair", "test"),
        ("cartwheel/d.avi", "cartwheel", "train")]


def test_something_something_v2_json(tmp_path: Path) -> None:
    _touch(tmp_path, "20bn/78687.webm", "20bn/42326.webm")
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps([
        {"id": "78687", "label": "holding potato next to vicks", "template": "Holding [something] next to [something]",
         "placeholders": ["potato", "vicks"]},
        {"id": "42326", "template": "Spinning [something] so it continues spinning"}]))
    listing = discover_videos(tmp_path, tmp_path / "something-something-v2-validation.json")
    assert _rows(listing) == [("20bn/42326.webm", "Spinning something so it continues spinning", "val"),
                              ("20bn/78687.webm", "Holding something next to something", "val")]


@pytest.mark.parametrize("content, message", [
    ("", "no rows"),
    ("label,youtube_id\nx,abc\n", "cannot parse"),
    ("v/absent.mp4\n", "none of its 1 rows found"),
])
def test_bad_lists_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    _touch(tmp_path, "v/1.mp4")
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        discover_videos(tmp_path, tmp_path / "l.csv")
    assert str(tmp_path / "l.csv") in str(error.value)


def test_duplicates_and_outside_paths_are_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "root/v/1.mp4", "other/2.mp4")
    (tmp_path / "dup.csv").write_text("v/1.mp4,a\nv/1.mp4,b\n")
    with pytest.raises(ValueError, match="listed twice"):
        discover_videos(tmp_path / "root", tmp_path / "dup.csv")
    (tmp_path / "out.csv").write_text(f"{tmp_path / 'other/2.mp4'},a\n")
    with pytest.raises(ValueError, match="outside the input root"):
        discover_videos(tmp_path / "root", tmp_path / "out.csv")


def test_missing_root_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such folder"):
        discover_videos(tmp_path / "absent")
    with pytest.raises(ValueError, match="no videos found"):
        discover_videos(tmp_path)
    with pytest.raises(ValueError, match="no such list file"):
        discover_videos(tmp_path, tmp_path / "absent.csv")
