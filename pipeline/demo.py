"""`clipcache demo`: the whole flow on generated sample videos with a tiny built-in model, offline."""
from __future__ import annotations

import shutil
from pathlib import Path

from cache.info import format_info, store_info
from pipeline.extract import ExtractConfig, extract
from pipeline.report import format_extract_summary
from pipeline.synthetic import write_demo_videos

DEMO_SPLITS = {"train": 8, "val": 3, "test": 4}  # videos per class


def run_demo(out: Path, quiet: bool = False) -> str:
    """Generate sample videos under `out`, extract them, and return the printed summary."""
    videos, store = out / "videos", out / "features.zarr"
    if out.exists():
        shutil.rmtree(out)
    write_demo_videos(videos, DEMO_SPLITS)
    summary = extract(ExtractConfig(
        videos=videos, store=store, model="clipcache-demo", frames=8, layers="-4:", device="cpu",
        workers=2, quiet=quiet,
    ))
    return "\n\n".join([format_extract_summary(summary), format_info(store_info(store))])
