"""How many torch intra-op threads a stage-two training step should use: samples/s of the `linear`, `text` and
`attnpool` training steps with 1 and 2 (or --threads) threads, on an idle machine and beside one competing busy
process (a `python -c "while True: pass"` this script starts and stops itself), and the ratios. Threads that
spin-wait at their barriers for a core that another process holds make small steps many times slower; this is
what `pipeline/common.py`'s `compute_threads` was chosen from.

    python benchmarks/threads.py                        # tiny built-in model, 8 frames, CPU: ~1 min
    python benchmarks/threads.py --threads 1,2,4 --batch 64
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from clipcache.cache.reader import CacheReader
from clipcache.pipeline.evaluate.predict import to_device
from clipcache.pipeline.train.build import build_for_store
from clipcache.pipeline.train.dataset import CacheDataset
from steps import Timing, interleaved, training_step
from synthetic_store import make_store

HEADS = ("linear", "text", "attnpool")


def step_times(store: Path, heads: tuple[str, ...], batch: int, threads: tuple[int, ...], repeats: int
               ) -> dict[tuple[str, int], Timing]:
    """Median training-step time of each head at each thread count, interleaved so that load falls on all."""
    reader = CacheReader(store)
    s = reader.settings
    cpu = torch.device("cpu")
    steps = {}
    for name in heads:
        head = build_for_store(reader, name, {}, s.frames, "text4vis", None, cpu)
        data = CacheDataset(reader, head.request, reader.done[:batch], s.frames, train=True, preload=True)
        moved = to_device(torch.utils.data.default_collate([data[i] for i in range(batch)]), cpu)
        step = training_step(head, head.parameters(), moved["label"], cpu, inputs=lambda moved=moved: moved)
        for count in threads:
            def with_threads(step=step, count=count) -> Timing:
                torch.set_num_threads(count)
                return step()
            steps[(name, count)] = with_threads
    return interleaved(steps, repeats)


def busy() -> subprocess.Popen:
    """One competing process that holds a core as long as it runs."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clipcache-demo")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--layers", default="-1:")
    parser.add_argument("--batch", type=int, default=32, help="videos per step (the demo's and a 40-video set's)")
    parser.add_argument("--threads", default="1,2", help="thread counts compared")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds, after a warm-up round")
    args = parser.parse_args()
    threads = tuple(int(t) for t in args.threads.split(","))
    with tempfile.TemporaryDirectory(prefix="clipcache-threads-") as tmp:
        store = Path(tmp) / "store.zarr"
        make_store(store, args.model, args.batch, args.frames, args.layers)
        load_before = os.getloadavg()[0]
        idle = step_times(store, HEADS, args.batch, threads, args.repeats)
        competitor = busy()
        try:
            time.sleep(0.5)
            loaded = step_times(store, HEADS, args.batch, threads, args.repeats)
        finally:
            competitor.terminate()
            competitor.wait()
    print(f"{os.cpu_count()} cores; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"(1 min); {args.model} shapes, {args.frames} frames, batch {args.batch}; training samples/s (median of "
          f"{args.repeats} steps)")
    columns = [f"{t} thr idle" for t in threads] + [f"{t} thr busy" for t in threads]
    print(f"{'head':10s}" + "".join(f"{c:>14s}" for c in columns) + f"{'busy/idle':>24s}")
    for name in HEADS:
        idle_rates = [args.batch / idle[(name, t)].wall for t in threads]
        busy_rates = [args.batch / loaded[(name, t)].wall for t in threads]
        ratios = ", ".join(f"{t}: {b / i:.2f}" for t, i, b in zip(threads, idle_rates, busy_rates))
        print(f"{name:10s}" + "".join(f"{r:14.0f}" for r in idle_rates + busy_rates) + f"{ratios:>24s}")
    first = threads[0]
    for t in threads[1:]:
        line = ", ".join(f"{name} idle {idle[(name, first)].wall / idle[(name, t)].wall:.2f} busy "
                         f"{loaded[(name, first)].wall / loaded[(name, t)].wall:.2f}" for name in HEADS)
        print(f"speed-up of {t} threads over {first}: {line}")


if __name__ == "__main__":
    main()
