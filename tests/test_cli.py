"""The command line is derived from the config dataclasses: same options, same defaults, same help."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import typer

from clipcache import __version__
from clipcache.cli import InfoConfig, ResultsConfig, VerifyConfig, app
from clipcache.pipeline.copy.config import CopyConfig
from clipcache.pipeline.demo.config import DemoConfig
from clipcache.pipeline.evaluate.config import EvalConfig
from clipcache.pipeline.export.config import ExportConfig
from clipcache.pipeline.extract.config import ExtractConfig
from clipcache.pipeline.options import cli_of
from clipcache.pipeline.predict.config import PredictConfig
from clipcache.pipeline.search.config import SearchConfig
from clipcache.pipeline.train.config import TrainConfig
from conftest import run_cli

COMMANDS = {"extract": ExtractConfig, "info": InfoConfig, "verify": VerifyConfig, "train-head": TrainConfig,
            "eval": EvalConfig, "demo": DemoConfig, "results": ResultsConfig, "predict": PredictConfig,
            "copy": CopyConfig, "export": ExportConfig, "search": SearchConfig}


@pytest.mark.parametrize("name", COMMANDS)
def test_cli_options_and_defaults_are_the_config_dataclass(name: str) -> None:
    command = typer.main.get_command(app).commands[name]
    params = {p.name: p for p in command.params}
    exposed = {f.name: f for f in dataclasses.fields(COMMANDS[name]) if cli_of(f) is not None}
    assert set(params) == set(exposed)
    for field_name, f in exposed.items():
        param, cli = params[field_name], cli_of(f)
        assert param.help == cli.help
        if f.default is not dataclasses.MISSING:
            assert param.default == f.default, field_name
        elif f.default_factory is not dataclasses.MISSING:
            assert not param.required and not param.default, field_name
        else:
            assert param.required, field_name


def test_help_version_and_choices() -> None:
    for flag in ("-h", "--help"):
        result = run_cli("train-head", flag)
        assert result.code == 0 and "--head" in result.stdout and "Example:" in result.stdout
        joined = "".join(result.stdout.replace("│", "").split())  # rich wraps the choices over lines
        assert "<attnpool|evl|linear|prompt|proposals|text>" in joined
    version = run_cli("--version")
    assert version.code == 0 and version.stdout.strip() == f"clipcache {__version__}"


def test_usage_lines_name_the_arguments_plainly() -> None:
    for name, usage in (("extract", "extract [OPTIONS] VIDEOS STORE"), ("eval", "eval [OPTIONS] STORE")):
        first = run_cli(name, "--help").stdout.splitlines()[0]
        assert first.endswith(usage) and "{" not in first, first


def test_eval_captions_help_is_its_own() -> None:
    commands = typer.main.get_command(app).commands
    helps = {name: next(p.help for p in commands[name].params if p.name == "captions") for name in ("eval",
                                                                                                     "train-head")}
    assert helps["eval"] != helps["train-head"] and "--zero-shot" in helps["eval"]


def test_help_and_version_do_not_import_torch() -> None:
    """What makes them slow (torch and open_clip take seconds to import) stays out until a command runs."""
    probe = ("import sys; from clipcache.cli import app; from typer.testing import CliRunner; "
             "[CliRunner().invoke(app, args) for args in (['--version'], ['--help'], ['train-head', '--help'])]; "
             "print(sorted(m for m in ('torch', 'open_clip', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done


def _refused_in_a_fresh_process(*args: str) -> tuple[int, str, list[str]]:
    """(exit code, stderr, the heavy modules imported) of a command run in a process that imported nothing yet."""
    probe = ("import json, sys; from clipcache.cli import app; from typer.testing import CliRunner; "
             f"r = CliRunner().invoke(app, {list(args)!r}); "
             "print(r.exit_code); print(json.dumps([m for m in ('torch', 'open_clip') if m in sys.modules])); "
             "print(r.stderr.strip())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done
    code, modules, stderr = done.stdout.split("\n", 2)
    return int(code), stderr, json.loads(modules)


def test_a_bad_threads_value_is_refused_before_torch_is_imported(tmp_path) -> None:
    code, stderr, heavy = _refused_in_a_fresh_process("train-head", str(tmp_path / "s.zarr"), "--head", "linear",
                                                      "--out", str(tmp_path / "run"), "--threads", "0")
    assert code == 2 and "--threads must be at least 1, got 0" in stderr and heavy == [], (code, stderr, heavy)


def test_extract_frames_0_is_refused_before_torch_is_imported(tmp_path) -> None:
    code, stderr, heavy = _refused_in_a_fresh_process("extract", str(tmp_path), str(tmp_path / "s.zarr"),
                                                      "--frames", "0")
    assert code == 2 and "--frames must be at least 1, got 0" in stderr and heavy == [], (code, stderr, heavy)


def test_layers_beyond_the_demo_models_blocks_is_refused_as_the_readme_says(demo_videos, tmp_path) -> None:
    """The README's EVL advice (`--layers -5:`) does not fit the 4-block demo model: refused in one line, nothing
    written; `-4:` (what the README says to use there) keeps all four blocks."""
    common = ["extract", demo_videos, "--model", "clipcache-demo", "--frames", "2", "--device", "cpu", "--workers",
              "1", "--quiet"]
    refused = run_cli(*common[:2], tmp_path / "five.zarr", *common[2:], "--layers", "-5:")
    assert refused.code == 2 and "-5 is beyond the model's 4 blocks" in refused.stderr, refused
    assert not (tmp_path / "five.zarr").exists()
    made = run_cli(*common[:2], tmp_path / "four.zarr", *common[2:], "--layers", "-4:")
    assert made.code == 0, made
    info = json.loads(run_cli("info", tmp_path / "four.zarr", "--json").stdout)
    assert (info["layers"], info["num_blocks"]) == ([0, 1, 2, 3], 4)
