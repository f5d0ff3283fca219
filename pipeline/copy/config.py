"""Every option of `clipcache copy`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

from dataclasses import dataclass

from clipcache.cache.location import Store
from clipcache.pipeline.options import Options, option, store_argument


@dataclass(kw_only=True)
class CopyConfig(Options):
    src: Store = store_argument("The clipcache store to copy: a folder or an object-storage URL "
                                "(s3://bucket/prefix/store.zarr).")
    dst: Store = store_argument("Where the copy goes: a folder or an object-storage URL that is new, empty, or an "
                                "unfinished copy (resumed). A clipcache store there is replaced only with "
                                "--overwrite; anything else is refused.")
    overwrite: bool = option(False, "Replace a clipcache store at DST (only a clipcache store is ever removed).")
    quiet: bool = option(False, "No progress bar.")
