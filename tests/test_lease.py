"""The object-storage lock (cache/lease.py) against a real local S3 server, with real holder processes."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import obstore
import pytest
from obstore.exceptions import PermissionDeniedError

from clipcache import InputError
from clipcache.cache.lease import LeaseLostError, ObjectLock, lock_prefix
from clipcache.cache.lock import Holder, StoreLock, StoreLockedError, lock_folder
from s3_server import BUCKET, S3Server

# A holder as another clipcache run would be: its own process, reaching the server through the environment.
HOLD = """
import sys, time
from obstore.store import S3Store
from clipcache.cache.lease import ObjectLock
from clipcache.cache.lock import Holder
bucket, prefix, job, shard, ttl, stuck = sys.argv[1:]
lock = ObjectLock(S3Store(bucket), prefix, f"s3://{bucket}/{prefix}", ttl=float(ttl))
setup = (lambda: print("setting up", flush=True) or time.sleep(600)) if stuck == "stuck" else (lambda: None)
lock.acquire(Holder.this_process(job, tuple(map(int, shard.split("/"))) if shard != "-" else None), setup)
print("held", flush=True)
for _ in range(600):
    if lock.lost:
        try:
            lock.check()
        except Exception as error:
            print(type(error).__name__, error, flush=True)
        break
    time.sleep(0.05)
else:
    print("never lost", flush=True)
