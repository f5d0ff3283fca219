"""Stage-two read speed: useful bytes per second of the cache dataset next to a plain sequential read of the
same files, for 1 and 6 views per video, float16 and int8 tokens, page cache warm and cold; and the same
chunks read by plain threads, which tells the dataset's own costs from the disk's.

    python benchmarks/read.py                         # ViT-B-16 shapes, 8 frames, last 2 blocks, 128 videos
    python benchmarks/read.py --videos 128 --workers 2 --layers=-4:

Useful bytes are those a sample uses: the requested blocks of the one view a training sample draws. The
plain read, the baseline, is every byte of the token files read in order into one reused buffer the size of a
batch, memory that delivers what the dataset delivers. The same read into a 16 MB buffer is printed beside it:
such a buffer stays in the processor's cache, so it measures the copy from the page cache without the
writes to memory that any batch of tens of MB costs. The chunk read is what a pass asks of the disk and
nothing else: one random view of every video (each block's chunk, and its int8 scales), in random order, on
as many threads as the dataset reads with, each file opened once and told not to read ahead where a pass reads
one view in several (as the dataset does), into memory as large as two batches, unchecked. The dataset's
first pass is that of a fresh dataset, which checks the crc32c of every chunk it reads; "dataset" is a later
pass of one dataset, as a training run's later epochs are (a chunk is checked again only where its file
changed: cache/reader.py ViewReader). Cold figures drop the page cache before each measurement (needs root:
/proc/sys/vm/drop_caches); without permission only warm ones are printed. A later pass finds the page cache cold
only where the store is larger than the cache can hold, so cold passes read the way the dataset reads features
more than UNCACHED_SHARE times the memory: past the cache (O_DIRECT) where its probe of the store, printed at the
end of the row, finds that faster (pipeline/train/cache_probe.py); "cached" is the same later pass through the
page cache, as the first pass over a store that fits reads. Every figure comes from this one run. The machine
(processor, the disk under the temporary folder where the stores are written, as /sys/block describes it) is
printed above the table and the load average at its measurements (lowest - highest) beside each row: on a shared
machine the figures follow it.

The object-storage case (`--only object`) writes a store into a bucket of a local S3 server (moto's, in its own
process, each request answered `--s3-latency-ms` late: local_s3.py) and sets the dataset streaming from it (its
first and its next pass) against a plain parallel GET of the same chunks, each at several numbers of requests in
flight. The server shares this machine's cores with the reader and copies the whole shard object for every range
request: its figures are ratios, not what a cloud store gives.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from clipcache.cache.location import StoreUrl
from clipcache.cache.reader import CacheReader, ViewReader
from clipcache.cache.schema import scale_name, tokens_name
from clipcache.heads.base import FeatureRequest
from clipcache.pipeline.train import dataset as dataset_module
from clipcache.pipeline.train.dataset import READ_THREADS, CacheDataset
from clipcache.pipeline.train.loader import batch_loader
from steps import machine
from synthetic_store import make_store


def drop_caches() -> bool:
    """Empty the page cache (written data flushed first); whether it was permitted."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def plain_read(folder: Path, buffer_bytes: int) -> tuple[int, float]:
    """Bytes and seconds to read every file under `folder` in path order, `buffer_bytes` at a time into one
    reused buffer (written once before, so the figure is the read itself, not first-touch page faults). Each
    read goes on where the one before ended, back to the start at the end, so every byte of the buffer is
    written even where the files are smaller than it, as a batch's are."""
    files = sorted(file for file in folder.rglob("*") if file.is_file())
    buffer = memoryview(bytearray(b"\1" * buffer_bytes))
    began, total, at = time.perf_counter(), 0, 0
    for file in files:
        with file.open("rb", buffering=0) as handle:
            while count := handle.readinto(buffer[at:]):
                total += count
                at = (at + count) % buffer_bytes
    return total, time.perf_counter() - began


