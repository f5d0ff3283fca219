"""Temporal action detection and proposal metrics, computed as the published evaluations compute them, so a
number from clipcache can stand beside a paper's.

Detection: mean average precision at temporal IoU thresholds, as ActivityNet's official evaluation
(activitynet/ActivityNet, Evaluation/eval_detection.py `compute_average_precision_detection`, with utils.py
`segment_iou` and `interpolated_prec_rec`; ActionFormer, TriDet and OpenTAD run a Python 3 port of the same
function on THUMOS14 too). Per class, over the videos together:
- tIoU(a, b) = max(0, min(ends) - max(starts)) / (len a + len b - that intersection).
- The class's detections, in the order given, are ranked by score, highest first, with exactly the official call
  `np.argsort(scores)[::-1]`: numpy's default sort, which is NOT stable. Tied scores come out in whatever order
  numpy's sort leaves them, reversed: on numpy's plain introsort, insertion-sorted (stable) below 17 items, so
  the later-given detection first; on builds that dispatch to x86-simd-sort (AVX-512 and AVX2 machines, numpy
  >= 1.25/2.x) in no promised order even for a handful of items. We make the same call on the same array, so on
  the same numpy and machine the ranking, and the AP, are the official ones; `DetectionResult.tied` counts the
  detections whose score another detection of their class shares, i.e. where the AP can depend on that order.
- In that order, a detection takes, at each threshold separately, the ground truth of its video and class with
  the highest tIoU that no higher-ranked detection took at that threshold, provided tIoU >= threshold: a true
  positive. Otherwise (nothing overlaps enough, every such ground truth is taken, or its video has no ground
  truth of the class) it is a false positive: a duplicate of a found instance is a false positive, and one
  detection never counts for two ground truths. Ground truths tied in tIoU are tried in the order of the same
  unstable `argsort()[::-1]` over the video's ground truth of the class, as given.
- Precision and recall after each ranked detection (recall = true positives / the class's ground-truth count),
  and AP = the area under the precision envelope (VOC 2011: precision made non-increasing from the right,
  summed over the steps where recall changes). Unfound instances count: recall never reaches 1 and AP < 1.
- Classes: those with ground truth (the official code builds its class list from the ground truth and fails on
  a prediction of any other label; here such detections are left out and counted, `unscored`). A class with
  ground truth and no detection has AP 0. mAP at a threshold is the mean over those classes; the average mAP
  is the mean over thresholds.
- Thresholds: THUMOS14 0.3:0.1:0.7 and ActivityNet 0.5:0.05:0.95 as exact decimals (the official code uses
  `np.linspace(0.5, 0.95, 10)`, whose 0.6 is 0.6000000000000001; only a tIoU that lands on such a value exactly
  can tell the two apart).

THUMOS14's Ambiguous regions (`ambiguous=`): the official THUMOS14 kit (TH14evalDet.m / TH14eventdetpr.m, "respect
ambiguous events (overlapping detections will be removed from the FP list)") first matches detections to ground
truth, then drops every detection left unmatched that overlaps any Ambiguous region of its video by a positive
length (its `intervaloverlapvalseconds` > 0, so a region that only touches does not count): such a detection is
neither a true nor a false positive, it leaves the ranking. Ambiguous regions are never ground truth and a matched
detection stays a true positive even where it overlaps one. We apply that rule, per threshold, to the ActivityNet
computation above; `DetectionResult.ignored` counts the dropped detections per threshold. The kit differs
elsewhere and is not reproduced: it matches greedily from each ground truth in file order to the free detection of
highest overlap, needs overlap > threshold (strictly), and averages precision at 11 recall points (a later version
of the kit: precision at each true positive). Feature-based works (ActionFormer's libs/utils/metrics.py, and the
works built on it) score THUMOS14 with the ActivityNet function alone, which knows no ambiguous regions: a
detection there is a false positive, as with `ambiguous=None`, which gives their number.

Proposals: average recall against the average number of proposals per video (AR-AN), as ActivityNet's
eval_proposal.py `average_recall_vs_avg_nr_proposals`, called as BMN's evaluation calls it (`max_avg_nr_proposals`
100, tIoU 0.5:0.05:0.95), class-agnostic:
- V = videos with ground truth, P = all proposals given (those of videos without ground truth too). Each video
  keeps its `int(n * 100 V / P)` best-scored proposals (sorted by the same unstable argsort), K in all.
- The curve has 100 points: at point j (1..100) each video uses its first `int(k * j/100 * 100 V / K)` kept
  proposals (k of them kept). A ground truth is recalled at a threshold if ANY of those proposals reaches
  tIoU >= threshold (no one-to-one matching); recall = recalled / all ground truth, averaged over the thresholds
  is the average recall (AR). The point's AN = j/100 * 100 = j proposals per video on average.
- AR@AN for AN = 1, 5, 10, 100 are the curve's points 1, 5, 10 and 100, as BMN prints them. When every video has
  at least 100 proposals, each uses exactly its top AN; otherwise AN is an average over the videos.
- AUC = the trapezoid area under AR(AN) from AN = 1 to 100, divided by 100 (BMN and ActivityNet print it times
  100, in percent); the curve starts at AN = 1, so a perfect proposer scores 0.99.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

THUMOS14 = (0.3, 0.4, 0.5, 0.6, 0.7)
ACTIVITYNET = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
THRESHOLD_SETS = {"thumos14": THUMOS14, "activitynet": ACTIVITYNET}
MAX_AVERAGE_PROPOSALS = 100  # BMN's max_avg_nr_proposals: the AR-AN curve runs to 100 proposals per video
CURVE_POINTS = 100  # the official curve's points: 1/100 .. 100/100 of the proposals kept
AR_AT = (1, 5, 10, 100)  # the average numbers of proposals per video BMN reports AR at


@dataclass(frozen=True)
class Segments:
    """Temporal segments, one row each: the video (any id, str or int, the same kind wherever compared), start
    and end in seconds, the label (a class name or index; None-like for proposals) and the score (ground truth:
    1). Build with `Segments.of`, which checks the columns."""

    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    score: np.ndarray

    @classmethod
    def of(cls, video: Sequence[Any] | np.ndarray, start: Sequence[float] | np.ndarray,
           end: Sequence[float] | np.ndarray, label: Sequence[Any] | np.ndarray | None = None,
           score: Sequence[float] | np.ndarray | None = None) -> Segments:
        """Columns as arrays of one length; finite times with end >= start, finite scores (ValueError if not)."""
        video, start, end = np.asarray(video), np.asarray(start, np.float64), np.asarray(end, np.float64)
        n = len(video)
        label = np.full(n, -1) if label is None else np.asarray(label)
        score = np.ones(n) if score is None else np.asarray(score, np.float64)
        columns = {"video": video, "start": start, "end": end, "label": label, "score": score}
        for name, column in columns.items():
            if column.ndim != 1 or len(column) != n:
                raise ValueError(f"segments: column {name} has shape {column.shape}, expected ({n},)")
        if not (np.isfinite(start).all() and np.isfinite(end).all() and np.isfinite(score).all()):
            raise ValueError("segments: a start, end or score is not finite")
        if (end < start).any():
            raise ValueError(f"segments: {int((end < start).sum())} end before their start")
        return cls(video, start, end, label, score)

    def __len__(self) -> int:
        return len(self.video)

    def take(self, rows: np.ndarray) -> Segments:
        """The given rows (indices or a mask), in that order."""
        return Segments(self.video[rows], self.start[rows], self.end[rows], self.label[rows], self.score[rows])


def threshold_set(spec: str | Sequence[float]) -> tuple[float, ...]:
    """tIoU thresholds by name ("thumos14", "activitynet") or as given; each in (0, 1]."""
    if isinstance(spec, str):
        if spec.lower() not in THRESHOLD_SETS:
            raise ValueError(f"unknown threshold set {spec!r}: use one of {', '.join(THRESHOLD_SETS)} or a list")
        return THRESHOLD_SETS[spec.lower()]
    values = tuple(float(t) for t in spec)
    if not values or not all(0 < t <= 1 for t in values):
        raise ValueError(f"tIoU thresholds must be a non-empty list of numbers in (0, 1], got {list(values)}")
    return values


def segment_iou(segments: np.ndarray, others: np.ndarray) -> np.ndarray:
    """tIoU of each (start, end) row of `segments` (N, 2) with each row of `others` (M, 2): (N, M). The official
    formula term by term, so the rounding, and a tIoU landing exactly on a threshold, agree."""
    a, b = segments[:, None, :], others[None, :, :]
    inter = np.clip(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    return inter / ((b[..., 1] - b[..., 0]) + (a[..., 1] - a[..., 0]) - inter)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 AP: the area under the precision envelope (the best precision at this recall or beyond)."""
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    recall = np.concatenate([[0.0], recall, [1.0]])
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * envelope[steps]))


