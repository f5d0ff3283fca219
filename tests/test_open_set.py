"""Efficient-Prompt's open-set localisation through the CLI with default options: proposals and a text head trained
on the seen classes of a STALE-style class split, detection scored on the unseen classes only; the protocol's
mean and std over splits; bad splits refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.localize.class_splits import class_split, random_split
from conftest import run_cli
from untrimmed_videos import annotated_store

KINDS = ("red_square", "green_circle", "blue_stripes", "square_left")
SEEN, UNSEEN = ("blue_stripes", "red_square"), ("green_circle", "square_left")
DURATION, RATE = 30, 4


@pytest.fixture(scope="module")
def split_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 videos of 30 s, two instances each, 6 for training and 3 for testing; training video v00 holds only unseen
    classes (so open-set training leaves it out), v03 and the test videos one seen and one unseen instance, the
    others two seen ones."""
    rng = np.random.default_rng(1)
    videos = []
    for i in range(9):
        kinds = UNSEEN if i == 0 else (SEEN[i % 2], UNSEEN[i % 2]) if i in (3, 6, 7, 8) else \
            (SEEN[i % 2], SEEN[1 - i % 2])
        t, instances = float(rng.uniform(2, 4)), []
        for kind in kinds:
            length = float(rng.uniform(4, 7))
            instances.append((round(t, 2), round(t + length, 2), kind))
            t += length + float(rng.uniform(5, 8))
        videos.append((f"v{i:02d}", instances, "test" if i >= 6 else "train"))
    store = annotated_store(tmp_path_factory.mktemp("open_set"), videos, DURATION, RATE)
    root = store.parent
    stale = root / "train_50_test_50" / "Synthetic"  # STALE's layout: train/ seen, test/ unseen
    for side, names in (("train", SEEN), ("test", UNSEEN)):
        (stale / side).mkdir(parents=True)
        (stale / side / "split_0.list").write_text("\n".join(names) + "\n")
    return store


def _json(*args: str | Path) -> dict:
    result = run_cli(*args, "--json", "--quiet")
    assert result.code == 0, result
    return json.loads(result.stdout)


def test_open_set_trains_on_seen_and_scores_unseen(split_store: Path, tmp_path: Path) -> None:
    folder = split_store.parent / "train_50_test_50" / "Synthetic"
    proposals, names = tmp_path / "proposals", tmp_path / "text"
    for head, out in (("proposals", proposals), ("text", names)):
        trained = run_cli("train-head", split_store, "--head", head, "--class-split", folder, "--out", out, "--quiet")
        assert trained.code == 0, trained
    classes = CacheReader(split_store).classes
    text_run = json.loads((names / "run.json").read_text())
    assert set(text_run["classes"]) == set(SEEN) and len(text_run["classes"]) == 2  # it scores the seen ones only
    for run in (text_run, json.loads((proposals / "run.json").read_text())):
        assert run["splits"]["train"] + run["splits"]["val"] == 5  # v00 (unseen classes only) left out
    unseen_index = {str(classes.index(c)) for c in UNSEEN}
    for args, naming in ((("--classifier", names), "head text"), ((), "zero-shot")):
        found = _json("eval", split_store, "--checkpoint", proposals, *args)
        assert found["protocol"] == "open-set" and found["method"] == f"head proposals + {naming}", found
        assert found["classes"] == 2 and found["options"]["unseen"] == [c for c in classes if c in UNSEEN]
        assert found["segments"] == 3 and found["videos"] == 3 and found["held_out"] is True
        assert set(found["per_class"]) <= unseen_index and found["per_class"], found["per_class"]
        submission = json.loads((Path(found["output"]) / "detections.json").read_text())
        labels = {d["label"] for video in submission["results"].values() for d in video}
        assert labels and labels <= set(UNSEEN), labels
    refused = run_cli("eval", split_store, "--checkpoint", names)
    assert refused.code == 2 and "open-set" in refused.stderr and refused.stderr.count("\n") == 1, refused
    other = tmp_path / "other"
    assert run_cli("train-head", split_store, "--head", "text", "--class-split", "0.5", "--out", other,
                   "--quiet", "--epochs", "1").code == 0
    mixed = run_cli("eval", split_store, "--checkpoint", proposals, "--classifier", other)
    assert mixed.code == 2 and "same --class-split" in mixed.stderr and mixed.stderr.count("\n") == 1, mixed


def test_class_splits_read_and_refuse(tmp_path: Path) -> None:
    classes = tuple(sorted(KINDS))
    drawn = [random_split(0.75, k, classes) for k in range(6)]
    assert all(len(s.seen) == 3 and len(s.unseen) == 1 and set(s.seen) | set(s.unseen) == set(classes)
               for s in drawn)
    assert random_split(0.75, 3, classes) == drawn[3] and len({s.unseen for s in drawn}) > 1
    good = tmp_path / "splits.json"
    good.write_text(json.dumps({"splits": [{"seen": list(SEEN), "unseen": list(UNSEEN)}]}))
    assert class_split(str(good), 0, classes).unseen == tuple(c for c in classes if c in UNSEEN)
    bad = tmp_path / "bad.json"
    for splits, reason in (([{"seen": ["Diving", *SEEN], "unseen": list(UNSEEN)}], "does not have: Diving"),
                           ([{"seen": list(KINDS), "unseen": []}], "no unseen class"),
                           ([{"seen": list(SEEN), "unseen": ["green_circle"]}], "leaves out")):
        bad.write_text(json.dumps({"splits": splits}))
        with pytest.raises(InputError, match=reason):
            class_split(str(bad), 0, classes)
    with pytest.raises(InputError, match="no split 1"):
        class_split(str(good), 1, classes)
    with pytest.raises(InputError, match="at least one class on each side"):
        class_split("0.99", 0, classes)


def test_the_protocol_averages_over_class_splits_beside_zero_shot(split_store: Path, tmp_path: Path) -> None:
    """Two seeded random 50/50 splits, one proposal run each: the record holds each split's numbers, their mean
    and std, and the zero-shot baseline's on the same splits, at the thresholds --tiou names; each split run sits
    in its own folder."""
    out = tmp_path / "protocol"
    result = run_cli("train-head", split_store, "--head", "proposals", "--class-split", "0.5", "--class-splits", "2",
                     "--tiou", "activitynet", "--out", out, "--quiet")
    assert result.code == 0, result
    record = json.loads(next((out / "eval").rglob("result.json")).read_text())
    assert record["protocol"] == "open-set" and [run["split"] for run in record["runs"]] == [0, 1]
    for key in ("map@0.5", "average_map", "zero_shot_average_map", "proposal_ar@10"):
        values = [run[key] for run in record["runs"]]
        assert record[key] == pytest.approx(np.mean(values)) and record[f"{key}_std"] == pytest.approx(np.std(values))
    assert (out / "split-0" / "proposals" / "run.json").is_file() and (out / "split-1" / "proposals").is_dir()
    assert record["classes"] == 2  # the unseen half of 4 classes
    assert "map@0.95" in record["runs"][0] and "map@0.3" not in record["runs"][0]  # ActivityNet's 0.5:0.05:0.95
