"""Video discovery: folder layouts, every list format, missing rows and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipcache.pipeline.demo.synthetic import shape_frames, write_video
from clipcache.pipeline.extract.sources import VideoList, discover_videos
from conftest import run_cli, tiny_extract_args


def _touch(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _rows(listing: VideoList) -> list[tuple[str, str | None, str]]:
    """The videos found, in store order."""
    return [(e.path, e.label, e.split) for e in listing.entries if e.found]


# folders

def test_folder_scans_take_every_video_container_and_count_the_files_left_out(tmp_path: Path) -> None:
    _touch(tmp_path, "a/1.mpg", "a/2.MPEG", "a/3.m4v", "b/4.wmv", "b/5.flv", "b/6.3gp", "b/7.ts", "b/8.ogv",
           "a/notes.txt", "a/more.txt", "b/frame.jpg", "b/README", ".hidden/x.doc")
    listing = discover_videos(tmp_path)
    assert [path for path, _, _ in _rows(listing)] == ["a/1.mpg", "a/2.MPEG", "a/3.m4v", "b/4.wmv", "b/5.flv",
                                                       "b/6.3gp", "b/7.ts", "b/8.ogv"]
    assert listing.skipped == (f"{tmp_path.resolve()}: 4 files whose extension is not in --extensions "
                               "(2 .txt, 1 .jpg, 1 no extension)",)
    assert discover_videos(tmp_path, extensions=["mpg"]).skipped == (
        f"{tmp_path.resolve()}: 11 files whose extension is not in --extensions "
        "(2 .txt, 1 .3gp, 1 .flv, 1 .jpg, 1 .m4v, 1 .mpeg, 1 .ogv, 1 .ts, 1 .wmv, 1 no extension)",)


def test_a_real_mpeg1_clip_is_extracted_beside_mp4_and_other_files_are_counted(tmp_path: Path) -> None:
    clip = shape_frames(8, 48, 64, (220, 40, 40), "square", seed=0)
    write_video(tmp_path / "videos" / "red" / "a.mp4", clip, fps=25)
    write_video(tmp_path / "videos" / "red" / "b.mpeg", clip, fps=25, codec="mpeg1")
    _write(tmp_path / "videos" / "red" / "notes.txt", "not a video")
    result = run_cli(*tiny_extract_args(tmp_path / "videos", tmp_path / "s.zarr")[:-1])  # not --quiet: the notes
    assert result.code == 0, result
    assert "2 done" in result.stdout, result
    assert f"{(tmp_path / 'videos').resolve()}: 1 file whose extension is not in --extensions (1 .txt) " \
           "(left out)" in result.stderr, result


def test_class_folders_skip_hidden_and_other_files(tmp_path: Path) -> None:
    _touch(tmp_path, "b/2.mp4", "a/1.AVI", "a/notes.txt", "a/mp4", ".hidden/x.mp4", "a/.y.mp4", "top.mkv")
    listing = discover_videos(tmp_path)
    assert _rows(listing) == [("a/1.AVI", "a", ""), ("b/2.mp4", "b", ""), ("top.mkv", None, "")]
    assert listing.classes == ("a", "b") and listing.missing == ()
    assert listing.root == tmp_path.resolve() and listing.root.is_absolute()


def test_split_folders_and_deeper_nesting(tmp_path: Path) -> None:
    _touch(tmp_path, "train/cat/1.mp4", "Validation/cat/2.webm", "TEST/dog/3.mov", "val/x.mp4",
           "train/k400/bird/4.mp4", "misc/deep/fish/5.mp4", "training/6.mp4")
    assert _rows(discover_videos(tmp_path)) == [
        ("TEST/dog/3.mov", "dog", "test"), ("Validation/cat/2.webm", "cat", "val"),
        ("misc/deep/fish/5.mp4", "fish", ""), ("train/cat/1.mp4", "cat", "train"),
        ("train/k400/bird/4.mp4", "bird", "train"), ("training/6.mp4", "training", ""),
        ("val/x.mp4", None, "val")]


@pytest.mark.parametrize("extensions", [["ts"], [".TS"], (" .ts",)])
def test_extensions_are_configurable(tmp_path: Path, extensions: list[str]) -> None:
    _touch(tmp_path, "a/1.mp4", "a/2.ts", "a/3.TS")
    assert [e.path for e in discover_videos(tmp_path, extensions=extensions).entries] == ["a/2.ts", "a/3.TS"]


def test_order_is_sorted_whatever_the_creation_order(tmp_path: Path) -> None:
    names = [f"c{i % 3}/v{i:02d}.mp4" for i in range(12)]
    _touch(tmp_path / "one", *names)
    _touch(tmp_path / "two", *reversed(names))
    one, two = discover_videos(tmp_path / "one"), discover_videos(tmp_path / "two")
    assert [e.path for e in one.entries] == sorted(names)
    assert one.entries == two.entries and one.classes == two.classes == ("c0", "c1", "c2")


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    _touch(tmp_path, "data/dog/1.mp4")
    (tmp_path / "root").mkdir()
    (tmp_path / "root/dog").symlink_to(tmp_path / "data/dog")
    (tmp_path / "data/dog/loop").symlink_to(tmp_path / "data/dog")
    assert _rows(discover_videos(tmp_path / "root")) == [("dog/1.mp4", "dog", "")]


def test_missing_or_empty_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such folder") as error:
        discover_videos(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(error.value)
    _touch(tmp_path, "a/notes.txt", ".hidden/x.mp4")
    with pytest.raises(ValueError, match=f"{tmp_path}: no videos"):
        discover_videos(tmp_path)


# plain tables

def test_csv_with_header_labels_splits_and_missing(tmp_path: Path) -> None:
    _touch(tmp_path, "v/1.mp4", "v/2.mp4", "v/3.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / "list.csv", (
        "path,label,split\n# a comment\nv/2.mp4,juggling,train\n./v/1.mp4, abseiling ,Validation\n"
        "v/3.mp4\nv/absent.mp4,x,train\n\n"))])
    assert _rows(listing) == [("v/1.mp4", "abseiling", "val"), ("v/2.mp4", "juggling", "train"),
                              ("v/3.mp4", None, "")]
    assert listing.missing == ("v/absent.mp4",) and listing.classes == ("abseiling", "juggling", "x")
    assert listing.skipped == (f"{tmp_path / 'list.csv'} line 1: header (path, label, split)",
                               f"{tmp_path / 'list.csv'} line 2: 1 rows starting with # and naming no video, taken "
                               "as comments")


@pytest.mark.parametrize("text", [
    "v/1.mp4\tplaying cello\ttest\nv/2.mp4\tdrums\t\n",
    "video,class,split\nv/1.mp4,playing cello,test\nv/2.mp4,drums\n",
    "v/1.mp4 playing_cello test\nv/2.mp4 drums\n",
])
def test_tab_comma_and_space_separated_tables(tmp_path: Path, text: str) -> None:
    _touch(tmp_path, "v/1.mp4", "v/2.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / "l.txt", text)])
    assert [(e.path, e.split) for e in listing.entries] == [("v/1.mp4", "test"), ("v/2.mp4", "")]
    assert [e.label.replace("_", " ") for e in listing.entries] == ["playing cello", "drums"]


def test_integer_labels_sort_numerically(tmp_path: Path) -> None:
    _touch(tmp_path, "v/a.mp4", "v/b.mp4", "v/c.mp4", "v/d.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / "l.csv", "v/a.mp4,10\nv/b.mp4,2\nv/c.mp4,0\nv/d.mp4,2\n")])
    assert listing.classes == ("0", "2", "10")
    assert [e.label for e in listing.entries] == ["10", "2", "0", "2"]


def test_table_paths_are_exact_not_searched_by_name(tmp_path: Path) -> None:
    _touch(tmp_path, "test/a/1.mp4", "train/a/2.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / "l.csv", "train/a/1.mp4,a\ntrain/a/2.mp4,a\n")])
    assert _rows(listing) == [("train/a/2.mp4", "a", "")] and listing.missing == ("train/a/1.mp4",)


def test_absolute_paths_under_root_become_relative(tmp_path: Path) -> None:
    _touch(tmp_path, "root/v/1.mp4")
    listing = discover_videos(tmp_path / "root", [_write(tmp_path / "l.csv", f"{tmp_path}/root/v/1.mp4,a\n")])
    assert _rows(listing) == [("v/1.mp4", "a", "")]


@pytest.mark.parametrize("row", ["{tmp}/other/2.mp4,a", "../other/2.mp4,a"])
def test_paths_outside_root_are_refused(tmp_path: Path, row: str) -> None:
    _touch(tmp_path, "root/v/1.mp4", "other/2.mp4")
    with pytest.raises(ValueError, match="outside the input root"):
        discover_videos(tmp_path / "root", [_write(tmp_path / "l.csv", f"v/1.mp4,a\n{row.format(tmp=tmp_path)}\n")])


def test_a_video_listed_twice_is_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "v/1.mp4")
    with pytest.raises(ValueError, match="v/1.mp4 is listed twice"):
        discover_videos(tmp_path, [_write(tmp_path / "dup.csv", "v/1.mp4,a\n./v/1.mp4,b\n")])


# dataset formats

def test_kinetics_csv_resolves_zero_padded_names_anywhere(tmp_path: Path) -> None:
    _touch(tmp_path, "train/abseiling/abc_000012_000022.mp4", "x/y/-d_f_000000_000010.webm", "abc_12_22.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / "k.csv", (
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,abc,12,22,train,0\nair drumming,-d_f,0.0,10,validate,0\nair drumming,zzz,5,15,train,0\n"))])
    assert _rows(listing) == [("x/y/-d_f_000000_000010.webm", "air drumming", "val"),  # in the order of the ids
                              ("train/abseiling/abc_000012_000022.mp4", "abseiling", "train")]
    assert listing.missing == ("zzz_000005_000015",) and listing.classes == ("abseiling", "air drumming")


def test_kinetics_test_csv_without_labels(tmp_path: Path) -> None:
    _touch(tmp_path, "abc_000001_000011.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\n"
                                                                      "abc,1,11,test\n")])
    assert _rows(listing) == [("abc_000001_000011.mp4", None, "test")] and listing.classes == ()


def test_a_clip_present_twice_is_chosen_by_rule_and_noted(tmp_path: Path) -> None:
    """cvdfoundation's Kinetics layout: a replacement copy wins, else the extension listed first."""
    _touch(tmp_path, "train/abc_000012_000022.mp4", "replacement/replacement_for_corrupted_k400/abc_000012_000022.mp4",
           "train/def_000001_000011.mkv", "train/def_000001_000011.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / "k.csv", "label,youtube_id,time_start,time_end,split\n"
                                                                    "x,abc,12,22,train\nx,def,1,11,train\n")])
    assert [(e.path, e.note) for e in listing.entries] == [
        ("replacement/replacement_for_corrupted_k400/abc_000012_000022.mp4",
         "listed clip present 2 times, used replacement/replacement_for_corrupted_k400/abc_000012_000022.mp4 "
         "(others: train/abc_000012_000022.mp4)"),
        ("train/def_000001_000011.mp4",
         "listed clip present 2 times, used train/def_000001_000011.mp4 (others: train/def_000001_000011.mkv)")]
    mkv_first = discover_videos(tmp_path, [tmp_path / "k.csv"], extensions=["mkv", "mp4"])
    assert mkv_first.entries[1].path == "train/def_000001_000011.mkv"


