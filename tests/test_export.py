"""`clipcache export`: a dense store's features and segments as ActionFormer/OpenTAD read them, and the per-video
.npy layout of video_features, from real stores extracted from generated videos with the tiny model."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.cache.segments import read_segments, write_segments
from clipcache.pipeline.export.config import ExportConfig
from clipcache.pipeline.export.folder import MARKER
from clipcache.pipeline.export.run import export
from clipcache.pipeline.extract.annotations import apply_rules, read_annotations
from conftest import TINY_CONFIG, run_cli
from untrimmed_videos import write_cfr, write_vfr

RATE = 2
SEGMENTS = """video,start,end,label
a,0.7,3.2,wave
a,4.05,8.6,jump
a,2.3,2.9,Ambiguous
b,1.1,2.45,jump
b,5.3,7.5,wave
"""  # b is 6 s long: its last segment runs past the end and is clipped to 6


def extract(videos: Path, store: Path, *extra: str) -> Path:
    result = run_cli("extract", videos, store, "--model-config", TINY_CONFIG, "--device", "cpu", "--workers", "1",
                     "--quiet", "--shard-videos", "1", *extra)
    assert result.code == 0, result
    return store


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two constant-rate videos (10 fps, 9 s and 6 s), a validation and a test video as THUMOS14 splits them."""
    root = tmp_path_factory.mktemp("videos")
    write_cfr(root / "a.mp4", 9, fps=10)
    write_cfr(root / "b.mp4", 6, fps=10)
    (root / "list.csv").write_text("a.mp4,x,val\nb.mp4,x,test\n")
    return root