def chunk_places(reader: CacheReader, seed: int = 0) -> list[tuple[str, int, int]]:
    """(key, offset, length) of one random view of every video in every token array, and its int8 scales,
    shuffled; the key is the shard's path in the store."""
    s = reader.settings
    names = [tokens_name(layer) for layer in s.layers] + \
        ([scale_name(layer) for layer in s.layers] if s.dtype == "int8" else [])
    rng = np.random.default_rng(seed)
    views = rng.integers(s.views, size=s.num_videos)
    places = [ViewReader(reader.array(name)).place(video, int(view)) for name in names
              for video, view in enumerate(views)]
    return [places[i] for i in rng.permutation(len(places))]  # type: ignore[misc]  # every chunk was written


def chunk_read(store: Path, places: list[tuple[str, int, int]], slots: int, scattered: bool) -> tuple[int, float]:
    """Bytes and seconds to read `places` on READ_THREADS threads, each into the next of `slots` places in
    one reused buffer (as many as two batches hold: the dataset reads one while the caller holds another).
    Each file is opened once, as the dataset does, and `scattered` (a pass reads one view in several) tells
    the kernel not to read ahead, as the dataset does."""
    size = max(length for _, _, length in places)
    memory = memoryview(bytearray(b"\1" * (size * slots)))
    files = {file: os.open(store / file, os.O_RDONLY) for file, _, _ in places}
    if scattered:
        for fd in files.values():
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)

    def read(job: tuple[int, tuple[str, int, int]]) -> int:
        slot, (file, offset, length) = job
        return os.preadv(files[file], [memory[slot % slots * size:][:length]], offset)

    try:
        began = time.perf_counter()
        with ThreadPoolExecutor(READ_THREADS) as threads:
            total = sum(threads.map(read, enumerate(places)))
        return total, time.perf_counter() - began
    finally:
        for fd in files.values():
            os.close(fd)


def disk(folder: Path) -> str:
    """The block device `folder` lies on, as /sys/block describes it; says so when it cannot tell (a
    filesystem without one, such as an overlay or tmpfs)."""
    number = os.stat(folder).st_dev
    entry = Path(f"/sys/dev/block/{os.major(number)}:{os.minor(number)}")
    if not entry.exists():
        return "disk not known (no block device under /sys for this folder)"
    device = entry.resolve()
    if (device / "partition").exists():
        device = device.parent

    def field(name: str) -> str:
        try:
            return (device / name).read_text().strip()
        except OSError:
            return ""
    kind = field("device/model") or (device / "device/driver").resolve().name
    size = int(field("size") or 0) * 512 / 1e9
    return (f"disk {device.name} ({kind}, {size:.0f} GB, rotational flag {field('queue/rotational')}, read-ahead "
            f"{field('queue/read_ahead_kb')} KB, scheduler {field('queue/scheduler')})")


def dataset_pass(dataset: CacheDataset, batch_size: int, workers: int, step: float = 0.0) -> tuple[int, float]:
    """Samples and seconds of one shuffled training pass. Each batch is let go before the next is read, as
    the training loop does (it keeps only the device copy), so the dataset may write into its memory again.
    `step`: seconds the caller then waits per batch, as a host waits for its GPU's training step."""
    began, samples = time.perf_counter(), 0
    for batch in batch_loader(dataset, batch_size, shuffle=True, workers=workers):
        samples += len(batch["label"])
        del batch
        time.sleep(step)
    return samples, time.perf_counter() - began


