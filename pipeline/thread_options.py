"""The option that sets how many CPU threads stage two computes on, declared once and mixed into the configs of
the commands that train or evaluate heads (the rule that picks the default is `common.compute_threads`)."""
from __future__ import annotations

from dataclasses import dataclass

from clipcache.pipeline.options import Options, option


@dataclass(kw_only=True)
class ThreadOptions(Options):
    """How many threads torch computes on; not part of a run (a resumed run may use other threads)."""

    threads: int | None = option(None, "Torch CPU threads for stage two's computation (default: OMP_NUM_THREADS when "
                                       "set, else half the cores, fewer when other processes keep more busy: "
                                       "threads waiting for a busy core make small heads many times slower).")
