"""A store opens in xarray with named dimensions and the values clipcache reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.train.text_embeddings import text_embeddings


def test_xarray_opens_every_group_with_named_dimensions(appearance_store: Path) -> None:
    reader = CacheReader(appearance_store)
    text_embeddings(reader, "text4vis")  # a node written after extraction: consolidated again
    block = reader.settings.layers[-1]

    tokens = xr.open_zarr(appearance_store, group="tokens")
    assert tokens[str(block)].dims == ("video", "view", "frame", "token", "channel")
    np.testing.assert_array_equal(tokens[str(block)].values, reader.tokens(block, slice(None)))

    videos = xr.open_zarr(appearance_store, group="videos")
    assert videos["label"].dtype == np.int32 and videos["frame_index"].dims == ("video", "view", "frame")
    np.testing.assert_array_equal(videos["label"].values, reader.column("label"))  # label 0 is not masked
    assert [str(path) for path in videos["path"].values] == [str(path) for path in reader.column("path")]

    tree = xr.open_datatree(appearance_store, engine="zarr")
    assert tree["pooled"].dims == ("video", "view", "frame", "embed")
    np.testing.assert_array_equal(tree["pooled"].values, reader.pooled(slice(None)))
    assert tree.attrs["format"] == reader.attrs["format"]
    key = next(iter(tree["text"].children))
    assert tree[f"text/{key}/embeddings"].dims == ("class", "embed")
    assert tree["frozen"]["proj"].dims == ("channel", "embed")
