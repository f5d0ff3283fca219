"""Every command's exit status for a signal: SIGTERM (what schedulers send) is 143 in every command, not only
in the two that say what they kept; Ctrl-C is 130. Real signals to a real process, blocked reading a FIFO."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

HANG_BOUND_S = 120  # only a hang takes this long


def _blocked_reader(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """`clipcache results` started on a folder whose result.json is a FIFO, once it is blocked reading it
    (the FIFO's writer end open, holding no data)."""
    (tmp_path / "runs").mkdir()
    fifo = tmp_path / "runs" / "result.json"
    os.mkfifo(fifo)
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "results", str(tmp_path / "runs")], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_BOUND_S
    while True:  # a writer's non-blocking open succeeds once a reader has the FIFO open
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as error:
            assert error.errno == errno.ENXIO and time.monotonic() < deadline and process.poll() is None, error
            time.sleep(0.05)
    _wait_until_in_read(process.pid, deadline)
    return process, writer


def _wait_until_in_read(pid: int, deadline: float) -> None:
    """Until the process sleeps in its read of the pipe. A signal that arrives after Python last looked for one
    and before the read began interrupts nothing, and the read then waits for ever (CPython runs handlers between
    bytecodes): a CI run hung that way once when the signal came right after the FIFO's open."""
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            where = Path(f"/proc/{pid}/wchan").read_text()
        except (OSError, IndexError):
            break  # no /proc here: the short wait below has to do
        if "pipe" in where:  # anon_pipe_read, pipe_read or pipe_wait, as kernels name it
            return
        if state == "S" and where in ("", "0"):
            break  # asleep, and this kernel does not say where
        time.sleep(0.05)
    time.sleep(1)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_any_command_with_its_exit_code(tmp_path: Path, signum: int, code: int) -> None:
    process, writer = _blocked_reader(tmp_path)
    try:
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=HANG_BOUND_S)
    finally:
        os.close(writer)
    assert process.returncode == code and "Traceback" not in stderr, stderr
