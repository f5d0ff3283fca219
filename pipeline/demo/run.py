"""`clipcache demo`: the whole flow on generated sample videos with a tiny built-in model, offline.

Extract once, then zero-shot, a linear probe, a trained text head and its evaluation all read the
cache only. The built-in model has random weights, so its text and image towers were never aligned and
zero-shot measures nothing (it scores whatever the seeded weights happen to give, well above chance here); the
probe and the trained head show that the cached features separate the classes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from clipcache import InputError
from clipcache.cache.info import format_info
from clipcache.cache.reader import CacheReader
from clipcache.pipeline.common import use_compute_threads
from clipcache.pipeline.demo.config import DemoConfig
from clipcache.pipeline.demo.synthetic import write_demo_videos
from clipcache.pipeline.evaluate.head import evaluate_checkpoint
from clipcache.pipeline.evaluate.probe import linear_probe
from clipcache.pipeline.evaluate.zero_shot import zero_shot
from clipcache.pipeline.extract.config import ExtractConfig
from clipcache.pipeline.extract.run import extract
from clipcache.pipeline.extract.summary import format_extract_summary
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loop import train_head

DEMO_SPLITS = {"train": 8, "val": 3, "test": 4}  # videos per class
MARKER = ".clipcache-demo"  # in a folder the demo made: what the demo may replace there
MADE = ("videos", "features.zarr", "run-text")


def prepare_out(out: Path) -> None:
    """Make `out` ready for the demo. Only a folder the demo made (its marker file) is reused, and there
    only what the demo writes is replaced; a new or empty folder is taken; anything else is refused."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and not (out / MARKER).is_file():
        if any(out.iterdir()):
            raise InputError(f"--out {out}: the folder is not empty and was not made by clipcache demo; "
                             "choose a new or empty folder (nothing was deleted)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("made by `clipcache demo`, which replaces " + ", ".join(MADE) + " here\n")
    except OSError as error:
        raise InputError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    for name in MADE:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def run_demo(cfg: DemoConfig) -> str:
    """Generate sample videos under `cfg.out` (see `prepare_out`), run both stages, and return the printed
    summary."""
    out, quiet, device = cfg.out, cfg.quiet, cfg.device
    videos, store, run_dir = (out / name for name in MADE)
    prepare_out(out)
    write_demo_videos(videos, DEMO_SPLITS)
    summary = extract(ExtractConfig(videos=videos, store=store, model="clipcache-demo", frames=8, layers="-4:",
                                    device=device, workers=2, quiet=quiet))
    use_compute_threads(cfg.threads)  # stage two's threads
    train_head(TrainConfig(store=store, head="text", out=run_dir, device=device, quiet=quiet))  # the defaults
    rows = [result.record for result in (zero_shot(store, device=device), linear_probe(CacheReader(store)),
                                         evaluate_checkpoint(store, run_dir, device=device))]
    table = [f"method                 top-1   mean class acc   (split {rows[0]['split']}, {rows[0]['videos']} videos; "
             "top-5 needs more than 5 classes)"]
    table += [f"{r['method']:<22} {r['top1']:.3f}   {r['mean_class_accuracy']:.3f}" for r in rows]
    table.append("(zero-shot with the demo's random weights measures nothing: its text and image towers were never "
                  "aligned)")
    return "\n\n".join([format_extract_summary(summary), format_info(summary.info), "\n".join(table)])
