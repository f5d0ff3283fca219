"""One writer per store: a run holds a lock on its store from before the store is created or replaced
until it ends.

The lock is a folder beside the store (`.STORE.lock/`, so it survives `--overwrite` and exists before
the store does) holding one file per holder. Each holder keeps its file locked with `flock` for its
whole life: the kernel (or the NFS server) drops that lock when the process dies however it dies, so
a holder file that can be locked by someone else belongs to a dead process and is removed as stale.
The file's text names the holder (host, pid, start time), which is what a refused run prints.
Checking the holders, registering and the caller's setup (creating or replacing the store) happen
under a short exclusive `flock` on the folder itself, so two runs never both pass the check.

Holders share the lock only when they are `--shard i/n` jobs of one job array: the same n, the same
settings and mode, different i. A torchrun's rank 0 holds it for all its ranks.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from clipcache import InputError
from clipcache.cache.location import Store, StoreUrl

if TYPE_CHECKING:
    from clipcache.cache.lease import ObjectLock

GUARD_SECONDS = 60.0  # how long setting up a store (creating, replacing) may keep others waiting


class StoreLockedError(InputError):
    """Another live run writes this store."""


def refuse_unshared(store: object, me: Holder, other: Holder | None, unreadable: str, lock: object) -> None:
    """Refuse `me` where a live holder of the store's lock (`other`; None: one that cannot be read, which
    `unreadable` names) does not share the store with it: one rule and one line for both kinds of lock."""
    if other is None or not me.shares_with(other):
        who = other.describe() if other is not None else f"an unreadable holder {unreadable}"
        raise StoreLockedError(f"{store}: in use by another clipcache run ({who}); wait for it to finish or stop "
                               f"it (its lock is {lock})")


def busy_setting_up(store: object, seconds: float, lock: object) -> StoreLockedError:
    return StoreLockedError(f"{store}: another run has been setting up the store for over {seconds:g}s (its lock "
                            f"{lock} is busy); try again later")


@dataclass(frozen=True)
class Holder:
    """Who holds a store's lock, and for what: `job` names the settings and mode of the run."""

    host: str
    pid: int
    started: str
    job: str
    shard: tuple[int, int] | None = None  # (i, n) of `--shard i/n`
    ranks: int = 1  # torchrun ranks this holder speaks for

    @classmethod
    def this_process(cls, job: str, shard: tuple[int, int] | None = None, ranks: int = 1) -> "Holder":
        started = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), started, job, shard, ranks)

    def describe(self) -> str:
        what = f", shard {self.shard[0]}/{self.shard[1]}" if self.shard else \
            f", torchrun with {self.ranks} ranks" if self.ranks > 1 else ""
        return f"pid {self.pid} on {self.host}, started {self.started}{what}"

    def shares_with(self, other: "Holder") -> bool:
        """Only different shards of one job array write a store together."""
        return (self.shard is not None and other.shard is not None and self.job == other.job
                and self.shard[1] == other.shard[1] and self.shard[0] != other.shard[0])

    @classmethod
    def from_json(cls, text: str) -> "Holder":
        data = json.loads(text)
        shard = tuple(data["shard"]) if data.get("shard") else None
        return cls(data["host"], int(data["pid"]), data["started"], data["job"], shard, int(data.get("ranks", 1)))


def _flock_within(fd: int, seconds: float) -> bool:
    """Take an exclusive flock on `fd`, waiting at most `seconds` (a stopped holder must not hang us)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def store_lock(store: Store) -> StoreLock | ObjectLock:
    """The lock of a store: a folder's (flock, beside it), or one in object storage (leases, beside it)."""
    if isinstance(store, StoreUrl):
        from clipcache.cache.lease import ObjectLock

        return ObjectLock(store.parent.objects(), store.name, str(store))
    return StoreLock(store)


def lock_folder(store: Path) -> Path:
    return store.parent / f".{store.name}.lock"


class StoreLock:
    """The lock of one store, held by this process from `acquire` to `release`."""

    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self.folder = lock_folder(self.store)
        self._file: Path | None = None
        self._fd: int | None = None

    def acquire(self, me: Holder, setup: Callable[[], None] = lambda: None) -> list[Holder]:
        """Register `me`, then run `setup` while no other run can register; returns the stale holders
        (dead processes) whose files were removed. Raises StoreLockedError naming a live holder."""
        with self._guard():
            stale = []
            for file in sorted(self.folder.glob("*.json")):
                other, alive = self._inspect(file)
                if not alive:
                    if other is not None:
                        stale.append(other)
                    continue
                refuse_unshared(self.store, me, other, f"file {file}", self.folder)
            self._register(me)
            try:
                setup()
            except BaseException:
                self._leave()
                raise
        return stale

    def check(self) -> None:
        """Nothing to check: the kernel holds a flock for as long as this process lives (the lease of
        `cache.lease.ObjectLock` can run out, so its `check` may raise)."""

    def release(self) -> None:
        if self._fd is None:
            return
        with self._guard():
            self._leave()

    def _leave(self) -> None:
        """Unregister; the last holder leaves no folder behind (call under the guard)."""
        self._unregister()
        try:
            self.folder.rmdir()
        except OSError:
            pass  # other holders are still registered

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """An exclusive flock on the lock folder itself, for checking and registering holders."""
        while True:
            try:
                self.folder.mkdir(exist_ok=True)
            except OSError as error:
                raise InputError(f"{self.store}: cannot create its lock {self.folder} "
                                 f"({error.strerror or error})") from None
            try:
                fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # removed by a releasing holder between mkdir and open
            if not _flock_within(fd, GUARD_SECONDS):
                os.close(fd)
                raise busy_setting_up(self.store, GUARD_SECONDS, self.folder)
            if os.fstat(fd).st_nlink > 0:  # not removed by the holder that released the guard to us
                break
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)

    def _inspect(self, file: Path) -> tuple[Holder | None, bool]:
        """(the holder a file names, whether its process lives); a dead holder's file is removed."""
        try:
            fd = os.open(file, os.O_RDWR)
        except FileNotFoundError:
            return None, False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alive = False
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                alive = True
            try:
                holder = Holder.from_json(os.pread(fd, 1 << 16, 0).decode())
            except (ValueError, KeyError, TypeError):
                holder = None
            if not alive:
                file.unlink()
            return holder, alive
        finally:
            os.close(fd)

    def _register(self, me: Holder) -> None:
        file = self.folder / f"{me.host}-{me.pid}-{uuid.uuid4().hex[:8]}.json"
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps(asdict(me)).encode())
        self._file, self._fd = file, fd

    def _unregister(self) -> None:
        if self._fd is None:
            return
        self._file.unlink(missing_ok=True)
        os.close(self._fd)
        self._file, self._fd = None, None
