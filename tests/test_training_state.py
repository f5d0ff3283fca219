"""A run's state survives real faults: a process killed with SIGKILL at a chosen point resumes to the
weights of an uninterrupted run (also with dropout on), any prefix of an epoch's writes resumes, and
a full disk (a small tmpfs filled for real) stops the run with one line and it resumes once space is
freed."""
from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from clipcache.pipeline.train.checkpoint import BEST, LAST, METRICS, RUN_FILE, STATE
from clipcache.pipeline.train.config import TrainConfig
from clipcache.pipeline.train.loop import train_head
from conftest import run_cli
from mounts import fill, mount
from training_runs import SHORT, assert_same_run, command, epochs_written, kill_after, start, when


@pytest.mark.parametrize("head, streamed", [("text", True), ("evl", False)])
def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_weights(appearance_store: Path, tmp_path: Path,
                                                                       head: str, streamed: bool) -> None:
    """SIGKILL once two epochs are finished; `--resume` redoes the rest exactly. EVL keeps its default
    dropout (0.5), so this holds only if torch's random state is part of the saved state."""
    options = dict(preload=False) if streamed else {}
    train_head(TrainConfig(store=appearance_store, head=head, out=tmp_path / "whole", **options, **SHORT))
    cut = tmp_path / "cut"
    kill_after(command(appearance_store, cut, head, *(["--no-preload"] if streamed else [])), cut / METRICS, 2)
    assert 2 <= epochs_written(cut / METRICS) < SHORT["epochs"]
    again = run_cli(*command(appearance_store, cut, head)[2:])  # without --resume: refused, nothing touched
    assert again.code == 2 and "holds a run already; use --resume" in again.stderr
    run = train_head(TrainConfig(store=appearance_store, head=head, out=cut, resume=True, **options, **SHORT))
    assert run["epochs_done"] == SHORT["epochs"]
    assert_same_run(tmp_path / "whole", cut)


def test_any_prefix_of_an_epochs_writes_resumes(appearance_store: Path, tmp_path: Path) -> None:
    """An epoch ends by renaming the new state file into place; everything else is derived from it. Whatever
    a kill leaves (a half-written temporary file, the state without the files derived from it, a torn
    metrics line, or no finished epoch at all), the run resumes or restarts to the uninterrupted result."""
    train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "whole", **SHORT))
    cut = tmp_path / "cut"
    kill_after(command(appearance_store, cut, "linear"), cut / METRICS, 2)

    def resumed(name: str, damage: Callable[[Path], None], resume: bool = True) -> None:
        copy = tmp_path / name
        shutil.copytree(cut, copy)
        damage(copy)
        train_head(TrainConfig(store=appearance_store, head="linear", out=copy, resume=resume, **SHORT))
        assert_same_run(tmp_path / "whole", copy)

    def state_only(run_dir: Path) -> None:  # killed right after the state's rename
        for name in (LAST, BEST, METRICS, RUN_FILE):
            (run_dir / name).unlink()

    def torn(run_dir: Path) -> None:  # killed while writing: a partial temporary file, a torn metrics line
        (run_dir / f".{STATE}.tmp").write_bytes((run_dir / STATE).read_bytes()[:100])
        with (run_dir / METRICS).open("a") as handle:
            handle.write('{"epoch": 3, "lo')

    def first_epoch(run_dir: Path) -> None:  # killed before the first epoch finished
        for name in (STATE, LAST, BEST, METRICS):
            (run_dir / name).unlink()
        (run_dir / f".{LAST}.tmp").write_bytes(b"\0" * 10)

    resumed("state-only", state_only)
    resumed("torn", torn)
    resumed("first-epoch-restart", first_epoch, resume=False)
    resumed("first-epoch-resume", first_epoch)