def test_ucf101_train_and_test_lists(tmp_path: Path) -> None:
    _touch(tmp_path, "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "flat/v_Archery_g01_c01.avi",
           "UCF-101/Archery/v_Archery_g02_c01.avi")
    train = _write(tmp_path / "lists/trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                                       "Archery/v_Archery_g01_c01.avi 2\n")
    test = _write(tmp_path / "lists/testlist01.txt", "Archery/v_Archery_g02_c01.avi\nArchery/v_Archery_g09_c09.avi\n")
    assert _rows(discover_videos(tmp_path, [train])) == [
        ("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", "train"),
        ("flat/v_Archery_g01_c01.avi", "Archery", "train")]
    listing = discover_videos(tmp_path, [test])
    assert _rows(listing) == [("UCF-101/Archery/v_Archery_g02_c01.avi", "Archery", "test")]
    assert listing.missing == ("Archery/v_Archery_g09_c09.avi",)


def _hmdb(tmp_path: Path) -> Path:
    _touch(tmp_path, "videos/brush_hair/a.avi", "videos/brush_hair/b.avi", "videos/brush_hair/c.avi",
           "videos/cart_wheel/d.mp4")
    splits = tmp_path / "splits"
    _write(splits / "brush_hair_test_split1.txt", "a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    _write(splits / "cart_wheel_test_split1.txt", "d.avi 1\ne.avi 2\n")
    _write(splits / "brush_hair_test_split2.txt", "a.avi 2\nb.avi 0\nc.avi 1\n")
    _write(splits / "cart_wheel_test_split2.txt", "d.avi 2\n")
    return splits


def test_hmdb51_folder_uses_split_1_and_skips_unused(tmp_path: Path) -> None:
    listing = discover_videos(tmp_path / "videos", [_hmdb(tmp_path)])
    assert _rows(listing) == [("brush_hair/a.avi", "brush_hair", "train"), ("brush_hair/b.avi", "brush_hair", "test"),
                              ("cart_wheel/d.mp4", "cart_wheel", "train")]
    assert listing.missing == ("e.avi",) and listing.classes == ("brush_hair", "cart_wheel")


def test_hmdb51_glob_or_single_file_picks_the_split(tmp_path: Path) -> None:
    splits = _hmdb(tmp_path)
    assert _rows(discover_videos(tmp_path / "videos", [splits / "*_test_split2.txt"])) == [
        ("brush_hair/a.avi", "brush_hair", "test"), ("brush_hair/c.avi", "brush_hair", "train"),
        ("cart_wheel/d.mp4", "cart_wheel", "test")]
    assert _rows(discover_videos(tmp_path / "videos", [splits / "cart_wheel_test_split2.txt"])) == [
        ("cart_wheel/d.mp4", "cart_wheel", "test")]


def test_hmdb51_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _touch(tmp_path, "v/a.avi")
    with pytest.raises(ValueError, match="no HMDB51 split files"):
        discover_videos(tmp_path, [tmp_path / "empty"])
    bad = _write(tmp_path / "bad/x_test_split1.txt", "a.avi 1\na.avi 3\n")
    with pytest.raises(ValueError, match=r"x_test_split1.txt line 2: expected"):
        discover_videos(tmp_path, [bad.parent])


def test_something_something_v2_json(tmp_path: Path) -> None:
    _touch(tmp_path, "20bn/78687.webm", "20bn/42326.webm", "20bn/1420.webm")
    validation = _write(tmp_path / "something-something-v2-validation.json", json.dumps([
        {"id": "78687", "label": "holding potato next to vicks", "template": "Holding [something] next to [something]",
         "placeholders": ["potato", "vicks"]},
        {"id": "42326", "template": "Spinning [something] so it continues spinning"},
        {"id": "5", "template": "Pushing [something] from left to right"}]))
    listing = discover_videos(tmp_path, [validation])
    assert _rows(listing) == [("20bn/42326.webm", "Spinning something so it continues spinning", "val"),
                              ("20bn/78687.webm", "Holding something next to something", "val")]
    assert listing.missing == ("5",)
    test = _write(tmp_path / "something-something-v2-test.json", json.dumps([{"id": "1420"}]))
    assert _rows(discover_videos(tmp_path, [test])) == [("20bn/1420.webm", None, "test")]
    train = _write(tmp_path / "something-something-v2-train.json", json.dumps([{"id": 1420, "template": "[x]"}]))
    assert _rows(discover_videos(tmp_path, [train])) == [("20bn/1420.webm", "x", "train")]


# bad list files

@pytest.mark.parametrize("name, content, reason", [
    ("l.csv", "", "no rows"),
    ("l.csv", "path,label,split\n", "no rows"),
    ("l.csv", "v/1.mp4,a,train,extra\n", "line 1: expected path"),
    ("l.csv", "v/absent.mp4\n", "none of its 1 rows found"),
    ("k.csv", "label,youtube_id\nx,abc\n", "missing columns time_end, time_start"),
    ("k.csv", "label,youtube_id,time_start,time_end\nx,abc,soon,22\n", "line 2: times are not numbers"),
    ("s.json", '{"id": "1"}', "expected a JSON list"),
    ("s.json", '[{"id": "1"', "Expecting"),
    ("l.txt", b"\xff\xfe\x00bad", "can't decode"),
    ("absent.csv", None, "no such file"),
])
def test_bad_lists_are_one_line_errors_naming_the_file(tmp_path: Path, name: str, content: str | bytes | None,
                                                        reason: str) -> None:
    _touch(tmp_path, "v/1.mp4")
    list_file = tmp_path / name
    if isinstance(content, bytes):
        list_file.write_bytes(content)
    elif content is not None:
        list_file.write_text(content)
    with pytest.raises(ValueError, match=reason) as error:
        discover_videos(tmp_path, [list_file])
    assert str(error.value).startswith(f"{list_file}: ") and "\n" not in str(error.value)


def test_unreadable_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path, "v/1.mp4")
    list_file = _write(tmp_path / "l.csv", "v/1.mp4\n")

    def denied(*args: object, **kwargs: object) -> None:  # chmod does not stop root, so refuse the read here
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(ValueError, match=f"{list_file}: cannot read \\(Permission denied\\)"):
        discover_videos(tmp_path, [list_file])


# nothing dropped without a line: headers by name, comments, byte-order marks

@pytest.mark.parametrize("name, text", [("l.csv", "v/clip\nv/2.mp4\n"), ("l.txt", "v/clip a\nv/2.mp4 b\n"),
                                        ("l.csv", "video_1,a\nv/2.mp4,b\n")])
def test_a_first_row_is_data_unless_it_names_columns(tmp_path: Path, name: str, text: str) -> None:
    _touch(tmp_path, "v/2.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / name, text)])
    assert [e.path for e in listing.entries if e.found] == ["v/2.mp4"] and len(listing.missing) == 1
    assert listing.skipped == ()


def test_a_header_of_known_column_names_is_reported(tmp_path: Path) -> None:
    _touch(tmp_path, "v/2.mp4")
    listing = discover_videos(tmp_path, [_write(tmp_path / "l.txt", "Video Class\nv/2.mp4 b\n")])
    assert _rows(listing) == [("v/2.mp4", "b", "")] and listing.skipped == (
        f"{tmp_path / 'l.txt'} line 1: header (Video, Class)",)


def test_hash_names_real_videos_and_is_a_comment_only_otherwise(tmp_path: Path) -> None:
    _touch(tmp_path, "clap/#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", "clap/b.avi")
    listing = discover_videos(tmp_path, [_write(tmp_path / "l.csv", "# clips of clapping\n"
                                                                    "clap/#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi,clap\n"
                                                                    "clap/b.avi,clap\n#,a,b,c,d\n")])
    assert [e.path for e in listing.entries] == ["clap/#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", "clap/b.avi"]
    assert listing.skipped == (f"{tmp_path / 'l.csv'} line 4: comments",
                               f"{tmp_path / 'l.csv'} line 1: 1 rows starting with # and naming no video, taken as "
                               "comments")
    splits = _write(tmp_path / "splits/clap_test_split1.txt", "#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi 1\nb.avi 0\n")
    hmdb = discover_videos(tmp_path, [splits.parent])
    assert _rows(hmdb) == [("clap/#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", "clap", "train")]
    assert hmdb.skipped == (f"{splits.parent}: 1 rows marked 0 (not in this split)",)


def test_byte_order_marks_are_removed_from_every_list(tmp_path: Path) -> None:
    _touch(tmp_path, "v/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "v/brush_hair/a.avi", "v/brush_hair/b.avi")
    ucf = tmp_path / "trainlist01.txt"
    ucf.write_bytes("\ufeffApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n".encode())
    assert discover_videos(tmp_path, [ucf]).classes == ("ApplyEyeMakeup",)
    hmdb = tmp_path / "splits" / "brush_hair_test_split1.txt"
    hmdb.parent.mkdir()
    hmdb.write_bytes("\ufeffa.avi 1\nb.avi 2\n".encode())
    assert [e.path for e in discover_videos(tmp_path, [hmdb]).entries] == ["v/brush_hair/a.avi", "v/brush_hair/b.avi"]


# UCF101 class indices, several lists, where the list file is

UCF_CLASSES = ["ApplyEyeMakeup", "Hammering", "HammerThrow", "JumpingJack", "JumpRope"]  # classInd's order


def _ucf(tmp_path: Path) -> Path:
    for name in UCF_CLASSES:
        _touch(tmp_path, f"UCF-101/{name}/v_{name}_g01_c01.avi", f"UCF-101/{name}/v_{name}_g08_c01.avi")
    lists = tmp_path / "ucfTrainTestlist"
    _write(lists / "classInd.txt", "".join(f"{i} {name}\r\n" for i, name in enumerate(UCF_CLASSES, 1)))
    _write(lists / "trainlist01.txt", "".join(f"{n}/v_{n}_g08_c01.avi {UCF_CLASSES.index(n) + 1}\n"
                                              for n in ("HammerThrow", "JumpRope", "Hammering")))
    _write(lists / "testlist01.txt", "".join(f"{n}/v_{n}_g01_c01.avi\n" for n in ("JumpingJack", "HammerThrow")))
    return lists


def test_ucf101_classes_follow_classind(tmp_path: Path) -> None:
    lists = _ucf(tmp_path)
    train = discover_videos(tmp_path, [lists / "trainlist01.txt"])
    test = discover_videos(tmp_path, [lists / "testlist01.txt"])
    assert train.classes == test.classes == tuple(UCF_CLASSES)  # every class, in classInd's order
    _write(lists / "trainlist02.txt", "Hammering/v_Hammering_g08_c01.avi 3\n")
    with pytest.raises(ValueError, match="class index 3 of Hammering disagrees with classInd.txt \\(2\\)"):
        discover_videos(tmp_path, [lists / "trainlist02.txt"])


def test_train_and_test_lists_into_one_store(tmp_path: Path) -> None:
    lists = _ucf(tmp_path)
    both = discover_videos(tmp_path, [lists / "trainlist01.txt", lists / "testlist01.txt"])
    assert [(e.label, e.split) for e in both.entries] == [
        ("HammerThrow", "test"), ("HammerThrow", "train"), ("Hammering", "train"), ("JumpRope", "train"),
        ("JumpingJack", "test")]
    assert both.classes == tuple(UCF_CLASSES)
    _write(lists / "trainlist02.txt", "HammerThrow/v_HammerThrow_g08_c01.avi 3\n")
    with pytest.raises(ValueError, match="HammerThrow/v_HammerThrow_g08_c01.avi is listed twice \\(also in .*"
                                         "trainlist01.txt\\)"):
        discover_videos(tmp_path, [lists / "trainlist01.txt", lists / "trainlist02.txt"])


def test_a_list_file_is_found_in_the_working_directory_else_in_videos(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path, "data/v/1.mp4", "data/v/2.mp4")
    _write(tmp_path / "data/lists/l.csv", "v/1.mp4,a\n")
    _write(tmp_path / "elsewhere/lists/l.csv", "v/2.mp4,b\n")
    monkeypatch.chdir(tmp_path)  # a user's working directory: no lists/ here
    assert _rows(discover_videos(tmp_path / "data", [Path("lists/l.csv")])) == [("v/1.mp4", "a", "")]
    monkeypatch.chdir(tmp_path / "elsewhere")  # lists/l.csv here wins, as command-line paths do
    assert _rows(discover_videos(tmp_path / "data", [Path("lists/l.csv")])) == [("v/2.mp4", "b", "")]