@pytest.fixture(scope="module")
def dense_store(videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense store at 2 per second with the CLS token of the last block, and segments from a CSV file."""
    store = extract(videos, tmp_path_factory.mktemp("dense") / "store.zarr", "--list", "list.csv", "--fps",
                    str(RATE), "--layers", "-1", "--tokens", "cls")
    csv = videos.parent / "segments.csv"
    csv.write_text(SEGMENTS)
    table, _ = apply_rules(read_annotations([csv]), list(CacheReader(store).column("path")))
    write_segments(store, table)
    return store


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def actionformer_grid(seconds: float, fps: float, num_frames: float, feat_stride: float) -> float:
    """ActionFormer's position of a time on the feature grid: libs/datasets/thumos14.py and anet.py, __getitem__
    (segments in seconds times fps, less half a clip of num_frames frames, over the feature stride)."""
    return (seconds * fps - 0.5 * num_frames) / feat_stride


def actionformer_seconds(grid: float, fps: float, num_frames: float, feat_stride: float) -> float:
    """Its inverse for predictions: libs/modeling/meta_archs.py, postprocessing."""
    return (grid * feat_stride + 0.5 * num_frames) / fps


def test_actionformer_export_puts_each_feature_at_its_stored_time(dense_store: Path, tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    out = tmp_path / "af"
    summary = export(ExportConfig(store=dense_store, out=out, quiet=True))
    assert summary.exported == 2 and not summary.bad, summary
    reader = CacheReader(dense_store)
    database = load(out / "annotations.json")["database"]
    assert sorted(database) == ["a", "b"]
    config = yaml.safe_load((out / "actionformer.yaml").read_text())
    dataset = config["dataset"]
    assert config["train_split"] == ["validation"] and config["val_split"] == ["testing"]  # THUMOS14's convention
    assert (dataset["feat_stride"], dataset["num_frames"], dataset["default_fps"]) == (1, 0, RATE)
    assert dataset["force_upsampling"] is False and dataset["input_dim"] == reader.settings.embed_dim
    assert Path(dataset["feat_folder"]) == (out / "features").resolve()
    assert load(out / "features.json")["actionformer"] == {k: v for k, v in dataset.items()
                                                          if k not in ("trunc_thresh", "crop_ratio")}
    table = read_segments(dense_store)
    checked = 0
    for video, stem in enumerate(reader.column("path")):
        stem = Path(stem).stem
        features = np.load(out / "features" / f"{stem}.npy")
        assert features.dtype == np.float32 and features.shape == (reader.samples[video], reader.settings.embed_dim)
        np.testing.assert_array_equal(features, reader.dense(video, "pooled").astype(np.float32))
        times = reader.dense(video, "time")
        np.testing.assert_allclose(times, np.arange(len(times)) / RATE)  # 10 fps: every sample's frame is at k/F
        entry = database[stem]
        assert entry["subset"] == {"a": "validation", "b": "testing"}[stem]
        assert entry["duration"] == pytest.approx(reader.column("duration")[video], abs=1e-6)
        fps = dataset["default_fps"] or entry["fps"]
        assert entry["fps"] == fps
        rows = np.flatnonzero((table.video == video) & ~table.ambiguous)
        expected = [(float(table.start[r]), min(float(table.end[r]), entry["duration"]), table.classes[table.label[r]])
                    for r in rows]
        got = [(a["segment"][0], a["segment"][1], a["label"]) for a in entry["annotations"]]
        assert [g[2] for g in got] == [e[2] for e in expected]
        np.testing.assert_allclose([g[:2] for g in got], [e[:2] for e in expected])
        for annotation in entry["annotations"]:
            start, end = annotation["segment"]
            assert annotation["label_id"] == table.classes.index(annotation["label"])
            np.testing.assert_allclose(annotation["segment(frames)"], [start * fps, end * fps])
            first = actionformer_grid(start, fps, dataset["num_frames"], dataset["feat_stride"])
            last = actionformer_grid(end, fps, dataset["num_frames"], dataset["feat_stride"])
            covered = set(range(max(math.ceil(first), 0), min(math.floor(last), len(features) - 1) + 1))
            inside = set(np.flatnonzero((times >= start) & (times <= end)).tolist())
            assert covered == inside and inside, (stem, annotation)
            checked += 1
        for index in range(len(features)):
            assert actionformer_seconds(index, fps, dataset["num_frames"], dataset["feat_stride"]) == \
                pytest.approx(times[index])
    assert checked == 4
    assert load(out / "ambiguous.json") == {"a": [[2.3, 2.9]]}
    text = str(summary)
    assert "past the end: 1 segments clipped to the end" in text and "feat_stride: 1" in text, text


def test_cls_tokens_export_and_bad_feature_choices(dense_store: Path, tmp_path: Path) -> None:
    reader = CacheReader(dense_store)
    block = reader.settings.layers[0]
    summary = export(ExportConfig(store=dense_store, out=tmp_path / "cls", format="npy", features="cls:-1", quiet=True))
    assert summary.exported == 2
    np.testing.assert_array_equal(np.load(tmp_path / "cls" / "b.npy"),
                                  reader.dense(1, f"block_{block}")[:, 0].astype(np.float32))
    for spec, message in [("cls:0", "keeps no block 0"), ("tokens", "expected pooled or cls:<block>"),
                          ("cls:x", "expected pooled or cls:<block>")]:
        with pytest.raises(InputError, match=message):
            export(ExportConfig(store=dense_store, out=tmp_path / spec, features=spec, quiet=True))
        assert not (tmp_path / spec).exists()


def test_npy_export_of_dense_and_clip_stores(dense_store: Path, videos: Path, tmp_path: Path) -> None:
    dense = CacheReader(dense_store)
    export(ExportConfig(store=dense_store, out=tmp_path / "dense", format="npy", quiet=True))
    np.testing.assert_array_equal(np.load(tmp_path / "dense" / "a.npy"), dense.dense(0, "pooled").astype(np.float32))
    np.testing.assert_allclose(np.load(tmp_path / "dense" / "a_timestamps_ms.npy"), dense.dense(0, "time") * 1000)
    assert np.load(tmp_path / "dense" / "a_fps.npy") == RATE

    clips = CacheReader(extract(videos, tmp_path / "clips.zarr", "--list", "list.csv", "--frames", "4", "--clips", "2",
                                 "--layers", "-1"))
    summary = export(ExportConfig(store=clips.path, out=tmp_path / "clips", format="npy", quiet=True))
    assert summary.exported == 2
    for video, stem in enumerate("ab"):
        np.testing.assert_array_equal(np.load(tmp_path / "clips" / f"{stem}.npy"),
                                      clips.pooled(video)[0].astype(np.float32))  # view 0: the first clip
        frames, fps = clips.column("frame_index")[video, 0], clips.column("fps")[video]
        assert fps == pytest.approx(10) and np.load(tmp_path / "clips" / f"{stem}_fps.npy") == pytest.approx(10)
        timestamps = np.load(tmp_path / "clips" / f"{stem}_timestamps_ms.npy")
        np.testing.assert_allclose(timestamps, frames / 10 * 1000, rtol=1e-6)
        assert timestamps.shape == (4,) and (np.diff(timestamps) > 0).all()
    with pytest.raises(InputError, match="needs a dense store"):
        export(ExportConfig(store=clips.path, out=tmp_path / "af", quiet=True))
    assert not (tmp_path / "af").exists()


def test_the_folder_is_replaced_only_when_an_export_made_it(dense_store: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="not made by `clipcache export`"):
            export(ExportConfig(store=dense_store, out=foreign, overwrite=overwrite, quiet=True))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    out = tmp_path / "out"
    export(ExportConfig(store=dense_store, out=out, format="npy", quiet=True))
    (out / "mine.txt").write_text("kept")
    with pytest.raises(InputError, match="--overwrite replaces it"):
        export(ExportConfig(store=dense_store, out=out, quiet=True))
    export(ExportConfig(store=dense_store, out=out, overwrite=True, quiet=True))  # npy files -> actionformer files
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == sorted([MARKER, "actionformer.yaml", "ambiguous.json", "annotations.json", "features.json",
                            "features/a.npy", "features/b.npy", "mine.txt"])
    assert (out / "mine.txt").read_text() == "kept"


def test_a_store_of_every_frame_exports_only_evenly_timed_videos(tmp_path: Path) -> None:
    write_cfr(tmp_path / "v" / "even.mp4", 2, fps=10)
    write_vfr(tmp_path / "v" / "uneven.mkv", 3)
    store = extract(tmp_path / "v", tmp_path / "all.zarr", "--fps", "all")
    summary = export(ExportConfig(store=store, out=tmp_path / "out", quiet=True))
    assert summary.exported == 1 and len(summary.bad) == 1, summary
    assert "uneven.mkv" in summary.bad[0] and "not evenly spaced" in summary.bad[0] and "\n" not in summary.bad[0]
    database = load(tmp_path / "out" / "annotations.json")["database"]
    assert list(database) == ["even"] and database["even"]["fps"] == 10
    assert load(tmp_path / "out" / "features.json")["actionformer"]["default_fps"] == 10
    assert np.load(tmp_path / "out" / "features" / "even.npy").shape[0] == 20
    assert not (tmp_path / "out" / "features" / "uneven.npy").exists()


def test_two_videos_with_one_stem_are_refused(tmp_path: Path) -> None:
    write_cfr(tmp_path / "v" / "x" / "clip.mp4", 1)
    write_cfr(tmp_path / "v" / "y" / "clip.mp4", 1)
    store = extract(tmp_path / "v", tmp_path / "s.zarr", "--fps", "2")
    with pytest.raises(InputError, match=r"x/clip.mp4 and y/clip.mp4 share the file stem 'clip'"):
        export(ExportConfig(store=store, out=tmp_path / "out", quiet=True))
    assert not (tmp_path / "out").exists()


def test_a_damaged_video_is_one_line_and_the_rest_is_exported(dense_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "damaged.zarr"
    shutil.copytree(dense_store, store)
    (store / "dense/1/pooled/c/0/0").unlink()
    summary = export(ExportConfig(store=store, out=tmp_path / "out", quiet=True))
    assert summary.exported == 1 and len(summary.bad) == 1, summary
    assert "dense/1/pooled of video 1 (b.mp4) is damaged" in summary.bad[0] and "\n" not in summary.bad[0]
    assert list(load(tmp_path / "out" / "annotations.json")["database"]) == ["a"]
    assert "1 left out for bad input" in str(summary)