@dataclass(frozen=True)
class DetectionResult:
    """AP per threshold and class (`ap[t, k]`), for the classes with ground truth in order of first appearance;
    `ground_truth[k]` instances each; `unscored` detections of labels without ground truth; `tied` detections
    sharing their score within their class; `ignored[t]` detections dropped for overlapping an ambiguous region."""

    thresholds: tuple[float, ...]
    classes: tuple[Any, ...]
    ap: np.ndarray
    ground_truth: np.ndarray
    detections: int
    unscored: int
    tied: int
    ignored: tuple[int, ...]

    @property
    def mean_ap(self) -> np.ndarray:
        """mAP at each threshold (mean over the classes)."""
        return self.ap.mean(axis=1)

    @property
    def average_map(self) -> float:
        """The mean of the mAPs over the thresholds."""
        return float(self.mean_ap.mean())

    def metrics(self) -> dict[str, Any]:
        """Flat numbers for a result record: `map@<t>` per threshold, `average_map`, and the counts."""
        out: dict[str, Any] = {f"map@{t:g}": float(m) for t, m in zip(self.thresholds, self.mean_ap)}
        out["average_map"] = self.average_map
        out.update(detections=self.detections, unscored_detections=self.unscored, tied_detections=self.tied,
                   ambiguous_ignored={f"{t:g}": n for t, n in zip(self.thresholds, self.ignored)})
        return out

    def per_class(self) -> dict[str, dict[str, float]]:
        """Per class (by its label as text): AP at each threshold and their mean."""
        return {str(c): {**{f"ap@{t:g}": float(a) for t, a in zip(self.thresholds, self.ap[:, k])},
                         "average_ap": float(self.ap[:, k].mean())} for k, c in enumerate(self.classes)}


