"""Every option of `clipcache export`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from clipcache.cache.location import Store
from clipcache.pipeline.options import Options, argument, option, store_argument

ExportFormat = StrEnum("ExportFormat", {"actionformer": "actionformer", "npy": "npy"})


@dataclass(kw_only=True)
class ExportConfig(Options):
    store: Store = store_argument("A store made by `clipcache extract`.")
    out: Path = argument("Folder for the exported files: new, empty, or an earlier export (replaced with "
                         "--overwrite). A folder holding anything else is refused.")
    format: ExportFormat = option(ExportFormat.actionformer,
                                  "actionformer: a dense store's features as one (T, C) float32 .npy per video in "
                                  "features/, annotations.json (ActionFormer/OpenTAD layout) from the store's "
                                  "segments, and the exact dataset settings that put feature i at i/F seconds "
                                  "(features.json, actionformer.yaml). npy: any store, per video <stem>.npy, "
                                  "<stem>_fps.npy and <stem>_timestamps_ms.npy (video_features' layout).")
    features: str = option("pooled", "pooled (the image embedding of each frame), or cls:<block> (the CLS token "
                                     "of a stored block, e.g. cls:-1).")
    overwrite: bool = option(False, "Replace an earlier export in OUT (only the files it wrote, listed in its "
                                    ".clipcache-export file; nothing else is ever removed).")
    quiet: bool = option(False, "No progress bar and no notes on stderr.")
