"""Human-readable end-of-run summaries (the CLI prints them; the pipeline returns data)."""
from __future__ import annotations

from pipeline.extract import ExtractSummary

_MAX_LISTED = 20


def _listed(title: str, rows: list[str]) -> list[str]:
    lines = [f"{title} ({len(rows)}):"] + [f"  {row}" for row in rows[:_MAX_LISTED]]
    if len(rows) > _MAX_LISTED:
        lines.append(f"  ... and {len(rows) - _MAX_LISTED} more (clipcache info STORE lists them all)")
    return lines


def format_extract_summary(summary: ExtractSummary) -> str:
    lines = [
        f"{summary.store}: {summary.done} done, {summary.failed} failed, {summary.pending} pending "
        f"({summary.processed} processed in {summary.seconds:.1f}s, {summary.videos_per_second:.2f} videos/s)"
    ]
    if summary.failures:
        lines += _listed("failed", [f"{path}: {reason}" for path, reason in summary.failures])
    if summary.notes:
        lines += _listed("notes", [f"{path}: {note}" for path, note in summary.notes])
    if summary.missing:
        lines += _listed("listed but not found", summary.missing)
    return "\n".join(lines)
