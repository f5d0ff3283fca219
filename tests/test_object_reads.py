"""Stage two reading a store in object storage (a real S3 server, tests/s3_server.py): the same views and the same
batches as from the store's folder, and a damaged shard object named by its video, as a damaged file is."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import obstore
import pytest
import torch

from clipcache.cache.location import StoreUrl
from clipcache.cache.reader import CacheReader, StoreDamageError, ViewReader
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.train.dataset import CacheDataset
from clipcache.pipeline.train.loader import batch_loader
from conftest import SYNTHETIC, synthetic_store
from s3_server import S3Server

REQUEST = FeatureRequest(pooled=True, layers=(1, 2))


def _in_bucket(server: S3Server, folder: Path, monkeypatch: pytest.MonkeyPatch) -> StoreUrl:
    """The store `folder` copied object by object into a fresh prefix of the bucket; its URL, reachable through
    the environment as a user's would be."""
    prefix = f"{server.prefix()}/{folder.name}"
    objects = server.store(prefix)
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            obstore.put(objects, file.relative_to(folder).as_posix(), file.read_bytes())
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return StoreUrl(server.url(prefix))


def test_every_view_and_a_run_of_views_read_from_the_bucket_equal_the_folders(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = synthetic_store(tmp_path / "s.zarr", num_videos=8)  # 3 views a video, 4 videos a shard
    url = _in_bucket(s3_server, folder, monkeypatch)
    local, remote = (ViewReader(CacheReader(store).array("tokens/2")) for store in (folder, url))
    assert remote._remote is not None  # range requests, not a folder
    views = SYNTHETIC["clips"] * SYNTHETIC["crops"] + SYNTHETIC["augment"]
    for video in range(8):
        for view in range(views):
            expected = local.read(video, view, np.empty(local.chunk, np.float16))
            np.testing.assert_array_equal(remote.read(video, view, np.empty(remote.chunk, np.float16)), expected)
    run = [(video, view, np.empty(remote.chunk, np.float16)) for video in (4, 5) for view in range(views)]
    remote.read_run(run)  # two videos' views back to back in one shard object: one range request
    for video, view, out in run:
        np.testing.assert_array_equal(out, local.read(video, view, np.empty(local.chunk, np.float16)))


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_training_and_evaluation_batches_from_the_bucket_equal_the_folders(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    folder = synthetic_store(tmp_path / "s.zarr", num_videos=10, dtype=dtype)
    url = _in_bucket(s3_server, folder, monkeypatch)
    for train, frames in ((True, 3), (False, SYNTHETIC["frames"])):
        passes = []
        for store in (folder, url):
            data = CacheDataset(CacheReader(store), REQUEST, np.arange(10), frames, train=train, preload=False,
                                seed=3)
            data.set_epoch(1)
            passes.append(list(batch_loader(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0))))
        folder_batches, bucket_batches = passes
        assert len(bucket_batches) == len(folder_batches) > 1
        for ours, theirs in zip(bucket_batches, folder_batches):
            assert ours.keys() == theirs.keys()
            for key in ours:
                torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


def test_a_damaged_shard_object_names_its_video(s3_server: S3Server, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    folder = synthetic_store(tmp_path / "s.zarr", num_videos=8)
    url = _in_bucket(s3_server, folder, monkeypatch)
    key, offset, _ = ViewReader(CacheReader(url).array("tokens/1")).place(5, 1)
    objects = url.objects()
    data = bytearray(obstore.get(objects, key).bytes())
    data[offset + 3] ^= 0x40
    obstore.put(objects, key, bytes(data))
    views = SYNTHETIC["clips"] * SYNTHETIC["crops"]
    fresh = CacheDataset(CacheReader(url), FeatureRequest(layers=(1, 2)), np.arange(8), SYNTHETIC["frames"],
                         train=False, preload=False)
    with pytest.raises(StoreDamageError, match=rf"^{url}: tokens/1 of video 5 \(.*5\.mp4\) is damaged "
                                               r"\(checksum mismatch\)"):
        fresh[list(range(4 * views, 8 * views))]  # videos 4-7: one shard object, its views back to back
    intact = fresh[[video * views + view for video in (4, 6, 7) for view in range(views)]]
    np.testing.assert_array_equal(intact["tokens"][:, 0, :, 0, 2].numpy(), np.ones((3 * views, 4), np.float16))