def measure(store: Path, frames: int, batch_size: int, workers: int, cold: bool, repeats: int, step: float
            ) -> dict[str, float]:
    """Plain reads vs the dataset on one store, warm (each read once before) or cold: medians of `repeats`
    interleaved measurements (a virtual machine's disk and memory vary from one second to the next)."""
    reader = CacheReader(store)
    s = reader.settings

    def fresh(uncached: bool) -> CacheDataset:
        return CacheDataset(reader, FeatureRequest(layers=s.layers), np.arange(s.num_videos), frames, train=True,
                            preload=False, uncached=uncached)
    probed = fresh(False).probe_cache() if cold and drop_caches() else None  # as for a store larger than memory
    past = probed is not None and probed.read_past
    dataset, cached = fresh(past), fresh(False)
    useful = dataset.feature_bytes() / (len(dataset.videos) * dataset.views)  # per sample: one view's blocks
    places = chunk_places(reader)
    reads: dict[str, Callable[[], tuple[int, float]]] = {
        "plain": lambda: plain_read(store / "tokens", int(useful * batch_size)),
        "plain_16mb": lambda: plain_read(store / "tokens", 1 << 24),
        "chunks": lambda: chunk_read(store, places, 2 * batch_size * len(places) // s.num_videos, dataset.views > 1),
        "first": lambda: dataset_pass(fresh(past), batch_size, workers),
        "dataset": lambda: dataset_pass(dataset, batch_size, workers),
        **({"cached": lambda: dataset_pass(cached, batch_size, workers)} if cold else {}),
        **({"stepped": lambda: dataset_pass(dataset, batch_size, workers, step)} if step and not cold else {}),
    }
    rates: dict[str, list[float]] = {name: [] for name in reads}
    loads = []
    for _ in range(repeats):
        for name, read in reads.items():
            settle(read, cold)
            loads.append(os.getloadavg()[0])
            count, seconds = read()
            rates[name].append(count * (useful if name in ("first", "dataset", "cached", "stepped") else 1) / seconds)
    figures = {name: float(np.median(values)) for name, values in rates.items()}
    return {**figures, "samples": figures["dataset"] / useful, "mb_per_sample": useful / 1e6, "load_low": min(loads),
            "load_high": max(loads), "probe_past": probed.past if probed else np.nan,
            "probe_through": probed.through if probed else np.nan}


def overlap(m: dict[str, float], videos: int, batch_size: int, step: float) -> str:
    """The pass with a step per batch against the read alone. Reading in turn takes read + step per batch;
    one ahead can hide the shorter of the two in every batch but one (the first read, or the last step)."""
    batches = -(-videos // batch_size)
    batch_bytes = m["mb_per_sample"] * 1e6 * videos / batches
    read, stepped = batch_bytes / m["dataset"], batch_bytes / m["stepped"]
    hidden = batches * (read + step - stepped) / ((batches - 1) * min(read, step)) if batches > 1 else 0.0
    return (f"{'':>20s} with a {step * 1e3:.0f} ms step per batch: {stepped * 1e3:.0f} ms per batch (read alone "
            f"{read * 1e3:.0f} ms): {hidden:.2f} of what one batch ahead can hide is hidden")


def settle(read: Callable[[], object], cold: bool) -> None:
    """Before a measurement: written data flushed, then the page cache dropped (cold) or the same read done
    once (warm)."""
    os.sync()
    if not cold:
        read()
    elif not drop_caches():
        raise PermissionError("dropping the page cache is not permitted")


def parallel_get(url: StoreUrl, places: list[tuple[str, int, int]], in_flight: int) -> tuple[int, float]:
    """Bytes and seconds to fetch `places` (key, offset, length) from object storage with one range request each,
    `in_flight` at a time (threads blocked in obstore, which lets go of the GIL), the bytes only counted: the
    least a reader of these chunks can ask of the server."""
    import obstore

    objects = url.objects()

    def get(place: tuple[str, int, int]) -> int:
        key, offset, length = place
        return len(obstore.get_range(objects, key, start=offset, length=length))

    began = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as threads:
        total = sum(threads.map(get, places))
    return total, time.perf_counter() - began


def measure_object(url: StoreUrl, frames: int, batch_size: int, in_flight: int, repeats: int) -> dict[str, float]:
    """Plain parallel GET vs the dataset streaming from object storage, each with at most `in_flight` requests
    at once (the dataset: its REQUESTS_IN_FLIGHT): medians of `repeats` interleaved measurements. The dataset's
    first pass is a fresh one (it opens the arrays and reads each shard's index); its later pass is the same
    dataset's next epoch."""
    reader = CacheReader(url)
    s = reader.settings
    places = chunk_places(reader)
    rates: dict[str, list[float]] = {"plain": [], "first": [], "later": []}
    loads = []
    default, dataset_module.REQUESTS_IN_FLIGHT = dataset_module.REQUESTS_IN_FLIGHT, in_flight
    try:
        for _ in range(repeats):
            loads.append(os.getloadavg()[0])
            count, seconds = parallel_get(url, places, in_flight)
            rates["plain"].append(count / seconds)
            dataset = CacheDataset(reader, FeatureRequest(layers=s.layers), np.arange(s.num_videos), frames,
                                   train=True, preload=False)
            useful = dataset.feature_bytes() / len(dataset)
            for name in ("first", "later"):
                count, seconds = dataset_pass(dataset, batch_size, 0)
                rates[name].append(count * useful / seconds)
            loads.append(os.getloadavg()[0])
    finally:
        dataset_module.REQUESTS_IN_FLIGHT = default
    figures = {name: float(np.median(values)) for name, values in rates.items()}
    return {**figures, "mb_per_sample": useful / 1e6, "load_low": min(loads), "load_high": max(loads)}


def object_storage(args: argparse.Namespace) -> None:
    """The object-storage case: a store of `--s3-videos` in a bucket of a local S3 server (moto, in a process of
    its own), read by a plain parallel GET and by the dataset at each of `--in-flight` requests at once."""
    from local_s3 import LocalS3  # moto and boto3: needed for this case only

    counts = [int(n) for n in args.in_flight.split(",")]
    print(f"object storage (moto's S3 server on this machine, each request answered {args.s3_latency_ms:.0f} ms "
          f"late): {args.s3_videos} videos, one view each, batch "
          f"{args.s3_batch_size}, median of {args.repeats}; the dataset's first pass opens the store and reads each "
          f"shard's index, its later pass is the next epoch")
    print(f"{'dtype':>8s} {'in flight':>9s} {'MB/sample':>9s} {'plain GET':>12s} {'dataset 1st':>12s} "
          f"{'dataset later':>13s} {'1st/plain':>9s} {'later/plain':>11s} {'load average':>12s}")
    with tempfile.TemporaryDirectory(prefix="clipcache-read-") as tmp, LocalS3(args.s3_latency_ms / 1000) as s3:
        os.environ.update(s3.env())  # obstore reads the endpoint and keys from the environment
        for dtype in ("float16", "int8"):
            folder = Path(tmp) / f"{dtype}.zarr"
            make_store(folder, args.model, args.s3_videos, args.frames, args.layers, dtype=dtype)
            url = StoreUrl(s3.upload(folder, folder.name))
            figures = {}
            for n in counts:
                m = figures[n] = measure_object(url, args.frames, args.s3_batch_size, n, args.repeats)
                print(f"{dtype:>8s} {n:9d} {m['mb_per_sample']:9.2f} {m['plain'] / 1e6:7.0f} MB/s "
                      f"{m['first'] / 1e6:7.0f} MB/s {m['later'] / 1e6:8.0f} MB/s {m['first'] / m['plain']:9.2f} "
                      f"{m['later'] / m['plain']:11.2f} {m['load_low']:5.1f} - {m['load_high']:4.1f}")
            best = max(m["plain"] for m in figures.values())
            plain_needs = min(n for n in counts if figures[n]["plain"] >= 0.9 * best)
            enough = [n for n in counts if figures[n]["first"] >= 0.8 * best]
            print(f"{'':>8s} the plain GET reaches 0.9 of its best ({best / 1e6:.0f} MB/s) with {plain_needs} in "
                  f"flight; the dataset's first pass reaches 0.8 of it with "
                  f"{f'{enough[0]} in flight' if enough else 'none of these'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--videos", type=int, default=128)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--layers", default="-2:")
    parser.add_argument("--workers", type=int, default=0, help="loader workers")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="samples per batch (32: one rank's share of the token heads' 128-256 on 4-8 GPUs)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure (their median)")
    parser.add_argument("--step-ms", type=float, default=0.0,
                        help="also time a warm pass whose caller waits this long per batch, as for a GPU step, "
                             "and print how much of the shorter of read and step the read-ahead hides (cold "
                             "passes vary more from one to the next than such a step)")
    parser.add_argument("--only", choices=("folder", "object"), help="measure one case (default: both)")
    parser.add_argument("--s3-videos", type=int, default=64, help="videos of the object-storage case's stores")
    parser.add_argument("--s3-batch-size", type=int, default=16,
                        help="the object-storage case's batch (a few of a shard's videos per batch, as in a large "
                             "store, not all of them back to back)")
    parser.add_argument("--s3-latency-ms", type=float, default=30.0,
                        help="the object-storage case's server answers each request this late (S3: tens of ms to "
                             "the first byte)")
    parser.add_argument("--in-flight", default="1,4,16,64",
                        help="requests at once, for the plain GET and the dataset, in the object-storage case")
    args = parser.parse_args()
    where = machine(torch.device("cpu"))
    print(f"{where}; {disk(Path(tempfile.gettempdir()))}")
    if args.only != "folder":
        object_storage(args)
    if args.only == "object":
        return
    print(f"{args.videos} videos, {args.model} shapes, {args.frames} frames, blocks {args.layers}, "
          f"batch {args.batch_size}, {args.workers} loader worker(s), median of {args.repeats}; useful bytes: the "
          "view a sample draws")
    print(f"{'views':>5s} {'dtype':>8s} {'cache':>5s} {'MB/sample':>9s} {'plain read':>12s} {'(16 MB buf)':>12s} "
          f"{'chunk read':>12s} {'1st pass':>12s} {'dataset':>12s} {'samples/s':>9s} {'1st/plain':>9s} "
          f"{'dataset/plain':>13s} {'dataset/chunks':>14s} {'cached/plain':>12s} {'load average':>12s} "
          f"{'probe: past, through':>20s}")
    for views in (1, 6):
        for dtype in ("float16", "int8"):
            with tempfile.TemporaryDirectory(prefix="clipcache-read-") as tmp:
                store = Path(tmp) / "store.zarr"
                make_store(store, args.model, args.videos, args.frames, args.layers, dtype=dtype, views=views)
                for cold in (False, True):
                    try:
                        m = measure(store, args.frames, args.batch_size, args.workers, cold, args.repeats,
                                    args.step_ms / 1000)
                    except PermissionError as error:
                        print(f"{views:5d} {dtype:>8s} {'cold':>5s}  ({error})")
                        continue
                    print(f"{views:5d} {dtype:>8s} {'cold' if cold else 'warm':>5s} {m['mb_per_sample']:9.2f} "
                          f"{m['plain'] / 1e6:7.0f} MB/s {m['plain_16mb'] / 1e6:7.0f} MB/s "
                          f"{m['chunks'] / 1e6:7.0f} MB/s {m['first'] / 1e6:7.0f} MB/s {m['dataset'] / 1e6:7.0f} MB/s "
                          f"{m['samples']:9.1f} {m['first'] / m['plain']:9.2f} {m['dataset'] / m['plain']:13.2f} "
                          f"{m['dataset'] / m['chunks']:14.2f} "
                          f"{m['cached'] / m['plain'] if cold else float('nan'):12.2f} "
                          f"{m['load_low']:5.1f} - {m['load_high']:4.1f} "
                          f"{m['probe_past'] / 1e6:9.0f} {m['probe_through'] / 1e6:5.0f} MB/s")
                    if args.step_ms and not cold:
                        print(overlap(m, args.videos, args.batch_size, args.step_ms / 1000))


if __name__ == "__main__":
    main()
