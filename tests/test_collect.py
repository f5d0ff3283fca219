"""`clipcache results` puts many result.json files in one table."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from conftest import run_cli


def test_results_of_several_evaluations_in_one_table(appearance_store: Path, tmp_path: Path) -> None:
    evals = tmp_path / "eval"
    for extra in (["--zero-shot", "--device", "cpu"], ["--probe", "linear", "--shots", "2", "--seeds", "2"]):
        done = run_cli("eval", appearance_store, *extra, "--out", evals, "--quiet")
        assert done.code == 0, done
    records = {json.loads(p.read_text())["method"]: (p, json.loads(p.read_text()))
               for p in sorted(evals.rglob("result.json"))}
    as_csv = run_cli("results", evals, "--format", "csv")
    assert as_csv.code == 0, as_csv
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [row["method"] for row in rows] == ["linear probe", "zero-shot"]  # in path order
    for row in rows:
        path, record = records[row["method"]]
        assert row["folder"] == str(path.parent) and row["split"] == record["split"]
        assert float(row["top1"]) == round(record["top1"], 4)
    assert rows[0]["top1_std"] != "" and rows[1]["top1_std"] == ""  # a protocol's std beside its mean
    one = run_cli("results", records["zero-shot"][0])  # a file names itself
    lines = one.stdout.splitlines()
    assert one.code == 0 and len(lines) == 3 and lines[0].startswith("| dataset | split | method |"), one


def test_a_file_that_is_not_a_result_is_named(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text("[1, 2]")
    refused = run_cli("results", tmp_path)
    assert refused.code == 2 and f"{tmp_path / 'result.json'}: not a clipcache result" in refused.stderr, refused
    missing = run_cli("results", tmp_path / "nothing-here")
    assert missing.code == 2 and f"{tmp_path / 'nothing-here'}: no such file or folder" in missing.stderr, missing
    (tmp_path / "empty").mkdir()
    assert f"no result.json under {tmp_path / 'empty'}" in run_cli("results", tmp_path / "empty").stderr