lock.release()
"""


def _hold(server: S3Server, prefix: str, job: str = "a run", shard: str = "-", ttl: float = 60.0,
          stuck_in_setup: bool = False) -> subprocess.Popen:
    env = {**os.environ, **server.env()}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, BUCKET, prefix, job, shard, str(ttl),
                               "stuck" if stuck_in_setup else "-"], env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == ("setting up\n" if stuck_in_setup else "held\n")
    return holder


def _stop(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.wait()


def _lock(server: S3Server, prefix: str, **kwargs: float) -> ObjectLock:
    return ObjectLock(server.store(), prefix, server.url(prefix), **kwargs)


def _lock_keys(server: S3Server, prefix: str) -> list[str]:
    return sorted(entry["path"] for entry in obstore.list(server.store(), prefix=lock_prefix(prefix)).collect())


@pytest.fixture
def store_key(s3_server: S3Server) -> str:
    return f"{s3_server.prefix()}/features.zarr"


def test_a_second_acquire_is_refused_naming_the_holder(s3_server: S3Server, store_key: str) -> None:
    holder = _hold(s3_server, store_key)
    try:
        with pytest.raises(StoreLockedError) as refused:
            _lock(s3_server, store_key).acquire(Holder.this_process("a run"))
        message = str(refused.value)
        assert message.startswith(f"s3://{BUCKET}/{store_key}: in use by another clipcache run (pid {holder.pid} "
                                   f"on {socket.gethostname()}, started "), message
        assert f"its lock is s3://{BUCKET}/{store_key.rsplit('/', 1)[0]}/.features.zarr.lock/" in message
        assert "\n" not in message
        assert len(_lock_keys(s3_server, store_key)) == 1  # the refused run registered nothing, left no guard
    finally:
        _stop(holder)


def test_shards_of_one_job_array_share_the_lock(s3_server: S3Server, store_key: str) -> None:
    first = _hold(s3_server, store_key, "job", "0/2")
    try:
        with _lock(s3_server, store_key) as second:
            assert second.acquire(Holder.this_process("job", (1, 2))) == []
            for job, shard in (("job", (1, 2)), ("other settings", (1, 2)), ("job", None)):
                with pytest.raises(StoreLockedError, match="in use by another clipcache run"):
                    _lock(s3_server, store_key).acquire(Holder.this_process(job, shard))
            assert len(_lock_keys(s3_server, store_key)) == 2
    finally:
        _stop(first)


def test_no_run_registers_while_another_sets_up_the_store(s3_server: S3Server, store_key: str) -> None:
    """The guard is renewed while setup lasts, so a waiting run gives up rather than take it over; once that
    run is killed its guard and holder object are taken over."""
    holder = _hold(s3_server, store_key, ttl=1.0, stuck_in_setup=True)
    try:
        with pytest.raises(StoreLockedError, match="another run has been setting up the store for over 3s"):
            _lock(s3_server, store_key, guard_wait=3.0).acquire(Holder.this_process("a run"))
    finally:
        _stop(holder)
    with _lock(s3_server, store_key) as lock:
        assert [s.pid for s in lock.acquire(Holder.this_process("a run"))] == [holder.pid]


def test_a_killed_holder_on_this_host_is_taken_over_at_once(s3_server: S3Server, store_key: str) -> None:
    """Its lease has 60 s to run: only the dead process shows it stale."""
    holder = _hold(s3_server, store_key, ttl=60.0)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with _lock(s3_server, store_key) as lock:
        stale = lock.acquire(Holder.this_process("a run"))
        assert [(s.pid, s.host) for s in stale] == [(holder.pid, socket.gethostname())]
        assert len(_lock_keys(s3_server, store_key)) == 1  # ours alone


def test_a_run_out_lease_of_another_host_is_taken_over(s3_server: S3Server, store_key: str) -> None:
    other = Holder("elsewhere", 4242, "2026-01-01T00:00:00+00:00", "a run")
    body = {"holder": asdict(other), "machine": "elsewhere:boot:ns", "ttl": 0.5, "renewal": 0}
    key = f"{lock_prefix(store_key)}holders/elsewhere-4242-0000.json"
    obstore.put(s3_server.store(), key, json.dumps(body).encode())
    with pytest.raises(StoreLockedError, match="pid 4242 on elsewhere"):
        _lock(s3_server, store_key).acquire(Holder.this_process("a run"))  # its lease still runs
    time.sleep(3)  # 0.5 s of lease and 1 s for Last-Modified's whole seconds, by the server's clock
    with _lock(s3_server, store_key) as lock:
        assert lock.acquire(Holder.this_process("a run")) == [other]


def test_renewals_keep_a_lease_alive_past_its_ttl(s3_server: S3Server, store_key: str) -> None:
    store = s3_server.store()
    with _lock(s3_server, store_key, ttl=1.0) as lock:
        lock.acquire(Holder.this_process("a run"))
        (key,) = _lock_keys(s3_server, store_key)
        time.sleep(3.5)
        obstore.put(store, f"{store_key}.clock", b"")  # the server's time now
        now = obstore.head(store, f"{store_key}.clock")["last_modified"]
        found = obstore.get(store, key)
        assert json.loads(bytes(found.bytes()))["renewal"] >= 3
        assert (now - found.meta["last_modified"]).total_seconds() <= 2  # ttl + Last-Modified's rounding
        assert not lock.lost
        lock.check()


def test_a_paused_holder_loses_its_lease_and_learns_it(s3_server: S3Server, store_key: str) -> None:
    """A stopped process (as a machine cut off would) renews nothing: its lease runs out though it lives, the
    next run takes over, and the holder finds out when it runs again."""
    holder = _hold(s3_server, store_key, ttl=1.0)
    try:
        holder.send_signal(signal.SIGSTOP)
        time.sleep(3)
        with _lock(s3_server, store_key) as lock:
            assert [s.pid for s in lock.acquire(Holder.this_process("a run"))] == [holder.pid]
            holder.send_signal(signal.SIGCONT)
            line = holder.stdout.readline()
            assert line.startswith(f"LeaseLostError s3://{BUCKET}/{store_key}: this run lost its lock "), line
            assert holder.wait() == 0
            assert len(_lock_keys(s3_server, store_key)) == 1  # the loser's release left ours alone
            lock.check()
    finally:
        _stop(holder)


def test_a_holder_whose_object_was_taken_learns_it(s3_server: S3Server, store_key: str) -> None:
    with _lock(s3_server, store_key, ttl=1.0) as lock:
        lock.acquire(Holder.this_process("a run"))
        (key,) = _lock_keys(s3_server, store_key)
        obstore.delete(s3_server.store(), key)  # what a run that judged it dead does
        for _ in range(100):
            if lock.lost:
                break
            time.sleep(0.05)
        with pytest.raises(LeaseLostError, match="another run took it over"):
            lock.check()


def test_release_removes_the_holder_object(s3_server: S3Server, store_key: str) -> None:
    lock = _lock(s3_server, store_key)
    lock.acquire(Holder.this_process("a run"))
    assert [k.rsplit("/", 2)[1] for k in _lock_keys(s3_server, store_key)] == ["holders"]  # the guard is gone
    lock.release()
    assert _lock_keys(s3_server, store_key) == []
    with _lock(s3_server, store_key) as again:
        assert again.acquire(Holder.this_process("another run")) == []


def test_read_only_credentials_may_read_but_not_write(s3_server: S3Server, store_key: str) -> None:
    obstore.put(s3_server.store(), f"{store_key}/zarr.json", b"{}")
    reader = s3_server.store(credentials=s3_server.read_only_credentials())
    assert bytes(obstore.get(reader, f"{store_key}/zarr.json").bytes()) == b"{}"
    with pytest.raises(PermissionDeniedError):
        obstore.put(reader, f"{store_key}/other.json", b"{}")
    with pytest.raises(InputError, match=f"s3://{BUCKET}/{store_key}: cannot write its lock .*permission denied"):
        ObjectLock(reader, store_key, s3_server.url(store_key)).acquire(Holder.this_process("a run"))


def test_a_live_holder_that_cannot_be_read_refuses_as_any_holder_does(s3_server: S3Server, store_key: str,
                                                                     tmp_path: Path) -> None:
    """Both kinds of lock, one rule: a live holder whose record is garbage is taken for one that does not share."""
    key = f"{lock_prefix(store_key)}holders/garbled.json"
    obstore.put(s3_server.store(), key, b"not a holder")  # just written: its lease runs
    with pytest.raises(StoreLockedError, match=f"in use by another clipcache run \\(an unreadable holder object {key}"):
        _lock(s3_server, store_key).acquire(Holder.this_process("a run"))
    store = tmp_path / "features.zarr"
    folder = lock_folder(store)
    folder.mkdir()
    garbled = folder / "garbled.json"
    garbled.write_text("not a holder")
    with garbled.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # its process lives: the holder's flock is held
        with pytest.raises(StoreLockedError, match="an unreadable holder file .*garbled.json"):
            StoreLock(store).acquire(Holder.this_process("a run"))
