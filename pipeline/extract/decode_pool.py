"""Worker processes that prepare videos, isolated so a hung or crashing decoder costs one video.

Each worker owns one pipe and one task at a time, so the pool knows which video each worker is on:
a worker past its deadline is killed and replaced (decord can loop forever on a wrong frame count),
and a worker that dies (a segfault in a decoder) is replaced too; both become a failed result.
A feeder thread keeps workers busy while the caller encodes, up to `prefetch` results waiting.

A recipe's `prepare(path, index)` yields what a video gives: a clip recipe one PreparedVideo, a dense
recipe the pieces of a long video as they are decoded, then its summary. Each reaches the caller as it
comes (a piece is an Outcome with `final` False), the deadline counts from the last thing a worker sent,
and a worker is not read from while `prefetch` results wait, so a long video is never held whole.
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from PIL import Image

from clipcache import InputError
from clipcache.pipeline.extract.video import VideoDecodeError

_POLL_SECONDS = 0.05
_FULL_POLL_SECONDS = 0.002  # while the caller is behind: a piece takes ~80 ms to decode, a 50 ms nap idles the worker
_READY = "ready"
_BUG = "bug"


# what a bad input file can raise while it is read (decoders, the file system, memory for a huge frame)
VIDEO_FAILURES = (VideoDecodeError, OSError, MemoryError, Image.DecompressionBombError)


class WorkerBugError(RuntimeError):
    """A decode worker hit a bug in our code (not a bad video): the run stops with the worker's traceback."""


class WorkerStartError(RuntimeError):
    """A decode worker died before it could take work: the environment is broken, not a video."""


class Recipe(Protocol):
    """What a worker needs to prepare any video of a run (picklable, sent once per worker)."""

    def prepare(self, path: Path, index: int) -> Iterator[Any]: ...


@dataclass(frozen=True)
class Task:
    index: int  # video index in the store
    path: Path


@dataclass
class Outcome:
    task: Task
    video: Any  # what the recipe yielded (the last item when final); None when it failed
    error: str | None  # one-line reason when the video failed
    final: bool = True  # False: a piece of a video still being decoded


def _worker_main(conn: Connection, recipe: Recipe) -> None:
    """Loop in a worker: prepare each task sent, sending each item as it comes and then the last one as
    final, or a one-line reason. A bad video fails alone; any other exception is a bug in our code and is
    sent back with its traceback. Ctrl-C reaches the whole process group: workers leave it to the parent,
    which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # SIGTERM to the process group (Slurm) likewise: the parent
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stops its workers itself
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked since `_start`
    conn.send(_READY)
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            items = recipe.prepare(task.path, task.index)
            item = next(items)
            for following in items:
                conn.send((task.index, item, None, False))
                item = following
            conn.send((task.index, item, None, True))
        except VIDEO_FAILURES as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            conn.send((task.index, None, reason, True))
        except Exception:
            conn.send((_BUG, task.index, traceback.format_exc()))


class _Worker:
    def __init__(self, context: mp.context.BaseContext, recipe: Recipe) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, recipe), daemon=True)
        _start(self.process)
        child.close()
        self.task: Task | None = None
        self.deadline = 0.0
        self.ready = False

    def assign(self, task: Task, timeout: float) -> None:
        self.task, self.deadline = task, time.monotonic() + timeout
        self.conn.send(task)

    def stop(self, kill: bool = False) -> None:
        if kill or self.task is not None:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


def _start(process: mp.Process) -> None:
    """Start a worker with SIGINT and SIGTERM blocked: the spawned interpreter inherits the mask, so a Ctrl-C
    (or a scheduler's SIGTERM to the process group) while it imports stays pending until `_worker_main`
    ignores it, instead of a traceback."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _crash_reason(worker: _Worker) -> str:
    worker.process.join(timeout=1)
    return f"decoder process died (exit code {worker.process.exitcode})"


class DecodePool:
    """Prepare videos in `workers` spawned processes, yielding outcomes as they finish (any order)."""

    def __init__(self, recipe: Recipe, workers: int, timeout: float, prefetch: int) -> None:
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        self.recipe, self.timeout, self.prefetch = recipe, timeout, max(prefetch, 1)
        self._timeout_reason = f"timed out after {timeout:g}s"
        self._context = mp.get_context("spawn")  # never fork a process that holds zarr/torch state
        self._workers = [_Worker(self._context, recipe) for _ in range(workers)]
        self._results: queue.Queue[Outcome | BaseException | None] = queue.Queue()
        self._stop = threading.Event()

    def run(self, tasks: Iterable[Task]) -> Iterator[Outcome]:
        feeder = threading.Thread(target=self._feed, args=(iter(tasks),), daemon=True)
        feeder.start()
        try:
            while True:
                item = self._results.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()
            feeder.join()
            for worker in self._workers:
                worker.stop()

    def _feed(self, tasks: Iterator[Task]) -> None:
        try:
            self._feed_loop(tasks)
            self._results.put(None)
        except BaseException as exc:  # surface feeder bugs in the caller's thread
            self._results.put(exc)

    def _feed_loop(self, tasks: Iterator[Task]) -> None:
        exhausted = False
        while not self._stop.is_set():
            if not exhausted:
                exhausted = self._assign_idle(tasks)
            busy = [w for w in self._workers if w.task is not None]
            if exhausted and not busy:
                return
            if self._results.qsize() >= self.prefetch:  # the caller is behind: leave the workers' pipes full
                time.sleep(_FULL_POLL_SECONDS)
                for worker in busy:
                    worker.deadline = max(worker.deadline, time.monotonic() + self.timeout)
                continue
            ready = wait([w.conn for w in busy], timeout=_POLL_SECONDS) if busy else []
            for worker in busy:
                if worker.conn in ready:
                    self._receive(worker)
                elif not worker.process.is_alive():
                    self._replace(worker, _crash_reason(worker))
                elif time.monotonic() > worker.deadline:
                    self._replace(worker, self._timeout_reason)

    def _assign_idle(self, tasks: Iterator[Task]) -> bool:
        """Give every idle worker a task while finished results stay under `prefetch`; True when done."""
        for worker in self._workers:
            if worker.task is None and self._results.qsize() < self.prefetch:
                task = next(tasks, None)
                if task is None:
                    return True
                worker.assign(task, self.timeout)
        return False

    def _receive(self, worker: _Worker) -> None:
        task = worker.task
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._replace(worker, _crash_reason(worker))
            return
        if message == _READY:
            worker.ready = True
            return
        if message[0] == _BUG:
            raise WorkerBugError(f"decode worker failed on {task.path}:\n{message[2]}")
        _, video, error, final = message
        if final:
            worker.task = None
        else:
            worker.deadline = time.monotonic() + self.timeout  # a long video is alive while pieces come
        self._results.put(Outcome(task, video, error, final))

    def _replace(self, worker: _Worker, reason: str) -> None:
        if not worker.ready and reason != self._timeout_reason:
            raise WorkerStartError(f"a decode worker died while starting ({reason}); "
                                   "try `python -c 'import clipcache.pipeline.extract.prepare'` to see why")
        task = worker.task
        worker.stop(kill=True)
        self._workers[self._workers.index(worker)] = _Worker(self._context, self.recipe)
        self._results.put(Outcome(task, None, reason))
