"""Caption files in their official layouts (MSR-VTT's annotation JSON, the 1k-A test CSV, plain video,caption
CSV/TSV), matched to a store's videos by path or id, with the file's splits, and refused in one line when
they cannot be read."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from clipcache.cache.reader import CacheReader
from clipcache.cache.writer import create_store
from clipcache.pipeline.train.captions import match_captions, read_captions
from clipcache.pipeline.train.splits import evaluation_split
from conftest import synthetic_store

BOM = "\ufeff"


def _msrvtt(videos: list[tuple[str, str]], sentences: list[tuple[str, str]]) -> str:
    """train_val_videodatainfo.json's layout: info, videos (category, url, video_id, start time, end time,
    split, id) and sentences (caption, video_id, sen_id)."""
    return json.dumps({
        "info": {"contributor": "test", "data_created": "2016-04-01", "version": "1.0", "year": "2016"},
        "videos": [{"category": 9, "url": f"https://www.youtube.com/watch?v=x{i}", "video_id": video,
                    "start time": 137.72, "end time": 149.44, "split": split, "id": i}
                   for i, (video, split) in enumerate(videos)],
        "sentences": [{"caption": caption, "video_id": video, "sen_id": i}
                      for i, (video, caption) in enumerate(sentences)],
    })


def test_msrvtt_annotation_json_with_its_splits(tmp_path: Path) -> None:
    path = tmp_path / "train_val_videodatainfo.json"
    text = _msrvtt([("video0", "train"), ("video1", "validate"), ("video2", "test")],
                   [("video2", "a cartoon animals runs through an ice cave in a video game"),
                    ("video0", "a man is  talking "), ("video2", "a character is running in the snow")])
    path.write_text(BOM + text, encoding="utf-8")  # with a byte-order mark
    captions = read_captions(path)
    assert captions.videos == ("video2", "video0", "video2")
    assert captions.sentences == ("a cartoon animals runs through an ice cave in a video game", "a man is talking",
                                  "a character is running in the snow")
    assert captions.splits == {"video0": "train", "video1": "val", "video2": "test"}
    assert captions.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert captions.source == {"captions": str(path.resolve()), "captions_sha256": captions.sha256}


def test_the_1k_a_test_csv(tmp_path: Path) -> None:
    path = tmp_path / "MSRVTT_JSFUSION_test.csv"
    path.write_text("key,vid_key,video_id,sentence\n"
                    "ret0,msr9770,video9770,a person is connecting something to system\n"
                    'ret1,msr7606,video7606,"a little girl does gymnastics, then bows"\n', encoding="utf-8")
    captions = read_captions(path)
    assert captions.videos == ("video9770", "video7606") and captions.splits is None
    assert captions.sentences == ("a person is connecting something to system",
                                  "a little girl does gymnastics, then bows")


def test_plain_csv_and_tsv_with_or_without_a_header(tmp_path: Path) -> None:
    plain = tmp_path / "captions.csv"
    plain.write_text(BOM + "# made by hand\nvideos/a.mp4,a man, a woman and a dog\n\nb,someone cooks\n",
                     encoding="utf-8")
    captions = read_captions(plain)  # no header: video,caption; unquoted commas stay in the caption
    assert captions.videos == ("videos/a.mp4", "b") and captions.splits is None
    assert captions.sentences == ("a man, a woman and a dog", "someone cooks")
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("Split\tVideo\tCaption\tannotator\ntrain\tv1\ta dog runs\tA\nvalidate\tv2\ta cat, asleep\tB\n"
                   "train\tv1\ta dog is running\tA\n", encoding="utf-8")
    captions = read_captions(tsv)  # a header: found by its column names, in any order and case
    assert captions.videos == ("v1", "v2", "v1")
    assert captions.sentences == ("a dog runs", "a cat, asleep", "a dog is running")
    assert captions.splits == {"v1": "train", "v2": "val"}


@pytest.mark.parametrize(("content", "message"), [
    ("", "no captions"),
    ("video_id\nvideo0\nvideo1\n", "line 1: expected video,caption (or a header naming a video column"),
    ("video,caption\nv1,a dog,runs\n", "line 2: 3 columns, the header names 2 (quote a caption"),
    ("v1,\n", "line 1: an empty caption"),
    ('{"videos": []}', 'expected the MSR-VTT layout: {"videos": [...], "sentences"'),
    ('{"sentences": [{"video_id": "v1"}]}', "sentence 0: expected an object with video_id and caption"),
    ('{"sentences": [', "not valid JSON"),
    ('{"videos": 5, "sentences": [{"video_id": "v1", "caption": "a dog"}]}', '"videos" is 5; expected the MSR-VTT'),
    ('[{"video_id": "v1", "caption": "a dog"}]', "the JSON is a list; expected the MSR-VTT layout"),
    ('{"sentences": {"v1": "a dog"}}', '"sentences" is an object; expected the MSR-VTT layout'),
    ('{"videos": []}', 'no "sentences"; expected the MSR-VTT layout'),
    ("video,caption,split\nv1,a dog,train\nv1,a dog runs,test\n", "line 3: video 'v1' is in split 'test' here "
                                                                    "and 'train' before"),
])
def test_bad_caption_files_are_refused_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "captions.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="^" + re.escape(f"{path}: ")) as refused:
        read_captions(path)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_unreadable_and_missing_files_are_refused(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("v1,caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv: not UTF-8 text"):
        read_captions(latin)
    with pytest.raises(ValueError, match="--captions .*nothing.csv: no such file"):
        read_captions(tmp_path / "nothing.csv")
    with pytest.raises(ValueError, match=f"^--captions {re.escape(str(tmp_path))}: a folder; name the caption file"):
        read_captions(tmp_path)


def test_videos_are_matched_by_store_path_or_id(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr")  # paths <split>/<i>.mp4, i = 0..11
    reader = CacheReader(store)
    path = tmp_path / "captions.csv"
    path.write_text("test/9.mp4,by the store's path\n10,by id\n11.mp4,by file name\n/data/msrvtt/videos/3.mp4,"
                    "by a path under another root\nvideo99,not in the store\ntest/9.mp4,a second caption\n"
                    "video99,again not\n", encoding="utf-8")
    captions = match_captions(read_captions(path), reader)
    np.testing.assert_array_equal(captions.video, [9, 10, 11, 3, -1, 9, -1])
    assert captions.unknown == ("video99",) and captions.unknown_captions == 2 and captions.splits is None
    np.testing.assert_array_equal(captions.captioned(np.array([11, 2, 9])), [11, 9])
    rows, position = captions.of(np.array([11, 2, 9]))
    np.testing.assert_array_equal(rows, [0, 2, 5])  # file order
    np.testing.assert_array_equal(position, [2, 0, 2])  # each caption's video among the three


def test_a_name_that_fits_several_videos_is_refused(tmp_path: Path) -> None:
    settings = dataclasses.replace(CacheReader(synthetic_store(tmp_path / "s.zarr")).settings, num_videos=2)
    store = tmp_path / "twins.zarr"
    create_store(store, settings, ["a/x.mp4", "b/x.mp4"], [0, 1], ["train", "test"], {})
    path = tmp_path / "captions.csv"
    path.write_text("b/x.mp4,named by path: fine\n", encoding="utf-8")
    np.testing.assert_array_equal(match_captions(read_captions(path), CacheReader(store)).video, [1])
    path.write_text("x,named by id: which one?\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"captions.csv: video 'x' fits 2 videos of .*twins.zarr \(a/x.mp4, "
                                         r"b/x.mp4\); name it by its path in the store"):
        match_captions(read_captions(path), CacheReader(store))


def test_the_caption_files_splits_replace_the_stores(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr")  # store splits: 0-2 train, 3-5 train, 6-8 val, 9-11 test
    reader = CacheReader(store)
    path = tmp_path / "captions.json"
    path.write_text(_msrvtt([("0", "test"), ("1", "test"), ("6", "validate"), ("nowhere", "test")],
                            [("0", "a"), ("1", "b"), ("6", "c"), ("9", "d")]), encoding="utf-8")
    captions = match_captions(read_captions(path), reader)
    assert list(np.flatnonzero(captions.splits == "test")) == [0, 1] and captions.splits[9] == ""
    scored = evaluation_split(reader, "test", captions.splits, path, labels=False)
    np.testing.assert_array_equal(scored.videos, [0, 1])
    path.write_text(_msrvtt([("6", "validate")], [("6", "c")]), encoding="utf-8")  # no test split: val, said so
    captions = match_captions(read_captions(path), reader)
    scored = evaluation_split(reader, "test", captions.splits, path, labels=False)
    assert scored.name == "val" and scored.fell_back and list(scored.videos) == [6]
    with pytest.raises(ValueError, match=r"s.zarr with the splits of .*captions.json: no done videos in split "
                                         r"'train' \(splits present: \['val'\]\)"):
        evaluation_split(reader, "train", captions.splits, path, labels=False)
