"""What an extraction run did, and its printed summary (the counts come from `cache.info`, the one
place that summarises a store)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_MAX_LISTED = 20


@dataclass
class RunCounts:
    """What became of the videos this process decoded in this run."""

    done: int = 0
    failed: int = 0

    def add(self, ok: bool) -> None:
        self.done += ok
        self.failed += not ok

    @property
    def processed(self) -> int:
        return self.done + self.failed


@dataclass
class ExtractSummary:
    info: dict[str, Any]  # cache.info.store_info of the store after this run (counts over the whole store)
    missing: list[str]  # listed rows whose video was not found
    run: RunCounts
    seconds: float

    @property
    def processed(self) -> int:
        return self.run.processed

    @property
    def videos_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def failed_run(self, strict: bool) -> bool:
        """Exit status 1: with --strict, when any video failed."""
        return strict and self.info["failed"] > 0


def _listed(title: str, rows: list[str]) -> list[str]:
    lines = [f"{title} ({len(rows)}):"] + [f"  {row}" for row in rows[:_MAX_LISTED]]
    if len(rows) > _MAX_LISTED:
        lines.append(f"  ... and {len(rows) - _MAX_LISTED} more (clipcache info STORE lists them all)")
    return lines


def format_extract_summary(summary: ExtractSummary) -> str:
    info = summary.info
    lines = [
        f"{info['store']}: {info['done']} done, {info['failed']} failed, {info['pending']} pending "
        f"({summary.processed} processed in {summary.seconds:.1f}s, {summary.videos_per_second:.2f} videos/s)"
    ]
    if info["failures"]:
        lines += _listed("failed", [f"{row['path']}: {row['reason']}" for row in info["failures"]])
    if info["notes"]:
        lines += _listed("notes", [f"{row['path']}: {row['note']}" for row in info["notes"]])
    if summary.missing:
        lines += _listed("listed but not found", summary.missing)
    return "\n".join(lines)
