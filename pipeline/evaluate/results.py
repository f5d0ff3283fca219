"""One layout for every result, so evaluations of any store, model, method and protocol can be aggregated
(in the spirit of CLIP_benchmark's result files), and the per-video predictions file.

A record (written as result.json; `eval --json` prints the same) is one flat JSON object:
- what was evaluated: `layout`, `clipcache` (version), `created`, `dataset` (the store's folder name),
  `store` (absolute path), `store_fingerprint`, `model`, `pretrained`, `method` ("zero-shot", "linear probe",
  "head <name>"), `checkpoint` (weights file or null), `protocol` ("single", "few-shot", "base-to-novel",
  "half-class zero-shot"), `options` (everything else that defines the evaluation: templates, shots, ...);
- on what: `split` (the split scored: a name, a file of paths, or "all"), `split_requested` (differs only after
  the test -> val fallback), `split_drawn` (a store without splits: the fractions, seed and stratification its
  splits were drawn with, splits.py; else null), `held_out` (true: no scored video was used for fitting or for
  model selection; null: unknown, e.g. a head trained on another store), `classes` (how many);
- the numbers: `videos`, `top1`, `top5` (null with 5 classes or fewer, where it is always 1), and
  `mean_class_accuracy`; a protocol reports the mean over its runs with `<metric>_std` beside each and
  states the std's definition in `std`; base-to-novel reports `base_top1`, `novel_top1`, `harmonic_mean`;
  retrieval (a caption file in `options`, `classes` null) reports `videos` and `captions` (the queries of
  each direction), `t2v_r1`, `t2v_r5`, `t2v_r10`, `t2v_median_rank`, `t2v_mean_rank` and the same for `v2t`,
  with the rank's definition in `ranking` (retrieval.py);
- the details: `per_class` (single evaluations: accuracy per class, null for a class without videos),
  `runs` (protocols: each run's metrics, seed and, for the probe, its C sweep), `left_out` (videos
  whose status is not done, by status); retrieval: `unknown_captions` and `unknown_videos` (captions whose
  video the store does not hold, and those videos as the caption file names them) and `uncaptioned_videos`
  (done videos of the split without a caption, left out of both directions);
- localisation (a dense store's temporal segments; `classes` the segments' classes): `videos`, `segments`,
  `proposals`, `map@<tIoU>` per threshold and `average_map` (ActivityNet's official computation,
  pipeline/evaluate/detection.py), `proposal_ar@1/5/10/100` and `proposal_auc`, the counts `detections`,
  `unscored_detections`, `tied_detections` and `ambiguous_ignored` (per threshold), `per_class` (AP per
  threshold and their mean) and `scoring` (how a detection's score is made); the detections themselves are
  detections.json beside result.json, in ActivityNet's submission format.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from clipcache import __version__
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.metrics import TOP_K, classification_metrics, top_classes
from clipcache.pipeline.evaluate.retrieval import RANKING, Retrieval
from clipcache.pipeline.train.splits import EvalSplit, left_out

LAYOUT = "clipcache-result/1"
METRICS = ("videos", "top1", "top5", "mean_class_accuracy")
STD = "population standard deviation over the runs (numpy's std, ddof=0, as CoOp's parse_test_res.py)"
# the fields `describe` gives every record, in its order
DESCRIPTION = ("layout", "clipcache", "created", "dataset", "store", "store_fingerprint", "model", "pretrained",
               "method", "checkpoint", "protocol", "options", "split", "split_requested", "split_drawn", "held_out",
               "classes", "left_out")
# the fields that say which evaluation a record is: two records that agree on them are the same evaluation
IDENTITY = ("store", "store_fingerprint", "method", "checkpoint", "protocol", "split_requested", "split_drawn",
            "options")


@dataclass
class Scores:
    """What one scoring produced: per video its store index, its label (a position in `classes`) and the
    class probabilities. `run` names the run within a protocol ("seed-0", "base", ...)."""

    videos: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]
    run: str = ""

    def metrics(self) -> dict[str, Any]:
        return classification_metrics(self.probs, self.labels, self.classes)


@dataclass
class Result:
    """A record (the layout above) and what is behind it: the scores of a classification, for the
    predictions file and the figures, the ranks of a retrieval, for the rank file, or the detections of a
    localisation (video names, seconds, class indices into `detection_classes`), for the submission file."""

    record: dict[str, Any]
    scores: list[Scores] = field(default_factory=list)
    retrieval: Retrieval | None = None
    detections: Any = None  # pipeline.evaluate.detection.Segments
    detection_classes: tuple[str, ...] = ()

    @property
    def confusion(self) -> np.ndarray | None:
        """The confusion matrix of a single classification (protocols and retrieval have none)."""
        single = self.record["protocol"] == "single" and self.scores
        return np.asarray(self.scores[0].metrics()["confusion"]) if single else None


def describe(reader: CacheReader, *, method: str, split: EvalSplit, held_out: bool | None, options: dict[str, Any],
             protocol: str = "single", checkpoint: Path | None = None, classes: int | None = None) -> dict[str, Any]:
    """The fields every record starts with: what was evaluated, how, and on which split."""
    settings = reader.settings
    return {
        "layout": LAYOUT, "clipcache": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": reader.path.name.removesuffix(".zarr"), "store": str(reader.path.resolve()),
        "store_fingerprint": settings.fingerprint(), "model": settings.model, "pretrained": settings.pretrained,
        "method": method, "checkpoint": str(checkpoint.resolve()) if checkpoint else None, "protocol": protocol,
        "options": _plain(options),
        "split": split.name, "split_requested": split.requested,
        "split_drawn": split.drawn.to_json() if split.drawn else None, "held_out": held_out,
        "classes": classes if classes is not None else len(reader.classes), "left_out": left_out(reader),
    }


def protocol_description(runs: list[Result], protocol: str, options: dict[str, Any], **changes: Any
                         ) -> dict[str, Any]:
    """The description of a protocol over runs that scored one store and split: held out only when every
    run's split was (unknown when any run's is)."""
    first = runs[0].record
    known = [run.record["held_out"] for run in runs]
    held = False if False in known else None if None in known else True
    described = {key: first[key] for key in DESCRIPTION}
    return {**described, "protocol": protocol, "options": _plain(options), "held_out": held, **changes}


def run_metrics(result: Result, **extra: Any) -> dict[str, Any]:
    """One run of a protocol as its record lists it: what identifies the run, then its numbers."""
    return {**extra, **{key: result.record[key] for key in (*METRICS, "held_out")}}


def single(description: dict[str, Any], scores: Scores) -> Result:
    """The result of scoring one split once."""
    metrics = scores.metrics()
    return Result({**description, **{k: metrics[k] for k in METRICS}, "per_class": metrics["per_class"]}, [scores])


def ranked(description: dict[str, Any], scored: Retrieval, **details: Any) -> Result:
    """The result of one retrieval evaluation: its numbers in both directions, then `details`."""
    counts = {"videos": len(scored.videos), "captions": len(scored.captions)}
    return Result({**description, "classes": None, **counts, **scored.ranks.metrics(), "ranking": RANKING,
                   **details}, retrieval=scored)


def over_runs(description: dict[str, Any], runs: list[dict[str, Any]], scores: list[Scores],
              keys: tuple[str, ...] = METRICS[1:]) -> Result:
    """A protocol's result: each run's record in `runs`, and the mean and std of `keys` over them; `videos`
    when every run scored as many."""
    counts = {run["videos"] for run in runs}
    summary: dict[str, Any] = {"videos": counts.pop() if len(counts) == 1 else None}
    for key in keys:
        values = [run[key] for run in runs]
        missing = None in values
        summary[key] = None if missing else float(np.mean(values))
        summary[f"{key}_std"] = None if missing else float(np.std(values))
    return Result({**description, **summary, "std": STD, "runs": runs}, scores)


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Options as JSON keeps them (paths as text)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in options.items()}


def identity(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record.get(key) for key in IDENTITY}


PREDICTION_COLUMNS = ["run", "video", "path", "label", "correct"] + \
    [f"{name}_{k}" for k in range(1, TOP_K + 1) for name in ("pred", "score")]


def write_predictions(path: Path, scores: list[Scores], reader: CacheReader) -> None:
    """predictions.csv: one row per scored video (and run): `run` (only where several runs scored), `video` (row
    in the store), `path` (as the store records it), `label`, `correct` (top-1), then the top-5 classes and their
    probabilities best first (`pred_1`, `score_1`, ...; empty where there are fewer classes)."""
    paths = reader.column("path")
    runs = len(scores) > 1
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS if runs else PREDICTION_COLUMNS[1:])
        for s in scores:
            ranked = top_classes(s.probs)
            for row, video in enumerate(s.videos):
                best = [(s.classes[c], f"{s.probs[row, c]:.6f}") for c in ranked[row]]
                best += [("", "")] * (TOP_K - len(best))
                cells = [int(video), paths[video], s.classes[s.labels[row]], int(ranked[row, 0] == s.labels[row]),
                         *[x for pair in best for x in pair]]
                writer.writerow([s.run, *cells] if runs else cells)
