"""`eval --zero-shot --captions`: CLIP's frame-mean video embedding against sentence embeddings of the store's
own text tower, on a store of generated captioned videos, checked against an independent computation (the
tiny model's random text tower is near chance, so no accuracy level is asserted); the sentence embeddings kept
in the store; unknown and uncaptioned videos reported; the caption file's splits; refusals."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from scipy.stats import rankdata

from clipcache.cache.reader import CacheReader
from clipcache.cache.text import publish, read_text_embeddings, text_key
from clipcache.pipeline.evaluate.results import DESCRIPTION
from clipcache.pipeline.evaluate.retrieval import RANK_COLUMNS
from clipcache.pipeline.models import load_model
from clipcache.pipeline.train.text_embeddings import CAPTIONS, sentence_embeddings
from conftest import TINY_CONFIG, run_cli
from mounts import read_only
from retrieval_data import CaptionedStore, captioned_store  # noqa: F401 - the session's captioned store


def _eval(store: Path, captions: Path, out: Path, *extra: str | Path) -> tuple[dict, str]:
    result = run_cli("eval", store, "--zero-shot", "--captions", captions, "--device", "cpu", "--json", "--out", out,
                     *extra)
    assert result.code == 0, result
    return json.loads(result.stdout), result.stderr


def _caption_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [tuple(row) for row in list(csv.reader(handle))[1:]]


def _expected(store: Path, pairs: list[tuple[str, str]]) -> tuple[dict[str, float], np.ndarray, list[str]]:
    """Metrics computed without clipcache's retrieval code: the tiny model rebuilt from its config for the
    text, the stored per-frame embeddings for the videos, scipy for the ranks."""
    reader = CacheReader(store)
    paths = list(reader.column("path"))
    videos = list(dict.fromkeys(video for video, _ in pairs))
    frames = reader.pooled(np.array([paths.index(v) for v in videos]))[:, :1].astype(np.float64)  # the one test view
    frames /= np.linalg.norm(frames, axis=-1, keepdims=True)
    video = frames.mean(axis=(1, 2))
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    model = load_model("", None, TINY_CONFIG).model
    with torch.no_grad():
        text = model.encode_text(open_clip.get_tokenizer("tiny-vit")([s for _, s in pairs])).double().numpy()
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    similarity = text @ video.T
    owner = np.array([videos.index(v) for v, _ in pairs])
    t2v = np.array([rankdata(-row, method="min")[v] for row, v in zip(similarity, owner)])
    v2t = np.array([rankdata(-similarity[:, v], method="min")[owner == v].min() for v in range(len(videos))])
    metrics = {}
    for name, ranks in (("t2v", t2v), ("v2t", v2t)):
        metrics |= {f"{name}_r{k}": float(np.mean(ranks <= k)) for k in (1, 5, 10)}
        metrics |= {f"{name}_median_rank": float(np.median(ranks)), f"{name}_mean_rank": float(np.mean(ranks))}
    return metrics, t2v, videos


def _test_pairs(data: CaptionedStore) -> list[tuple[str, str]]:
    return [(video, caption) for video, caption in _caption_rows(data.captions) if video.startswith("test/")]


def test_zero_shot_retrieval_matches_an_independent_computation(captioned_store: CaptionedStore,  # noqa: F811
                                                                tmp_path: Path) -> None:
    data = captioned_store
    line = run_cli("eval", data.store, "--zero-shot", "--captions", data.captions, "--device", "cpu", "--out",
                   tmp_path)
    assert line.code == 0 and line.stderr == "", line
    assert line.stdout.startswith("zero-shot retrieval on split 'test' (8 videos, 16 captions):  t2v R@1 "), line
    assert line.stdout.count("\n") == 1 and " v2t R@1 " in line.stdout and " MdR " in line.stdout
    record, _ = _eval(data.store, data.captions, tmp_path)
    assert record["output"] == str(tmp_path / "features-test-zero-shot-retrieval-captions")  # the same folder
    metrics, t2v, videos = _expected(data.store, _test_pairs(data))
    assert {key: record[key] for key in metrics} == pytest.approx(metrics, abs=1e-12)
    assert record["videos"] == 8 and record["captions"] == 16 and record["classes"] is None
    assert set(DESCRIPTION) <= set(record) and record["split"] == record["split_requested"] == "test"
    assert record["method"] == "zero-shot retrieval" and record["held_out"] is True and record["protocol"] == "single"
    assert record["options"]["captions"] == str(data.captions.resolve())
    assert len(record["options"]["captions_sha256"]) == 64
    assert record["unknown_videos"] == record["uncaptioned_videos"] == [] and record["unknown_captions"] == 0
    assert "strictly higher" in record["ranking"]
    folder = Path(record["output"])
    assert sorted(p.name for p in folder.iterdir()) == ["ranks.csv", "result.json"]
    with (folder / "ranks.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == RANK_COLUMNS and len(rows) == 16 + 8
    t2v_rows = [row for row in rows if row["direction"] == "t2v"]
    assert [(row["path"], row["caption"]) for row in t2v_rows] == _test_pairs(data)
    assert [int(row["rank"]) for row in t2v_rows] == list(t2v)
    assert sorted(row["path"] for row in rows if row["direction"] == "v2t") == sorted(videos)


def test_sentence_embeddings_are_kept_in_the_store(captioned_store: CaptionedStore,  # noqa: F811
                                                   tmp_path: Path) -> None:
    store = tmp_path / "features.zarr"
    shutil.copytree(captioned_store.store, store, ignore=shutil.ignore_patterns("text"))
    record, _ = _eval(store, captioned_store.captions, tmp_path / "out")
    sentences = sorted({caption for _, caption in _test_pairs(captioned_store)})
    key = text_key(CAPTIONS, sentences)
    kept, damaged = read_text_embeddings(store, key, len(sentences))
    assert damaged is None and kept.shape == (8 * 2, CacheReader(store).settings.embed_dim)
    attrs = dict(CacheReader(store).root[f"text/{key}"].attrs)
    assert attrs == {**record["options"], "sentences": 16}
    # what is kept is what later evaluations use: each sentence replaced by its video's frame-mean embedding
    # (kept under the key) makes every caption find its video first
    reader = CacheReader(store)
    paths = list(reader.column("path"))
    frames = reader.pooled(np.array([paths.index(v) for v, _ in _test_pairs(captioned_store)]))[:, :1]
    frames = frames.astype(np.float64) / np.linalg.norm(frames.astype(np.float64), axis=-1, keepdims=True)
    perfect = frames.mean(axis=(1, 2))
    perfect = (perfect / np.linalg.norm(perfect, axis=1, keepdims=True)).astype(np.float32)
    by_sentence = {caption: row for (_, caption), row in zip(_test_pairs(captioned_store), perfect)}
    publish(store, key, np.stack([by_sentence[s] for s in sentences]), attrs)
    again, _ = _eval(store, captioned_store.captions, tmp_path / "out")
    assert again["t2v_r1"] == 1.0 and again["v2t_r1"] == 1.0 and record["t2v_r1"] < 1.0
    np.testing.assert_array_equal(sentence_embeddings(reader, sentences[::-1], {}), np.stack(
        [by_sentence[s] for s in sentences[::-1]]))  # any order, from the kept entry


def test_unknown_and_uncaptioned_videos_are_reported(captioned_store: CaptionedStore,  # noqa: F811
                                                     tmp_path: Path) -> None:
    rows = _caption_rows(captioned_store.captions)
    dropped = _test_pairs(captioned_store)[0][0]
    captions = tmp_path / "captions.csv"
    with captions.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("video", "caption"), ("video9999", "a green triangle"), *[
            row for row in rows if row[0] != dropped], ("video9999", "a green triangle spins")])
    record, err = _eval(captioned_store.store, captions, tmp_path)
    assert err == (f"{captions}: 2 captions of 1 videos the store does not hold and 1 videos of split 'test' "
                   "without a caption left out (result.json names them)\n")
    assert record["unknown_videos"] == ["video9999"] and record["unknown_captions"] == 2
    assert record["uncaptioned_videos"] == [dropped] and record["videos"] == 7 and record["captions"] == 14


def test_the_caption_files_splits_choose_the_videos(captioned_store: CaptionedStore,  # noqa: F811
                                                    tmp_path: Path) -> None:
    """MSR-VTT's JSON naming videos by id: its splits (validate -> val) replace the store's."""
    rows = _caption_rows(captioned_store.captions)
    ids = {video: Path(video).stem for video, _ in rows}
    split = {video: {"val": "test", "test": "train", "train": "validate"}[video.split("/")[0]] for video in ids}
    annotation = {"videos": [{"video_id": ids[v], "split": split[v], "id": i} for i, v in enumerate(ids)],
                  "sentences": [{"caption": c, "video_id": ids[v], "sen_id": i} for i, (v, c) in enumerate(rows)]}
    path = tmp_path / "videodatainfo.json"
    path.write_text(json.dumps(annotation), encoding="utf-8")
    record, _ = _eval(captioned_store.store, path, tmp_path / "a")
    assert record["split"] == "test" and record["videos"] == 8  # the store's val videos
    ranks = list(csv.DictReader((Path(record["output"]) / "ranks.csv").read_text(encoding="utf-8").splitlines()))
    assert {row["path"].split("/")[0] for row in ranks} == {"val"}
    record, err = _eval(captioned_store.store, path, tmp_path / "b", "--split", "val")
    assert record["split"] == "val" and record["videos"] == 24  # the store's train videos
    annotation["videos"] = [v for v in annotation["videos"] if v["split"] != "test"]  # no test split: val
    path.write_text(json.dumps(annotation), encoding="utf-8")
    record, err = _eval(captioned_store.store, path, tmp_path / "c")
    assert record["split"] == "val" and record["split_requested"] == "test" and record["videos"] == 24
    assert "no split 'test', scored 'val'" in err


@pytest.mark.parametrize(("args", "message"), [
    (("--captions", "CAPTIONS"),
     "--captions scores text-video retrieval: add --zero-shot, or --checkpoint of a retrieval run"),
    (("--zero-shot", "--captions", "CAPTIONS", "--half-classes", "2"),
     "--half-classes and --base-to-novel are classification protocols: not with --captions"),
    (("--zero-shot", "--captions", "nothing.csv"), "--captions nothing.csv: no such file"),
    (("--zero-shot", "--captions", "EMPTY"), "EMPTY: no caption names a done video of split 'test' of"),
])
def test_refusals_are_one_line(captioned_store: CaptionedStore, tmp_path: Path, args: tuple[str, ...],  # noqa: F811
                               message: str) -> None:
    empty = tmp_path / "other.csv"
    empty.write_text("train/red_square_left/red_square_left-train0.mp4,only a training video\n", encoding="utf-8")
    names = {"CAPTIONS": str(captioned_store.captions), "EMPTY": str(empty)}
    result = run_cli("eval", captioned_store.store, *[names.get(a, a) for a in args], "--device", "cpu",
                     "--out", tmp_path / "out")
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert f"clipcache: error: {message.replace('EMPTY', str(empty))}" in result.stderr, result


def test_a_read_only_store_keeps_the_sentence_embeddings_in_the_user_cache(
        captioned_store: CaptionedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    store = tmp_path / "data" / "features.zarr"
    shutil.copytree(captioned_store.store, store, ignore=shutil.ignore_patterns("text"))
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with read_only(store):
        first, err = _eval(store, captioned_store.captions, tmp_path / "a")
        again, err_again = _eval(store, captioned_store.captions, tmp_path / "b")
    assert "cannot keep caption embeddings in the store (" in err and "; kept in " in err
    assert err_again == ""  # read from the user cache
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert {k: first[k] for k in first if k.startswith(("t2v", "v2t"))} == \
        {k: again[k] for k in again if k.startswith(("t2v", "v2t"))}
