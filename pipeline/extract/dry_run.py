"""`extract --dry-run`: what a run would do, read from the inputs alone, before a ten-hour run starts.

Nothing is written and no lock is taken: the videos found and missing, the classes and splits, the
annotations' segments per split, whether the store would be created, resumed or refused, and the frames
and bytes the features would take (dense stores: from each container's stated length, an estimate).
"""
from __future__ import annotations

import os
from collections import Counter

from clipcache import InputError
from clipcache.cache.dense import frame_bytes as dense_frame_bytes
from clipcache.cache.info import size_text
from clipcache.cache.location import Store
from clipcache.cache.place import store_format
from clipcache.cache.reader import CacheReader
from clipcache.cache.schema import PENDING, StoreSettings
from clipcache.cache.writer import check_settings
from clipcache.pipeline.extract.annotated import Annotated
from clipcache.pipeline.extract.dense_frames import estimate
from clipcache.pipeline.extract.sources import VideoList


def frame_bytes(settings: StoreSettings) -> int:
    """Bytes of the features of one stored frame (one view), as their dtypes hold them."""
    if settings.dense:
        return dense_frame_bytes(settings)
    per_token = settings.width * (1 if settings.dtype == "int8" else 2) + (4 if settings.dtype == "int8" else 0)
    return len(settings.layers) * settings.stored_tokens * per_token + settings.embed_dim * 2


def describe_run(store: Store, listing: VideoList, annotated: Annotated | None, settings: StoreSettings) -> str:
    """The dry run's report, one fact per line."""
    entries = listing.entries
    found = [e for e in entries if e.found]
    splits = Counter(e.split or "(none)" for e in found)
    lines = [f"videos       {len(found)} found, {len(entries) - len(found)} listed but missing",
             f"splits       {', '.join(f'{name} {count}' for name, count in sorted(splits.items()))}",
             f"classes      {len(listing.classes)}" + (f": {', '.join(listing.classes[:8])}"
                                                       f"{', ...' if len(listing.classes) > 8 else ''}"
                                                       if listing.classes else "")]
    if annotated is not None:
        table = annotated.table
        split_of = [entries[v].split or "(none)" for v in table.video]
        per_split = Counter(s for s, ambiguous in zip(split_of, table.ambiguous) if not ambiguous)
        counts = ", ".join(f"{k} {n}" for k, n in sorted(per_split.items()))
        lines.append(f"segments     {int((~table.ambiguous).sum())} ({counts}), {int(table.ambiguous.sum())} ambiguous "
                     f"regions, {len(table.classes)} classes")
        lines += [f"problem      {line}" for line in annotated.problems]
    lines.append(f"store        {_store_plan(store, settings)}")
    per_frame = frame_bytes(settings)
    if settings.dense:
        seconds, samples, unknown = 0.0, 0, 0
        for entry in found:
            guess = estimate(listing.root / entry.path, settings.fps or None)
            if guess is None:
                unknown += 1
                continue
            seconds, samples = seconds + guess[0], samples + guess[1]
        unstated = f" ({unknown} videos state no length)" if unknown else ""
        lines.append(f"estimate     {seconds / 3600:.2f} hours of video, {samples} frames, "
                     f"{size_text(samples * per_frame)}{unstated} (from the containers' headers)")
    else:
        frames = len(found) * settings.views * settings.frames
        lines.append(f"estimate     {frames} frames, {size_text(frames * per_frame)}")
    lines.append("nothing written (--dry-run)")
    return os.linesep.join(lines)


def _store_plan(store: Store, settings: StoreSettings) -> str:
    if store_format(store) is None:
        return f"{store} would be created ({settings.format})"
    try:
        check_settings(store, settings)
    except InputError as refusal:
        return f"would be refused: {refusal}"
    pending = int((CacheReader(store).status == PENDING).sum())
    return f"{store} exists with these settings: {pending} videos pending would be extracted"