def _file_size_limit(limit: int) -> Callable[[], None]:
    """For the child only: files may not grow beyond `limit` bytes (and the signal becomes an error)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_the_run_with_one_line_and_it_resumes(appearance_store: Path, tmp_path: Path) -> None:
    """On a 1 MB tmpfs filled once the first epoch is saved. Where mounting is not permitted, a file size
    limit on the child process (RLIMIT_FSIZE) refuses the state file instead."""
    train_head(TrainConfig(store=appearance_store, head="linear", out=tmp_path / "whole", **SHORT))
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", disk)
    out = disk / "run"
    try:
        if mounted:
            process = start(command(appearance_store, out, "linear"))
            when(process, out / METRICS, 1)
            fill(disk / "filler")
            _, stderr = process.communicate(timeout=120)
            expected = f"no space left on {out}"
        else:
            process = start(command(appearance_store, out, "linear"), preexec=_file_size_limit(4096))
            _, stderr = process.communicate(timeout=120)
            expected = f"file size limit reached writing {out}"
        assert process.returncode == 1, stderr
        assert stderr.startswith("clipcache: error: ") and stderr.count("\n") == 1 and expected in stderr, stderr
        assert "--resume" in stderr and not list(out.glob(".*.tmp"))  # the partial file is gone
        (disk / "filler").unlink(missing_ok=True)
        train_head(TrainConfig(store=appearance_store, head="linear", out=out, resume=True, **SHORT))
        assert_same_run(tmp_path / "whole", out)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def test_damaged_checkpoints_and_bad_run_directories_are_one_line(appearance_store: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    train_head(TrainConfig(store=appearance_store, head="linear", out=run_dir, **{**SHORT, "epochs": 1}))
    best = run_dir / BEST
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    result = run_cli("eval", appearance_store, "--checkpoint", run_dir, "--device", "cpu", "--quiet")
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert f"{best}: not a readable checkpoint" in result.stderr
    (run_dir / STATE).write_bytes((run_dir / STATE).read_bytes()[:200])
    resumed = run_cli("train-head", appearance_store, "--head", "linear", "--out", run_dir, "--resume", "--quiet",
                      "--device", "cpu")
    assert resumed.code == 2 and f"{run_dir / STATE}: damaged" in resumed.stderr and resumed.stderr.count("\n") == 1
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    refused = run_cli("train-head", appearance_store, "--head", "linear", "--out", a_file, "--device", "cpu")
    assert refused.code == 2 and f"--out {a_file}: is a file" in refused.stderr and a_file.read_text() == "mine"


def test_an_unfinished_run_says_so_when_evaluated_and_resumed(appearance_store: Path, tmp_path: Path) -> None:
    """A run killed after 2 of 6 epochs: its evaluation prints and records that it is unfinished; --resume says
    from which epoch it continues; the finished run's evaluation no longer carries the note."""
    cut = tmp_path / "cut"
    kill_after(command(appearance_store, cut, "linear"), cut / METRICS, 2)
    done = json.loads((cut / RUN_FILE).read_text())["epochs_done"]  # what the evaluated files are from
    assert 1 <= done < SHORT["epochs"]
    evaluated = run_cli("eval", appearance_store, "--checkpoint", cut, "--device", "cpu", "--quiet")
    assert evaluated.code == 0, evaluated
    assert f"[unfinished run: {done} of {SHORT['epochs']} epochs]" in evaluated.stdout, evaluated
    record = json.loads(run_cli("eval", appearance_store, "--checkpoint", cut, "--device", "cpu", "--quiet",
                                "--json").stdout)
    assert record["training"] == {"complete": False, "epochs_done": done, "epochs_planned": SHORT["epochs"]}
    resumed = run_cli(*command(appearance_store, cut, "linear")[2:-1], "--resume")  # not --quiet
    assert resumed.code == 0, resumed
    after = re.search(rf"{re.escape(str(cut))}: resumed after epoch ([0-9]+) of {SHORT['epochs']}\n", resumed.stderr)
    assert after is not None and done <= int(after[1]) < SHORT["epochs"], resumed
    finished = run_cli("eval", appearance_store, "--checkpoint", cut, "--device", "cpu", "--quiet", "--json")
    assert json.loads(finished.stdout)["training"]["complete"] is True
    assert "[unfinished run" not in run_cli("eval", appearance_store, "--checkpoint", cut, "--device", "cpu",
                                       "--quiet").stdout