def detection_map(ground_truth: Segments, detections: Segments, thresholds: str | Sequence[float] = THUMOS14,
                  ambiguous: Segments | None = None) -> DetectionResult:
    """Per-class interpolated AP, mAP per threshold and the average mAP (module docstring); `ambiguous` regions
    (labels unused) apply THUMOS14's rule: unmatched detections overlapping one are dropped, not false positives."""
    thresholds = threshold_set(thresholds)
    if not len(ground_truth):
        raise ValueError("no ground truth to evaluate against")
    if (ground_truth.end <= ground_truth.start).any():
        raise ValueError("ground truth segments need end > start")
    ambiguous = ambiguous if ambiguous is not None else Segments.of([], [], [])
    gt_video, det_video, amb_video = _shared_codes(ground_truth.video, detections.video, ambiguous.video)
    classes = tuple(_first_appearance(ground_truth.label))
    ap = np.zeros((len(thresholds), len(classes)))
    counts = np.zeros(len(classes), np.int64)
    ignored = np.zeros(len(thresholds), np.int64)
    scored, tied = 0, 0
    for k, label in enumerate(classes):
        gt_rows = np.flatnonzero(ground_truth.label == label)
        det_rows = np.flatnonzero(detections.label == label) if len(detections) else np.zeros(0, np.int64)
        counts[k], scored = len(gt_rows), scored + len(det_rows)
        scores = detections.score[det_rows]
        tied += len(scores) - int(np.sum(np.unique(scores, return_counts=True)[1] == 1))
        if not len(det_rows):
            continue
        order = det_rows[np.argsort(scores)[::-1]]  # the official call: unstable sort, reversed
        tp, fp = _match(ground_truth.take(gt_rows), gt_video[gt_rows], detections.take(order), det_video[order],
                        thresholds)
        keep = ~(fp & _overlaps(detections.take(order), det_video[order], ambiguous, amb_video))
        ignored += (~keep).sum(axis=1)
        for t in range(len(thresholds)):
            hits, misses = np.cumsum(tp[t][keep[t]]), np.cumsum(fp[t][keep[t]])
            ap[t, k] = interpolated_ap(hits / (hits + misses), hits / len(gt_rows))
    return DetectionResult(thresholds, classes, ap, counts, len(detections), len(detections) - scored, tied,
                           tuple(int(n) for n in ignored))


