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
            return process, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            assert error.errno == errno.ENXIO and time.monotonic() < deadline and process.poll() is None, error
            time.sleep(0.05)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_any_command_with_its_exit_code(tmp_path: Path, signum: int, code: int) -> None:
    process, writer = _blocked_reader(tmp_path)
    try:
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=HANG_BOUND_S)
    finally:
        os.close(writer)
    assert process.returncode == code and "Traceback" not in stderr, stderr
