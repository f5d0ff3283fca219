"""A store opens in xarray with named dimensions and the values clipcache reads."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from clipcache.cache.reader import CacheReader
from clipcache.cache.xr import open_dataset
from clipcache.pipeline.train.text_embeddings import text_embeddings
from conftest import synthetic_store


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


def test_open_dataset_puts_each_videos_path_class_split_and_status_beside_its_features(appearance_store: Path
                                                                                        ) -> None:
    reader = CacheReader(appearance_store)
    ds = open_dataset(appearance_store)
    assert set(ds.data_vars) == {"pooled", *(f"block_{b}" for b in reader.settings.layers)}
    for block in reader.settings.layers:
        assert ds[f"block_{block}"].dims == ("video", "view", "frame", "token", "channel")
        np.testing.assert_array_equal(ds[f"block_{block}"].values, reader.tokens(block, slice(None)))
    np.testing.assert_array_equal(ds["pooled"].values, reader.pooled(slice(None)))
    assert list(ds["path"].values) == [str(path) for path in reader.column("path")]
    assert list(ds["label"].values) == [reader.classes[label] for label in reader.column("label")]
    assert list(ds["split"].values) == [str(split) for split in reader.column("split")]
    np.testing.assert_array_equal(ds["status"].values, reader.status)
    assert ds.attrs["fingerprint"] == reader.attrs["fingerprint"]

    test = ds.sel(video=(ds["split"] == "test") & (ds["status"] == 1))  # selection by the coordinates
    wanted = np.flatnonzero(reader.column("split") == "test")
    assert test.sizes["video"] == len(wanted) == 12
    np.testing.assert_array_equal(test["pooled"].values, reader.pooled(wanted))


def test_open_dataset_reads_features_when_they_are_used_not_when_it_opens(appearance_store: Path, tmp_path: Path
                                                                          ) -> None:
    store = tmp_path / "copy.zarr"
    shutil.copytree(appearance_store, store)
    ds = open_dataset(store)
    pooled = zarr.open_group(str(store), mode="r+")["pooled"]
    changed = np.full(pooled.shape[1:], 3.5, dtype=pooled.dtype)
    pooled[0] = changed  # after opening: a dataset that had read the store would still hold the old values
    np.testing.assert_array_equal(ds["pooled"][0].values, changed)


def test_open_dataset_of_an_int8_store_gives_the_values_and_their_scales(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "int8.zarr", dtype="int8")
    reader, ds = CacheReader(store), open_dataset(store)
    for block in reader.settings.layers:
        assert ds[f"block_{block}"].dtype == np.int8
        assert ds[f"block_{block}_scale"].dims == ("video", "view", "frame", "token")
        tokens = ds[f"block_{block}"].astype(np.float32) * ds[f"block_{block}_scale"]
        np.testing.assert_allclose(tokens.transpose(*ds[f"block_{block}"].dims).values,
                                   reader.tokens(block, slice(None)), rtol=1e-6)


def test_open_dataset_without_xarray_says_so_in_one_line(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", num_videos=3)
    probe = ("import sys; sys.modules['xarray'] = None\n"  # as if xarray were not installed
             "from clipcache import InputError\nfrom clipcache.cache.xr import open_dataset\n"
             f"try:\n    open_dataset({str(store)!r})\nexcept InputError as error:\n    print(error)")
    done = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done
    assert done.stdout.strip().splitlines() == [
        "clipcache.cache.xr.open_dataset needs xarray, which is not installed (pip install 'clipcache[xarray]')"]
