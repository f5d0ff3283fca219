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
    run: RunCounts
    seconds: float

    @property
    def processed(self) -> int:
        return self.run.processed

    @property
    def videos_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def failure(self, strict: bool) -> str | None:
        """Why the run failed (exit status 1), or None: nothing usable in the store, every video this run
        decoded failed, or with --strict any failed or missing video."""
        info = self.info
        if info["done"] == 0:
            return f"{info['store']}: no video could be extracted ({info['failed']} failed, {info['missing']} missing)"
        if self.run.processed and not self.run.done:
            return f"{info['store']}: every one of the {self.run.processed} videos of this run failed"
        if strict and (info["failed"] or info["missing"]):
            return f"{info['store']}: --strict: {info['failed']} failed and {info['missing']} missing videos"
        return None


def _listed(title: str, rows: list[str]) -> list[str]:
    lines = [f"{title} ({len(rows)}):"] + [f"  {row}" for row in rows[:_MAX_LISTED]]
    if len(rows) > _MAX_LISTED:
        lines.append(f"  ... and {len(rows) - _MAX_LISTED} more (clipcache info STORE lists them all)")
    return lines


def format_extract_summary(summary: ExtractSummary) -> str:
    info = summary.info
    lines = [
        f"{info['store']}: {info['done']} done, {info['failed']} failed, {info['pending']} pending, "
        f"{info['missing']} missing "
        f"({summary.processed} processed in {summary.seconds:.1f}s, {summary.videos_per_second:.2f} videos/s)"
    ]
    if info["failures"]:
        lines += _listed("failed", [f"{row['path']}: {row['reason']}" for row in info["failures"]])
    if info["notes"]:
        lines += _listed("notes", [f"{row['path']}: {row['note']}" for row in info["notes"]])
    if info["missing_videos"]:
        lines += _listed("listed but not found (extracted by a later run once they appear)", info["missing_videos"])
    return "\n".join(lines)
