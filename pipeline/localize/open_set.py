"""Efficient-Prompt's open-set localisation: proposals and the naming head learn the seen classes of a class split
(`train-head --class-split`), detection is scored on the unseen classes only, named zero-shot (the frozen text
encoder) or by the head's learned context with the unseen class names. Each run is one split; `open_set_protocol`
runs several and reports the mean and std over them, beside the zero-shot baseline on the same splits.

What training sees, as STALE's data loader does (stale_lib/stale_dataloader.py keeps a video's annotations of the
seen classes and the video when any remain): a training or validation video stays when it holds at least one
segment of a seen class; segments of unseen classes are neither targets nor samples, so for the proposal head
their frames are background, as in STALE. Dropping every video with an unseen segment instead would keep those
frames out of training but leave fewer videos than the published protocol trains on, so its numbers would not
compare. Evaluation scores every video of the test split against the unseen classes' segments (detections named
with an unseen class where only seen actions happen count as false positives).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clipcache import InputError
from clipcache.cache.reader import CacheReader
from clipcache.cache.segments import SegmentTable
from clipcache.pipeline.evaluate.head import evaluate_checkpoint
from clipcache.pipeline.evaluate.results import Result, over_runs, protocol_description
from clipcache.pipeline.localize.class_splits import ClassSplit, class_split
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loop import train_head

PROTOCOL = "open-set"


def restricted(table: SegmentTable, classes: tuple[str, ...], relabel: bool) -> SegmentTable:
    """The table's ambiguous regions and its segments of `classes`; labels re-indexed into `classes` when
    `relabel` (a head that scores only those classes), else kept as indices into the store's classes."""
    wanted = np.asarray([table.classes.index(c) for c in classes], np.int64)
    keep = table.ambiguous | np.isin(table.label, wanted)
    label = table.label[keep]
    if relabel:
        position = {int(k): p for p, k in enumerate(wanted.tolist())}
        label = np.asarray([position.get(int(k), -1) for k in label], dtype=table.label.dtype)
    return SegmentTable(table.video[keep], table.start[keep], table.end[keep], label, table.ambiguous[keep],
                        tuple(classes) if relabel else table.classes, table.format, table.sources, table.counts)


def run_split(reader: CacheReader, run: dict[str, Any]) -> ClassSplit | None:
    """The class split a run was trained on (`train-head --class-split`), else None."""
    config = run["config"]
    if not config.get("class_split"):
        return None
    return class_split(config["class_split"], int(config["class_split_index"]), tuple(reader.classes))


def same_split(reader: CacheReader, proposals: dict[str, Any], classifier: dict[str, Any], where: Path
               ) -> ClassSplit | None:
    """The split both runs were trained on; runs of different splits (or one open-set, one not) are refused."""
    mine, theirs = run_split(reader, proposals), run_split(reader, classifier)
    if mine != theirs:
        raise InputError(f"{where}: trained on class split {_said(theirs)}, the proposals on {_said(mine)}; train "
                         "both with the same --class-split and --class-split-index")
    return mine


def _said(split: ClassSplit | None) -> str:
    return "none (all classes)" if split is None else f"{split.source} #{split.index}"


METRIC_KEYS = ("average_map", "proposal_ar@10", "proposal_ar@100", "proposal_auc")  # besides map@<t>


def open_set_protocol(cfg: TrainConfig) -> Result:
    """`train-head --head proposals --class-split SPEC --class-splits N [--classifier-head prompt]`: per split k, the
    proposals (and the naming head) trained on its seen classes into OUT/split-<k>/, scored on its unseen
    classes with the head and zero-shot; the mean and std of each over the splits."""
    if cfg.head != "proposals":
        raise InputError("--class-splits runs the open-set protocol from --head proposals (with --classifier-head "
                         "for the head that names the proposals)")
    if not cfg.class_split:
        raise InputError(f"--class-splits {cfg.class_splits} runs the open-set protocol over splits 0..N-1 of "
                         "--class-split: name a STALE split folder, a JSON file or a seen fraction such as 0.75")
    if cfg.class_split_index:
        raise InputError(f"--class-split-index picks one split, --class-splits {cfg.class_splits} runs splits 0..N-1: "
                         "give one of them")
    classes = tuple(CacheReader(cfg.store).classes)
    for k in range(cfg.class_splits):  # every split read and checked before hours of training, not at split k
        class_split(cfg.class_split, k, classes)
    runs, scored = [], []
    for k in range(cfg.class_splits):
        base = replace(cfg, class_split_index=k, class_splits=1, classifier_head=None, out=cfg.out / f"split-{k}")
        train_head(replace(base, out=base.out / "proposals"))
        namer = None
        if cfg.classifier_head:
            namer = base.out / cfg.classifier_head
            train_head(replace(base, head=cfg.classifier_head, out=namer))
        zero = evaluate_checkpoint(cfg.store, base.out / "proposals", None, cfg.device, quiet=cfg.quiet,
                                   pretrained=cfg.pretrained, text=(cfg.templates, cfg.class_names, cfg.tiou))
        named = zero if namer is None else evaluate_checkpoint(
            cfg.store, base.out / "proposals", None, cfg.device, quiet=cfg.quiet, pretrained=cfg.pretrained,
            text=(cfg.templates, cfg.class_names, cfg.tiou), classifier=namer)
        keys = [key for key in named.record if key.startswith("map@")] + list(METRIC_KEYS)
        runs.append({"split": k, "checkpoint": named.record["checkpoint"], "videos": named.record["videos"],
                     "held_out": named.record["held_out"], **{key: named.record[key] for key in keys},
                     **{f"zero_shot_{key}": zero.record[key] for key in keys}})
        scored.append(named)
    options = {"class_split": cfg.class_split, "class_splits": cfg.class_splits,
               "classifier_head": cfg.classifier_head, "templates": cfg.templates, "tiou": cfg.tiou}
    description = protocol_description(scored, PROTOCOL, options, checkpoint=None,
                                       method=f"head proposals + {cfg.classifier_head or 'zero-shot'}")
    keys = tuple(key for key in runs[0] if key.startswith(("map@", "zero_shot_")) or key in METRIC_KEYS)
    return over_runs(description, runs, [], keys)
