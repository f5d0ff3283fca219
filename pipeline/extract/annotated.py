"""A run's videos with their temporal annotations: the splits the annotation files give (ActivityNet's
subsets, THUMOS14's val/test folders) go into the store's split column, and the checked segments into
its `segments/` table. Annotations enter neither the features nor the store's identity: a rerun with
corrected files replaces the table and changes no feature."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from clipcache.cache.location import Store
from clipcache.cache.schema import canonical_split
from clipcache.cache.segments import SegmentTable, write_segments
from clipcache.pipeline.extract.annotations import apply_rules, match_videos, read_annotations
from clipcache.pipeline.extract.sources import VideoList


@dataclass(frozen=True)
class Annotated:
    listing: VideoList  # splits filled in from the annotations where the inputs gave none
    table: SegmentTable
    problems: list[str]  # one line per kind of annotation left out, clipped or merged


def annotate(listing: VideoList, files: tuple[Path, ...]) -> Annotated:
    """Read `files` (any supported format, merged), match them to the listed videos and apply the rules."""
    annotations = read_annotations(files)
    paths = [entry.path for entry in listing.entries]
    index = match_videos(annotations, paths).index
    split_of = {index[name]: canonical_split(split) for name, split in annotations.splits.items() if name in index}
    entries = tuple(replace(entry, split=split_of.get(i, "")) if not entry.split else entry
                    for i, entry in enumerate(listing.entries))
    unlabelled = all(entry.label is None for entry in listing.entries)
    listing = replace(listing, entries=entries,
                      classes=annotations.classes if unlabelled and not listing.classes else listing.classes)
    table, problems = apply_rules(annotations, paths, annotations.classes)
    return Annotated(listing, table, problems.lines())


def store_segments(store: Store, annotated: Annotated | None) -> None:
    """Write the segment table (under the store's lock: one writer)."""
    if annotated is not None:
        write_segments(store, annotated.table)
