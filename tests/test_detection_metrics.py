"""Detection mAP and proposal AR-AN: cases worked out on paper, an independent loop-by-loop re-implementation of
ActivityNet's official algorithm on random detections, THUMOS14's Ambiguous rule, and the result files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipcache import InputError
from clipcache.pipeline.evaluate.detection import (
    ACTIVITYNET,
    THUMOS14,
    Segments,
    detection_map,
    proposal_recall,
    threshold_set,
)
from clipcache.pipeline.evaluate.detection_files import read_proposals, read_submission, write_submission


def segments(rows: list[tuple]) -> Segments:
    """Rows (video, start, end, label[, score])."""
    columns = list(zip(*rows))
    return Segments.of(*columns[:4], columns[4] if len(columns) > 4 else None)


# ---- (a) cases worked out by hand

def test_two_videos_two_classes_duplicates() -> None:
    ground_truth = segments([("v1", 0, 10, "jump"), ("v1", 20, 30, "jump"), ("v2", 0, 10, "jump"),
                             ("v1", 40, 50, "run")])
    detections = segments([
        ("v1", 0, 10, "jump", 0.9),   # d1: tIoU 1 with v1 [0,10]: TP
        ("v1", 0, 10, "jump", 0.8),   # d2: the same instance again, already taken: FP (duplicate)
        ("v2", 5, 15, "jump", 0.7),   # d3: tIoU 5/15 = 1/3 with v2 [0,10]: TP at 0.3, FP at 0.4 and above
        ("v1", 20, 30, "jump", 0.6),  # d4: TP
        ("v1", 40, 50, "run", 0.5),   # d5: TP
        ("v2", 40, 50, "run", 0.95),  # d6: v2 has no "run": FP, ranked first
    ])
    result = detection_map(ground_truth, detections, THUMOS14)
    # jump at 0.3, ranked d1..d4 = TP FP TP TP, 3 instances: precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1;
    # envelope 1, 3/4, 3/4 over the recall steps of 1/3 each: AP = 1/3 + 1/4 + 1/4 = 5/6.
    # jump at 0.4..0.7: TP FP FP TP: precision 1, 1/2, 1/3, 1/2 at recall 1/3, 1/3, 1/3, 2/3: AP = 1/3 + 1/6 = 1/2.
    # run: FP then TP: precision 1/2 at recall 1: AP = 1/2 at every threshold.
    assert result.classes == ("jump", "run")
    np.testing.assert_allclose(result.ap[:, 0], [5 / 6, 1 / 2, 1 / 2, 1 / 2, 1 / 2], atol=1e-12)
    np.testing.assert_allclose(result.ap[:, 1], 1 / 2, atol=1e-12)
    np.testing.assert_allclose(result.mean_ap, [2 / 3, 1 / 2, 1 / 2, 1 / 2, 1 / 2], atol=1e-12)
    assert result.average_map == pytest.approx((2 / 3 + 4 / 2) / 5)
    assert result.ground_truth.tolist() == [3, 1] and result.tied == 0 and result.unscored == 0
    metrics = result.metrics()
    assert metrics["map@0.3"] == pytest.approx(2 / 3) and metrics["map@0.7"] == pytest.approx(1 / 2)
    assert result.per_class()["jump"]["ap@0.3"] == pytest.approx(5 / 6)


def test_a_detection_overlapping_two_ground_truths_takes_the_better_one_only() -> None:
    ground_truth = segments([("v", 0, 10, "a"), ("v", 2, 12, "a")])
    detections = segments([
        ("v", 1, 11.5, "a", 0.9),  # tIoU 9/11.5 = 0.78 with [0,10], 9.5/11 = 0.86 with [2,12]: takes [2,12]
        ("v", 2, 12, "a", 0.8),    # tIoU 1 with [2,12] (taken), 8/12 = 0.67 with [0,10]: takes it if 0.67 >= t
    ])
    result = detection_map(ground_truth, detections, [0.5, 0.7])
    # at 0.5: TP TP, AP 1. At 0.7: TP then FP: precision 1 at recall 1/2, never more recall: AP 1/2.
    np.testing.assert_allclose(result.ap[:, 0], [1.0, 0.5], atol=1e-12)
    # alone, the first detection finds one of the two instances, whatever the threshold: AP 1/2
    np.testing.assert_allclose(detection_map(ground_truth, detections.take([0]), [0.5, 0.7]).ap[:, 0], 0.5)


def test_tied_scores_take_numpys_unstable_order_as_the_official_code() -> None:
    ground_truth = segments([("v", 0, 10, "a"), ("v", 20, 30, "a")])
    # two true positives of different instances tied: the order cannot matter, AP 1
    both_hit = segments([("v", 0, 10, "a", 0.5), ("v", 20, 30, "a", 0.5)])
    result = detection_map(ground_truth, both_hit, [0.5])
    assert result.ap[0, 0] == 1.0 and result.tied == 2
    # a hit and a miss tied: hit first gives TP FP (AP 1/2: one of two found at precision 1); miss first gives
    # FP TP (precision 1/2 at recall 1/2: AP 1/4). The official code ranks with np.argsort(scores)[::-1].
    hit_and_miss = segments([("v", 0, 10, "a", 0.5), ("v", 50, 60, "a", 0.5)])
    first = int(np.argsort(np.array([0.5, 0.5]))[::-1][0])
    assert detection_map(ground_truth, hit_and_miss, [0.5]).ap[0, 0] == (0.5 if first == 0 else 0.25)


def test_classes_without_ground_truth_are_not_scored_and_classes_without_detections_score_zero() -> None:
    ground_truth = segments([("v", 0, 10, "a"), ("v", 20, 30, "b")])
    detections = segments([("v", 0, 10, "a", 0.9), ("v", 20, 30, "c", 0.8)])
    result = detection_map(ground_truth, detections, [0.5])
    assert result.classes == ("a", "b") and result.unscored == 1 and result.detections == 2
    np.testing.assert_array_equal(result.ap[0], [1.0, 0.0])
    assert detection_map(ground_truth, Segments.of([], [], [], [], []), [0.5]).mean_ap[0] == 0.0


def test_perfect_detector_and_half_length_shift() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for video in range(6):
        start = 0.0
        for _ in range(4):  # instances with gaps longer than themselves: a shifted one meets only its own
            start += rng.uniform(2, 5)
            length = rng.uniform(1, 4)
            rows.append((f"v{video}", start, start + length, int(rng.integers(0, 3))))
            start += 2.5 * length
    ground_truth = segments(rows)
    scores = rng.random(len(rows))
    perfect = Segments.of(ground_truth.video, ground_truth.start, ground_truth.end, ground_truth.label, scores)
    for thresholds in (THUMOS14, ACTIVITYNET):
        np.testing.assert_array_equal(detection_map(ground_truth, perfect, thresholds).mean_ap, 1.0)
    half = (ground_truth.end - ground_truth.start) / 2
    shifted = Segments.of(ground_truth.video, ground_truth.start + half, ground_truth.end + half,
                          ground_truth.label, scores)
    # each shifted detection overlaps its instance by half its length: tIoU (L/2) / (3L/2) = 1/3
    result = detection_map(ground_truth, shifted, [0.1, 0.3, 0.33, 0.34, 0.4, 0.5, 0.7, 0.95])
    np.testing.assert_allclose(result.mean_ap, [1, 1, 1, 0, 0, 0, 0, 0])


def test_a_tiou_equal_to_the_threshold_is_a_match() -> None:
    ground_truth = segments([("v", 0, 10, "a")])
    half = segments([("v", 0, 5, "a", 1.0)])  # tIoU exactly 5/10: the official test is tIoU < threshold -> FP
    np.testing.assert_array_equal(detection_map(ground_truth, half, [0.45, 0.5, 0.55]).ap[:, 0], [1, 1, 0])


def test_threshold_sets() -> None:
    assert threshold_set("THUMOS14") == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert threshold_set("activitynet") == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    assert threshold_set([0.1, 0.25]) == (0.1, 0.25)
    for bad in ("coco", [], [0.0], [1.5]):
        with pytest.raises(ValueError):
            threshold_set(bad)


# ---- (b) an independent re-implementation, as literal as the official description

def reference_map(gt: list[tuple], dets: list[tuple], thresholds: list[float],
                  ambiguous: list[tuple] = ()) -> tuple[list, list[list[float]]]:
    """ActivityNet's algorithm, spelled out with Python loops over plain tuples: gt (video, start, end, label),
    dets (video, start, end, label, score), ambiguous (video, start, end). Returns the classes and AP[t][k]."""
    def tiou(a: tuple, b: tuple) -> float:
        inter = max(0.0, min(a[2], b[2]) - max(a[1], b[1]))
        return inter / ((b[2] - b[1]) + (a[2] - a[1]) - inter)

    classes = []
    for g in gt:
        if g[3] not in classes:
            classes.append(g[3])
    ap = [[0.0] * len(classes) for _ in thresholds]
    for k, label in enumerate(classes):
        class_gt = [g for g in gt if g[3] == label]
        class_dets = [d for d in dets if d[3] == label]
        if not class_dets:
            continue
        ranked = [class_dets[i] for i in np.argsort(np.array([d[4] for d in class_dets]))[::-1]]
        for t, threshold in enumerate(thresholds):
            taken = [False] * len(class_gt)
            flags = []  # 1 true positive, 0 false positive; ignored detections leave no flag
            for d in ranked:
                own = [j for j in range(len(class_gt)) if class_gt[j][0] == d[0]]
                ious = np.array([tiou(d, class_gt[j]) for j in own])
                matched = False
                for position in (np.argsort(ious)[::-1] if own else []):
                    if ious[position] < threshold:
                        break
                    if not taken[own[position]]:
                        taken[own[position]] = matched = True
                        break
                if not matched and any(a[0] == d[0] and min(a[2], d[2]) - max(a[1], d[1]) > 0 for a in ambiguous):
                    continue
                flags.append(1 if matched else 0)
            precision, recall, hits = [], [], 0
            for n, flag in enumerate(flags, 1):
                hits += flag
                precision.append(hits / n)
                recall.append(hits / len(class_gt))
            precision = [0.0] + precision + [0.0]
            recall = [0.0] + recall + [1.0]
            for i in range(len(precision) - 2, -1, -1):
                precision[i] = max(precision[i], precision[i + 1])
            ap[t][k] = sum((recall[i] - recall[i - 1]) * precision[i] for i in range(1, len(recall))
                           if recall[i] != recall[i - 1])
    return classes, ap


def random_case(rng: np.random.Generator, videos: int, classes: int, quantised: bool
                ) -> tuple[list[tuple], list[tuple], list[tuple]]:
    gt, dets, amb = [], [], []
    for _ in range(int(rng.integers(videos, 4 * videos))):
        start = float(rng.uniform(0, 200))
        gt.append((f"v{rng.integers(videos)}", start, start + float(rng.uniform(1, 30)), int(rng.integers(classes))))
    for _ in range(int(rng.integers(0, 20 * videos))):
        if rng.random() < 0.6:  # near an instance: jittered, sometimes of another class
            video, start, end, label = gt[rng.integers(len(gt))]
            start, end = start + rng.normal(0, 3), end + rng.normal(0, 3)
            label = label if rng.random() < 0.8 else int(rng.integers(classes))
        else:
            video, start, label = f"v{rng.integers(videos + 2)}", rng.uniform(0, 200), int(rng.integers(classes))
            end = start + rng.uniform(1, 30)
        score = round(float(rng.random()), 1) if quantised else float(rng.random())
        dets.append((video, float(start), float(max(start, end)), label, score))
    for _ in range(videos):
        start = float(rng.uniform(0, 200))
        amb.append((f"v{rng.integers(videos)}", start, start + float(rng.uniform(1, 20)), -1))
    return gt, dets, amb


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_a_literal_reimplementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    thresholds = list(ACTIVITYNET) if seed % 2 else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    gt, dets, amb = random_case(rng, videos=12, classes=6, quantised=seed >= 3)  # ties in score from seed 3 on
    for ambiguous in ((), amb):
        classes, expected = reference_map(gt, dets, thresholds, ambiguous)
        result = detection_map(segments(gt), segments(dets), thresholds,
                               ambiguous=segments(list(ambiguous)) if ambiguous else None)
        assert list(result.classes) == classes
        np.testing.assert_allclose(result.ap, np.array(expected), atol=1e-6, rtol=0)
    assert result.ap.max() > 0.2 and result.ap.min() < result.ap.max()  # the case is not degenerate
    assert sum(result.ignored) > 0  # the last pass had ambiguous regions, and they dropped detections


# ---- (c) proposals

def test_proposal_average_recall_on_a_hand_case() -> None:
    ground_truth = segments([("A", 0, 10, -1), ("B", 0, 10, -1), ("B", 20, 30, -1)])
    rows = []
    for video, special in (("A", {0: (0, 10)}), ("B", {0: (20, 30), 6: (0, 7.2), 49: (0, 10)})):
        for rank in range(100):  # 100 proposals per video: AN = n uses exactly each video's top n
            start, end = special.get(rank, (100 + rank, 101 + rank))  # the rest overlap nothing
            rows.append((video, start, end, -1, 1 - rank / 1000))
    result = proposal_recall(ground_truth, segments(rows))
    # top 1..6: A's instance and B's [20,30] (tIoU 1): 2 of 3 at every threshold -> AR 2/3.
    # from the 7th, [0,7.2] gives B's [0,10] tIoU 0.72: found at 0.5..0.7, 5 of 10 thresholds -> AR 5/6.
    # from the 50th, an exact [0,10]: AR 1.
    metrics = result.metrics()
    assert metrics["ar@1"] == pytest.approx(2 / 3) and metrics["ar@5"] == pytest.approx(2 / 3)
    assert metrics["ar@10"] == pytest.approx(5 / 6) and metrics["ar@100"] == pytest.approx(1.0)
    # trapezoids from AN 1 to 100: 5 x 2/3 + (2/3 + 5/6)/2 + 42 x 5/6 + (5/6 + 1)/2 + 50 x 1 = 90; / 100
    assert result.auc == pytest.approx(0.90)
    np.testing.assert_allclose(result.average_number, np.arange(1, 101))
    assert result.videos == 2 and result.ground_truth == 3


def test_proposal_recall_counts_a_video_without_proposals_as_missed() -> None:
    ground_truth = segments([("A", 0, 10, -1), ("B", 0, 10, -1)])
    proposals = segments([("A", 0, 10, -1, 0.9)])
    assert proposal_recall(ground_truth, proposals).ar_at(100) == pytest.approx(0.5)
    # tIoU exactly 0.5 recalls at the threshold 0.5 only (>=): 1 of 2 instances at 1 of 10 thresholds
    assert proposal_recall(ground_truth, segments([("A", 0, 5, -1, 0.9)])).ar_at(100) == pytest.approx(0.05)


# ---- (d) THUMOS14's Ambiguous regions

def test_ambiguous_regions_drop_unmatched_overlapping_detections() -> None:
    ground_truth = segments([("v1", 0, 10, "a"), ("v1", 100, 110, "a")])
    ambiguous = segments([("v1", 50, 60, -1), ("v1", 105, 120, -1), ("v2", 0, 100, -1)])
    detections = segments([
        ("v1", 100, 110, "a", 0.95),  # f: TP, although it overlaps the region [105,120]
        ("v1", 55, 65, "a", 0.9),     # b: unmatched, overlaps [50,60]: dropped with the rule, else FP
        ("v1", 60, 70, "a", 0.85),    # d: only touches [50,60] at 60: FP either way
        ("v1", 0, 10, "a", 0.8),      # a: TP
        ("v1", 80, 90, "a", 0.7),     # c: FP, after every instance is found (changes nothing)
    ])
    # with the rule: f d a = TP FP TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: AP 1/2 + 1/3 = 5/6.
    # without: f b d a = TP FP FP TP: precision at the second TP 2/4: AP 1/2 + 1/4 = 3/4.
    with_rule = detection_map(ground_truth, detections, [0.5, 0.7], ambiguous=ambiguous)
    without = detection_map(ground_truth, detections, [0.5, 0.7])
    np.testing.assert_allclose(with_rule.ap[:, 0], 5 / 6)
    np.testing.assert_allclose(without.ap[:, 0], 3 / 4)
    assert with_rule.ignored == (1, 1) and without.ignored == (0, 0)


# ---- (e) files

def test_submission_round_trip(tmp_path: Path) -> None:
    detections = segments([("v_a", 1.5, 4.25, 1, 0.9), ("v_a", 7, 9, 0, 0.3), ("v_b", 0, 2, 1, 0.5)])
    path = tmp_path / "detections.json"
    write_submission(path, detections, classes=("jump", "run"))
    data = json.loads(path.read_text())
    assert set(data) == {"version", "results", "external_data"}
    assert data["results"]["v_a"][0] == {"label": "run", "score": 0.9, "segment": [1.5, 4.25]}
    back = read_submission(path, classes=("jump", "run"))
    for column in ("start", "end", "score", "label"):
        np.testing.assert_array_equal(getattr(back, column), getattr(detections, column))
    assert back.video.tolist() == ["v_a", "v_a", "v_b"]
    assert read_submission(path).label.tolist() == ["run", "jump", "run"]
    assert not list(tmp_path.glob(".*partial"))


def test_proposals_from_json_and_csv(tmp_path: Path) -> None:
    bmn = tmp_path / "bmn.json"
    bmn.write_text(json.dumps({"version": "VERSION 1.3", "external_data": {}, "results": {
        "v1": [{"score": 0.7, "segment": [0, 5]}, {"score": 0.2, "segment": [3, 9], "label": "x"}],
        "v2": [{"scores": 0.5, "segment": [1, 2]}]}}))
    proposals = read_proposals(bmn)
    assert proposals.video.tolist() == ["v1", "v1", "v2"] and proposals.score.tolist() == [0.7, 0.2, 0.5]
    for header in ("video,start,end,score\n", ""):
        table = tmp_path / "p.csv"
        table.write_text(header + "v1,0,5,0.7\n\nv2,1.5,2,0.5\n")
        from_csv = read_proposals(table)
        assert from_csv.video.tolist() == ["v1", "v2"] and from_csv.start.tolist() == [0.0, 1.5]


@pytest.mark.parametrize("name, text, reason", [
    ("a.json", "{not json", "not JSON"),
    ("a.json", json.dumps({"database": {}}), '"results"'),
    ("a.json", json.dumps({"results": {"v": [{"score": 1, "segment": [3]}]}}), "entry 0"),
    ("a.json", json.dumps({"results": {"v": [{"score": "high", "segment": [0, 1]}]}}), "score 'high'"),
    ("a.json", json.dumps({"results": {"v": [{"segment": [0, 1]}]}}), "score None"),
    ("a.json", json.dumps({"results": {"v": [{"score": 1, "segment": [5, 1]}]}}), "end before"),
    ("a.csv", "v1,0,5\n", "3 columns"),
    ("a.csv", "v1,0,five,1\n", "end 'five'"),
    ("a.csv", "v1,0,nan,1\n", "not a finite"),
    ("a.csv", "video,start,end,score\n", "no proposals"),
])
def test_bad_proposal_files_say_what_is_wrong_in_one_line(tmp_path: Path, name: str, text: str, reason: str
                                                         ) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as error:
        read_proposals(path)
    message = str(error.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_bad_submissions_say_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"results": {"v": [{"score": 1, "segment": [0, 1]}]}}))
    with pytest.raises(InputError, match='no "label"'):
        read_submission(path)
    path.write_text(json.dumps({"results": {"v": [{"label": "swim", "score": 1, "segment": [0, 1]}]}}))
    with pytest.raises(InputError, match="not among the classes: swim"):
        read_submission(path, classes=("jump",))
    with pytest.raises(InputError, match="no such file"):
        read_submission(tmp_path / "missing.json")
