"""One writer per store in object storage: StoreLock's rule (cache/lock.py) where there is no flock.

The lock is a set of objects beside the store (the store at `a/b/store.zarr` -> `a/b/.store.zarr.lock/`), so it
exists before the store does and survives `--overwrite`:
- `holders/<host>-<pid>-<random>.json`, one per holder: the Holder, the machine it runs on and its lease time
  (`ttl`). A thread rewrites it every ttl/3, each time conditional on the version (etag) it wrote last, so a
  holder whose object was removed or replaced learns it at its next renewal.
- `guard.json`: taken with a put-if-absent for checking the holders, registering and the caller's setup, so two
  runs never both pass the check; renewed the same way while setup lasts, deleted afterwards.

A holder is dead when its lease ran out by the server's clock: its object's Last-Modified is more than ttl
(plus the one-second resolution of Last-Modified) older than the guard just written, two times stamped by the
same server, so no client clock takes part. A holder on this machine (same host name, boot and pid namespace)
is dead at once when its process is gone, so a killed CLI run is taken over by the next one without waiting.
A guard waited on is taken over (conditional on the version seen) when its process here is gone, or when it
stayed unchanged for its ttl by the waiter's own monotonic clock.

A holder trusts its lease only for ttl after sending the last renewal that succeeded (the server stamped that
renewal later still, so the holder gives up before anyone may judge it dead); past that, or once a renewal is
refused, the lease is lost: `lost` turns true and `check()` raises LeaseLostError, which a writer calls before
publishing each piece of work. What this cannot close: a renewal sent in time that reaches the server after the
lease ran out, between another run's check and its removal of the object (a network delay of most of the ttl);
the loser then learns it at its next renewal, ttl/3 later.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

from clipcache import InputError
from clipcache.cache.lock import GUARD_SECONDS, Holder, StoreLockedError, busy_setting_up, refuse_unshared

LEASE_SECONDS = 60.0  # how long a holder that stopped renewing (a machine gone) keeps others out
CLOCK_STEP = 1.0  # Last-Modified has whole seconds
POLL_SECONDS = 0.2  # how often a run waiting for the guard looks again
GONE = (NotFoundError, FileNotFoundError)


class LeaseLostError(StoreLockedError):
    """This run can no longer show that it holds the store's lock: it must stop writing."""


def lock_prefix(prefix: str) -> str:
    """Where the lock of the store at `prefix` lives: a hidden sibling, as StoreLock's folder is."""
    parent, _, name = prefix.rstrip("/").rpartition("/")
    if not name:
        raise ValueError("a store in object storage needs a name (a key prefix), not the bucket's root")
    return f"{parent}/.{name}.lock/" if parent else f".{name}.lock/"


def this_machine() -> str:
    """Equal for two processes exactly when their pids name the same processes: host name, boot, pid namespace."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass  # no /proc: the host name is all there is
    return ":".join(parts)


def process_lives(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"  # a killed process its parent has not reaped yet


def _read(text: bytes) -> tuple[Holder | None, str, float | None]:
    """(holder, machine, ttl) of a lease object; None where it cannot be read."""
    try:
        data = json.loads(text)
        return Holder.from_json(json.dumps(data["holder"])), str(data["machine"]), float(data["ttl"])
    except (ValueError, KeyError, TypeError):
        return None, "", None


class _Lease:
    """An object this process keeps alive by rewriting it, each time conditional on its own last version."""

    def __init__(self, store: Any, key: str, me: Holder, ttl: float, etag: str, sent: float) -> None:
        self.store, self.key, self.ttl = store, key, ttl
        self._me, self._etag, self._sent = me, etag, sent
        self._why: str | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._renew, name=f"lease {key}", daemon=True).start()

    @staticmethod
    def payload(me: Holder, ttl: float, renewal: int) -> bytes:
        """The counter makes each renewal new bytes, hence a new etag (S3's is the bytes' MD5)."""
        return json.dumps({"holder": asdict(me), "machine": this_machine(), "ttl": ttl, "renewal": renewal}).encode()

    def lost(self) -> str | None:
        """Why this lease can no longer be trusted, or None while it holds."""
        if self._why is None and time.monotonic() - self._sent > self.ttl:
            self._why = f"not renewed for {self.ttl:g}s"
        return self._why

    def end(self, own_key: bool) -> None:
        """Stop renewing and delete the object; a shared key (the guard) only while this lease holds, since
        once lost it may be another run's now."""
        self._stop.set()
        if own_key or self.lost() is None:
            obstore.delete(self.store, self.key)

    def _renew(self) -> None:
        renewal, wait = 0, self.ttl / 3
        while not self._stop.wait(wait) and self.lost() is None:
            renewal += 1
            sent = time.monotonic()
            try:
                result = obstore.put(self.store, self.key, self.payload(self._me, self.ttl, renewal),
                                     mode={"e_tag": self._etag})
            except (PreconditionError, *GONE):
                self._why = "another run took it over"
                return
            except (BaseError, OSError):  # the network or the service: try again sooner, lost once ttl has passed
                wait = self.ttl / 12
                continue
            if self._stop.is_set():
                return
            self._etag, self._sent, wait = result["e_tag"], sent, self.ttl / 3