def _match(gt: Segments, gt_video: np.ndarray, ranked: Segments, ranked_video: np.ndarray,
           thresholds: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """True and false positive flags (thresholds x ranked detections) of one class. Videos are independent, so
    each video's detections (in rank order) meet only that video's ground truth (in the order given)."""
    tp = np.zeros((len(thresholds), len(ranked)), bool)
    fp = np.ones((len(thresholds), len(ranked)), bool)
    lowest = min(thresholds)
    gt_groups = _groups(gt_video)
    for video, rows in _groups(ranked_video).items():
        if video not in gt_groups:
            continue  # no ground truth of the class in this video: false positives
        gt_rows = gt_groups[video]
        ious = segment_iou(np.stack([ranked.start[rows], ranked.end[rows]], 1),
                           np.stack([gt.start[gt_rows], gt.end[gt_rows]], 1))
        taken = np.zeros((len(thresholds), len(gt_rows)), bool)
        for i, iou in zip(rows, ious):
            if iou.max() < lowest:
                continue
            candidates = np.argsort(iou)[::-1]  # the official call: best tIoU first, ties as numpy leaves them
            for t, threshold in enumerate(thresholds):
                for j in candidates:
                    if iou[j] < threshold:
                        break
                    if not taken[t, j]:
                        taken[t, j], tp[t, i], fp[t, i] = True, True, False
                        break
    return tp, fp


def _overlaps(segments: Segments, video: np.ndarray, regions: Segments, region_video: np.ndarray) -> np.ndarray:
    """Which segments overlap a region of their own video by a positive length."""
    hit = np.zeros(len(segments), bool)
    for r in range(len(regions)):
        same = video == region_video[r]
        inter = np.minimum(segments.end, regions.end[r]) - np.maximum(segments.start, regions.start[r])
        hit |= same & (inter > 0)
    return hit


def _groups(codes: np.ndarray) -> dict[int, np.ndarray]:
    """Rows per code, each group in the order given (a stable sort keeps the official tie order intact)."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]])) if len(codes) else []
    ends = [*starts[1:], len(codes)]
    return {int(ordered[a]): order[a:b] for a, b in zip(starts, ends)}


def _shared_codes(*videos: np.ndarray) -> list[np.ndarray]:
    """Integer codes for video ids, equal where the ids are equal across all the given columns."""
    kinds = {"U" if v.dtype.kind in "USO" else v.dtype.kind for v in videos if len(v)}
    if len(kinds) > 1:
        raise ValueError("video ids must be of one kind (all names or all numbers) in ground truth and detections")
    joined = np.concatenate([v.astype(str) if "U" in kinds else v for v in videos]) if kinds else np.zeros(0)
    codes = np.unique(joined, return_inverse=True)[1].reshape(-1)
    return np.split(codes, np.cumsum([len(v) for v in videos])[:-1])


def _first_appearance(values: np.ndarray) -> list[Any]:
    """Distinct values in the order they first appear (the official class order)."""
    _, first = np.unique(values, return_index=True)
    return [values[i].item() if hasattr(values[i], "item") else values[i] for i in np.sort(first)]


@dataclass(frozen=True)
class ProposalResult:
    """The AR-AN curve: `recall[t, j]` at threshold t and point j, `average_recall[j]` (mean over thresholds) at
    `average_number[j]` proposals per video; `auc` the normalised area under it (module docstring)."""

    thresholds: tuple[float, ...]
    average_number: np.ndarray
    recall: np.ndarray
    average_recall: np.ndarray
    auc: float
    videos: int
    ground_truth: int

    def ar_at(self, number: int) -> float:
        """AR at the curve's point of `number` proposals per video (a point of the curve: 1..100 by default)."""
        point = int(np.argmin(np.abs(self.average_number - number)))
        if not np.isclose(self.average_number[point], number):
            raise ValueError(f"the AR-AN curve has no point at {number} proposals per video")
        return float(self.average_recall[point])

    def metrics(self) -> dict[str, float]:
        """`ar@1`, `ar@5`, `ar@10`, `ar@100` and `auc`, as BMN reports them (fractions, not percent)."""
        return {**{f"ar@{n}": self.ar_at(n) for n in AR_AT}, "auc": self.auc}


def proposal_recall(ground_truth: Segments, proposals: Segments, thresholds: str | Sequence[float] = ACTIVITYNET,
                    max_average: int = MAX_AVERAGE_PROPOSALS) -> ProposalResult:
    """Class-agnostic average recall against the average number of proposals per video, and its AUC, as
    ActivityNet's eval_proposal.py with BMN's settings (module docstring; labels are not used)."""
    thresholds = threshold_set(thresholds)
    if not len(ground_truth) or not len(proposals):
        raise ValueError("proposal recall needs ground truth and proposals")
    gt_video, prop_video = _shared_codes(ground_truth.video, proposals.video)
    videos = list(dict.fromkeys(gt_video.tolist()))
    ratio = max_average * float(len(videos)) / len(proposals)
    gt_groups, proposal_groups = _groups(gt_video), _groups(prop_video)
    ious, kept_total = [], 0
    for video in videos:
        gt_rows, rows = gt_groups[video], proposal_groups.get(video, np.zeros(0, np.int64))
        if not len(rows):
            ious.append(np.zeros((len(gt_rows), 1)))  # as the official code: one column that recalls nothing
            continue
        rows = rows[np.argsort(proposals.score[rows])[::-1]]
        rows = rows[:min(int(len(rows) * ratio), len(rows))]
        kept_total += len(rows)
        # (ground truth, kept proposals); a video keeping none adds no column and recalls nothing
        ious.append(segment_iou(np.stack([proposals.start[rows], proposals.end[rows]], 1),
                                np.stack([ground_truth.start[gt_rows], ground_truth.end[gt_rows]], 1)).T)
    if not kept_total:
        raise ValueError(f"too few proposals: none of the {len(videos)} videos keeps one at {max_average} per video")
    fractions = np.arange(1, CURVE_POINTS + 1) / float(CURVE_POINTS) * (max_average * float(len(videos))
                                                                         / kept_total)
    recall = np.empty((len(thresholds), CURVE_POINTS))
    positives = sum(len(iou) for iou in ious)
    for t, threshold in enumerate(thresholds):
        found = np.zeros(CURVE_POINTS)
        for iou in ious:
            if not iou.shape[1]:
                continue
            used = np.minimum((iou.shape[1] * fractions).astype(np.int64), iou.shape[1])
            # a ground truth is found at a point once any proposal within the first `used` reaches the threshold
            first = np.where((iou >= threshold).any(axis=1), np.argmax(iou >= threshold, axis=1), iou.shape[1])
            found += (first[:, None] < used[None, :]).sum(axis=0)
        recall[t] = found / positives
    average_recall = recall.mean(axis=0)
    average_number = fractions * (float(kept_total) / len(videos))
    area = float(np.sum(np.diff(average_number) * (average_recall[1:] + average_recall[:-1]) / 2.0))
    return ProposalResult(thresholds, average_number, recall, average_recall, area / float(average_number[-1]),
                          len(videos), positives)
