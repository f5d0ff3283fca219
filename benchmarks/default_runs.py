"""What a user waits for on a small set: the wall-clock time of each head's default run and of `clipcache demo`,
through the command line as typed, on a 40-video set of the demo's kind, on an idle machine and beside one
competing busy process (a `python -c "while True: pass"` this script starts and stops itself, as
`benchmarks/threads.py` does).

The set: 4 classes (the demo's three and a fourth of its kind) x 10 videos, 6/2/2 per class in train/val/test,
extracted once with the demo's model and settings (`--model clipcache-demo --frames 8 --layers=-4:`). Each run is
`clipcache train-head STORE --head H --out DIR --device cpu` (nothing else: the defaults, stopping on convergence),
then `clipcache eval STORE --checkpoint DIR --json` for its test top-1 (not timed). The store's class-name
embeddings (what the `text` head reads) are computed once before any run is timed, as the first `text` run, the
demo or a zero-shot eval leaves them in the store, so the idle and the loaded `text` runs do the same work; that
first computation is timed apart (in its own process, imports excluded). Every command's stderr lines
are time-stamped as they arrive and kept in `--keep`/logs, so where a run's time goes (start-up, plan, each epoch)
can be read from them. With --profile, one more default run of each head in a process of its own is profiled
(cProfile, which slows Python-heavy parts) and split into imports, building (head, text embeddings or text tower,
datasets, optimiser), the head's `prepare` pass, training steps, validation and checkpoint writes.

    python benchmarks/default_runs.py            # all heads and the demo, idle and loaded: ~10 min on 2 cores
    python benchmarks/default_runs.py --heads linear,text --no-demo
    python benchmarks/default_runs.py --quick               # smoke run: linear only, idle only, no demo
    python benchmarks/default_runs.py --no-competitor --no-demo --profile   # and where each run's time goes
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from clipcache.pipeline.demo.synthetic import DEMO_CLASSES, shape_frames, write_video

HEADS = ("linear", "text", "prompt", "attnpool", "evl")
CLASSES = {**DEMO_CLASSES, "yellow_square": ((230, 210, 40), "square")}  # 4 classes of the demo's kind
PER_CLASS = {"train": 6, "val": 2, "test": 2}  # 40 videos
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) ")


def write_set(root: Path) -> None:
    """root/<split>/<class>/<i>.mp4 as the demo writes them (48x64, 16 frames), for `CLASSES`."""
    for split, count in PER_CLASS.items():
        for name, (colour, shape) in CLASSES.items():
            for i in range(count):
                seed = zlib.crc32(f"{split}/{name}/{i}".encode())
                write_video(root / split / name / f"{i:03d}.mp4", shape_frames(16, 48, 64, colour, shape, seed=seed))


def clipcache_command() -> list[str]:
    """The `clipcache` script beside this interpreter (what a user types), else the module (same start-up)."""
    script = Path(sys.executable).with_name("clipcache")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "clipcache.cli"]


@dataclass
class Timed:
    seconds: float
    load_before: float
    load_after: float
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, stderr line)
    stdout: str = ""


def _cell(run: Timed | None) -> str:
    return f"{run.seconds:.1f} ({run.load_before:.1f}-{run.load_after:.1f})" if run else "-"


def timed(args: list[str], log: Path) -> Timed:
    """Run a command, wall clock from start to exit; its stderr lines (progress bars split at carriage returns)
    stamped as they arrive and written to `log`."""
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read_stderr() -> None:
        buffer = ""
        while chunk := process.stderr.read(1):
            if chunk in "\r\n":
                if buffer.strip():
                    lines.append((time.perf_counter() - began, buffer))
                buffer = ""
            else:
                buffer += chunk
        if buffer.strip():
            lines.append((time.perf_counter() - began, buffer))

    reader = threading.Thread(target=read_stderr)
    reader.start()
    stdout = process.stdout.read()
    process.wait()
    reader.join()
    seconds = time.perf_counter() - began
    log.write_text("".join(f"{t:9.2f}  {line}\n" for t, line in lines if not line.startswith("epoch ") or
                           EPOCH_LINE.match(line)))
    if process.returncode != 0:
        tail = "\n".join(line for _, line in lines[-5:])
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{tail}")
    return Timed(seconds, load_before, os.getloadavg()[0], lines, stdout)


def where_time_goes(run: Timed) -> str:
    """Start-up to the plan line (imports, store, text embeddings, head, datasets, `prepare`), the epochs (steps,
    validation, checkpoint writes, from the first to the last epoch line), and what follows the last one."""
    notes = [(t, line) for t, line in run.lines if not line.startswith("epoch ") or EPOCH_LINE.match(line)]
    plan = next((t for t, line in notes if " steps per pass" in line), None)
    epochs = [t for t, line in notes if EPOCH_LINE.match(line)]
    if plan is None or not epochs:
        return "no plan or epoch lines"
    per_epoch = (epochs[-1] - plan) / len(epochs)
    return (f"start-up to plan {plan:.1f} s, {len(epochs)} epochs {epochs[-1] - plan:.1f} s "
            f"({per_epoch:.2f} s each), after the last {run.seconds - epochs[-1]:.1f} s")


def embed_class_names(store: Path) -> float:
    """Seconds to compute the store's class-name embeddings with its text tower (default templates), in a process
    of its own after its imports; they stay in the store for every later run."""
    code = ("import sys, time; from clipcache.cache.reader import CacheReader; "
            "from clipcache.pipeline.train.text_embeddings import text_embeddings; began = time.perf_counter(); "
            "text_embeddings(CacheReader(sys.argv[1]), quiet=True); print(time.perf_counter() - began)")
    return float(subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True,
                                check=True).stdout)


PARTS = {  # part of a run -> (file, function) whose cumulative time it is
    "build": ("loop.py", "_build"), "prepare": ("", "prepare"), "steps": ("loop.py", "_train_epoch"),
    "validation": ("task.py", "validate"), "state": ("checkpoint.py", "save_state"), "publish": ("loop.py", "_publish"),
}


def profile_run(head: str, store: Path, out: Path) -> None:
    """One default run of `head` in this process under cProfile; prints one JSON line of seconds per part."""
    began = time.perf_counter()
    from clipcache.pipeline.evaluate.protocols import run_train_head
    from clipcache.pipeline.train.config import TrainConfig
    imports = time.perf_counter() - began
    profile = cProfile.Profile()
    began = time.perf_counter()
    profile.runcall(run_train_head, TrainConfig(store=store, head=head, out=out, device="cpu", quiet=True))
    seconds = {"imports": imports, "run": time.perf_counter() - began}
    for (path, _, name), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        for part, (file, function) in PARTS.items():
            if name == function and path.endswith(file) and ("/heads/" in path if part == "prepare" else True):
                seconds[part] = seconds.get(part, 0.0) + cumulative
    print(json.dumps(seconds))


def profiled(head: str, store: Path, out: Path) -> str:
    """`profile_run` in a fresh process (so that its imports count), as one line of the report."""
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    result = subprocess.run([sys.executable, __file__, "--profile-head", head, "--store", str(store), "--out",
                             str(out)], capture_output=True, text=True, check=True)
    seconds = json.loads(result.stdout.splitlines()[-1])
    other = seconds["run"] - sum(seconds.get(part, 0.0) for part in PARTS)
    cells = [seconds["imports"], seconds["run"], *(seconds.get(part, 0.0) for part in PARTS), other]
    return f"| {head} | " + " | ".join(f"{value:.2f}" for value in cells) + f" | {load:.1f} |"


def busy() -> subprocess.Popen:
    """One competing process that holds a core as long as it runs."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", default=",".join(HEADS), help="heads to time, comma-separated")
    parser.add_argument("--no-demo", action="store_true", help="leave `clipcache demo` out")
    parser.add_argument("--no-competitor", action="store_true", help="idle runs only")
    parser.add_argument("--quick", action="store_true", help="smoke run: linear only, idle only, no demo")
    parser.add_argument("--keep", type=Path, help="keep the set, the store, the runs and the logs here")
    parser.add_argument("--profile", action="store_true", help="then profile one more run of each head")
    parser.add_argument("--profile-head", help=argparse.SUPPRESS)  # the profiled run's own process
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_head:
        profile_run(args.profile_head, args.store, args.out)
        return
    heads = ["linear"] if args.quick else [h for h in args.heads.split(",") if h]
    unknown = set(heads) - set(HEADS)
    if unknown:
        parser.error(f"--heads: unknown {', '.join(sorted(unknown))}; choose from {', '.join(HEADS)}")
    conditions = ("idle",) if args.quick or args.no_competitor else ("idle", "competitor")
    demo = not (args.quick or args.no_demo)
    cli = clipcache_command()
    print(f"{cpu_model()}; {os.cpu_count()} cores; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"before starting; {time.strftime('%Y-%m-%d %H:%M')}; {' '.join(cli)}", flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="clipcache-default-runs-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        videos, store, logs = root / "videos", root / "features.zarr", root / "logs"
        logs.mkdir(exist_ok=True)
        if not store.exists():
            write_set(videos)
            extracted = timed(cli + ["extract", str(videos), str(store), "--model", "clipcache-demo", "--frames", "8",
                                     "--layers=-4:", "--device", "cpu"], logs / "extract.log")
            print(f"extract: 40 videos in {extracted.seconds:.1f} s (load {extracted.load_before:.1f})", flush=True)
        if "text" in heads:  # read from the store when a kept one has them already
            print(f"class-name embeddings, computed once: {embed_class_names(store):.2f} s", flush=True)
        rows: dict[str, dict[str, object]] = {}
        for condition in conditions:
            competitor = busy() if condition == "competitor" else None
            try:
                time.sleep(0.5 if competitor else 0)
                for head in heads:
                    out = root / f"run-{head}-{condition}"
                    shutil.rmtree(out, ignore_errors=True)
                    run = timed(cli + ["train-head", str(store), "--head", head, "--out", str(out), "--device", "cpu"],
                                logs / f"{head}-{condition}.log")
                    row = rows.setdefault(head, {})
                    row[condition] = run
                    if condition == "idle":
                        stopping = json.loads((out / "run.json").read_text())["stopping"]
                        row["stopping"] = f"{stopping['epoch']} epochs, {stopping['rule']}"
                        evaluated = subprocess.run(cli + ["eval", str(store), "--checkpoint", str(out), "--json",
                                                          "--device", "cpu", "--quiet"],
                                                   capture_output=True, text=True, check=True)
                        row["top1"] = f"{json.loads(evaluated.stdout)['top1']:.3f}"
                    print(f"{head} {condition}: {run.seconds:.1f} s (load {run.load_before:.1f} -> "
                          f"{run.load_after:.1f}); {where_time_goes(run)}", flush=True)
                if demo:
                    out = root / f"demo-{condition}"
                    shutil.rmtree(out, ignore_errors=True)
                    run = timed(cli + ["demo", "--out", str(out), "--device", "cpu"], logs / f"demo-{condition}.log")
                    rows.setdefault("demo", {"stopping": "(45 videos, text head)", "top1": "-"})[condition] = run
                    print(f"demo {condition}: {run.seconds:.1f} s (load {run.load_before:.1f} -> "
                          f"{run.load_after:.1f})", flush=True)
            finally:
                if competitor is not None:
                    competitor.terminate()
                    competitor.wait()
        print("\n| run | idle s (load before-after) | with a competitor s (load) | ratio | epochs, stopped "
              "| test top-1 |")
        print("|---|---|---|---|---|---|")
        for name, row in rows.items():
            idle, loaded = row.get("idle"), row.get("competitor")
            ratio = f"{loaded.seconds / idle.seconds:.2f}" if idle and loaded else "-"
            label = f"`train-head --head {name}`" if name != "demo" else "`clipcache demo`"
            print(f"| {label} | {_cell(idle)} | {_cell(loaded)} | {ratio} | {row.get('stopping', '-')} | "
                  f"{row.get('top1', '-')} |")
        if args.profile:
            print("\n| head | imports s | run s | build | prepare | steps | validation | state | publish | other "
                  "| load |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for head in heads:
                print(profiled(head, store, root / f"profile-{head}"), flush=True)
        print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; logs in {logs}"
              if args.keep else f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