class ObjectLock:
    """The lock of one store in object storage, held by this process from `acquire` to `release`.

    `store` is an obstore store, `prefix` the store's key in it, `name` how messages call the store
    (e.g. s3://bucket/a/store.zarr)."""

    def __init__(self, store: Any, prefix: str, name: str, ttl: float = LEASE_SECONDS,
                 guard_wait: float = GUARD_SECONDS) -> None:
        self.store, self.name, self.ttl, self.guard_wait = store, name, ttl, guard_wait
        self.prefix = lock_prefix(prefix)
        self.display = lock_prefix(name)
        self._guard_key = f"{self.prefix}guard.json"
        self._lease: _Lease | None = None

    def acquire(self, me: Holder, setup: Callable[[], None] = lambda: None) -> list[Holder]:
        """Register `me`, then run `setup` while no other run can register; returns the stale holders
        (dead processes, run-out leases) whose objects were removed. Raises StoreLockedError naming a live holder."""
        try:
            guard = self._take_guard(me)
        except (PermissionDeniedError, UnauthenticatedError) as error:
            why = "permission denied" if isinstance(error, PermissionDeniedError) else "not authenticated"
            raise InputError(f"{self.name}: cannot write its lock {self.display} ({why}: these credentials "
                             f"may not write there)") from None
        try:
            stale = self._check(me)
            self._lease = self._create(f"{self.prefix}holders/{me.host}-{me.pid}-{uuid.uuid4().hex[:8]}.json", me)
            try:
                setup()
                if guard.lost() is not None:  # setup outlived the guard: another run may be setting up too
                    raise LeaseLostError(f"{self.name}: lost the guard of its lock {self.display} while setting up "
                                         f"the store ({guard.lost()}); try again")
            except BaseException:
                self.release()
                raise
        finally:
            guard.end(own_key=False)
        return stale

    @property
    def lost(self) -> bool:
        """Whether this run held the lock and can no longer show that it does."""
        return self._lease is not None and self._lease.lost() is not None

    def check(self) -> None:
        """Raise LeaseLostError if the lock was lost: call before publishing anything into the store."""
        why = self._lease.lost() if self._lease is not None else None
        if why is not None:
            raise LeaseLostError(f"{self.name}: this run lost its lock {self.display} ({why}); it stopped writing, "
                                 f"since another run may write the store now")

    def release(self) -> None:
        if self._lease is None:
            return
        self._lease.end(own_key=True)
        self._lease = None

    def __enter__(self) -> "ObjectLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _create(self, key: str, me: Holder) -> _Lease:
        sent = time.monotonic()
        result = obstore.put(self.store, key, _Lease.payload(me, self.ttl, 0), mode="create")
        return _Lease(self.store, key, me, self.ttl, result["e_tag"], sent)

    def _take_guard(self, me: Holder) -> _Lease:
        """The guard: created, or taken over from a dead run; waits for a live run's setup at most guard_wait."""
        began = time.monotonic()
        seen, seen_at, changed = None, began, False
        while True:
            try:
                return self._create(self._guard_key, me)
            except AlreadyExistsError:
                pass
            try:
                found = obstore.get(self.store, self._guard_key)
                other, machine, ttl = _read(bytes(found.bytes()))
            except GONE:
                continue  # released meanwhile
            etag = found.meta["e_tag"]
            if etag != seen:
                changed, seen, seen_at = seen is not None, etag, time.monotonic()
            dead_here = other is not None and machine == this_machine() and not process_lives(other.pid)
            if dead_here or time.monotonic() - seen_at > (ttl or self.ttl) + CLOCK_STEP:
                sent = time.monotonic()
                try:
                    result = obstore.put(self.store, self._guard_key, _Lease.payload(me, self.ttl, 0),
                                         mode={"e_tag": etag})
                    return _Lease(self.store, self._guard_key, me, self.ttl, result["e_tag"], sent)
                except (PreconditionError, *GONE):
                    continue  # another waiter was quicker
            if changed and time.monotonic() - began > self.guard_wait:
                raise busy_setting_up(self.name, self.guard_wait, self.display)
            time.sleep(POLL_SECONDS)

    def _check(self, me: Holder) -> list[Holder]:
        """Remove dead holders (returned) and refuse if a live one does not share with `me` (call under the guard)."""
        now = obstore.head(self.store, self._guard_key)["last_modified"]  # the server's clock, just now
        stale = []
        for entry in obstore.list(self.store, prefix=f"{self.prefix}holders/").collect():
            try:
                found = obstore.get(self.store, entry["path"])
                other, machine, ttl = _read(bytes(found.bytes()))
            except GONE:
                continue  # released meanwhile
            age = (now - found.meta["last_modified"]).total_seconds()
            run_out = age > (ttl if ttl is not None else self.ttl) + CLOCK_STEP
            if run_out or other is not None and machine == this_machine() and not process_lives(other.pid):
                obstore.delete(self.store, entry["path"])
                if other is not None:
                    stale.append(other)
                continue
            refuse_unshared(self.name, me, other, f"object {entry['path']}", self.display)
        return stale
