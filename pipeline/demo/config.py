"""The options of `clipcache demo` (the command line is derived from them)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipcache.pipeline.options import RunOptions, ThreadOptions, option


@dataclass(kw_only=True)
class DemoConfig(RunOptions, ThreadOptions):
    out: Path = option(Path("demo_out"), "Folder for the sample videos, the store and the run: new, empty, or made by "
                                         "an earlier demo (whose outputs are replaced).")
