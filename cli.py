"""clipcache command line: parse into a config object, call one pipeline function, print.

Every command's options are derived from its config dataclass (`pipeline/*/config.py`), where each
option's default and help are declared once.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # `python cli.py` in a checkout: import it as `clipcache`
    import importlib.util
    from pathlib import Path as _Path

    _spec = importlib.util.spec_from_file_location("clipcache", _Path(__file__).with_name("__init__.py"),
                                                   submodule_search_locations=[str(_Path(__file__).parent)])
    sys.modules["clipcache"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["clipcache"])

import dataclasses
import inspect
import json
import signal
from collections.abc import Callable
from dataclasses import MISSING
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar, get_origin, get_type_hints

import typer

from clipcache import InputError, __version__
from clipcache.cache.location import Store
from clipcache.pipeline.copy.config import CopyConfig
from clipcache.pipeline.demo.config import DemoConfig
from clipcache.pipeline.evaluate.config import EvalConfig
from clipcache.pipeline.export.config import ExportConfig
from clipcache.pipeline.extract.config import ExtractConfig
from clipcache.pipeline.options import Cli, JsonOutput, cli_of, option, store_argument
from clipcache.pipeline.predict.config import PredictConfig
from clipcache.pipeline.search.config import SearchConfig
from clipcache.pipeline.train.config import TrainConfig

app = typer.Typer(
    help="Decode each video once, run a frozen CLIP encoder once, train light video heads on the cache.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)
C = TypeVar("C")
T = TypeVar("T")


@dataclasses.dataclass(kw_only=True)
class InfoConfig(JsonOutput):
    store: Store = store_argument("A clipcache Zarr store.")


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, Kubernetes and `kill` send before a kill), raised where Ctrl-C raises
    KeyboardInterrupt, so that both stop a command the same way: what is finished is kept, and the exit code
    says which signal it was (130 for SIGINT, 143 for SIGTERM, as a shell reports them)."""


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not break the cleanup under way
    raise Terminated()


def _stopped(exc: KeyboardInterrupt, line: str) -> typer.Exit:
    """Say what was kept and how to go on (on a line of its own, clear of any progress bar) and give the
    exit code of the signal."""
    from tqdm import tqdm

    tqdm.write(f"clipcache: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}; {line}",
               file=sys.stderr)
    return typer.Exit(143 if isinstance(exc, Terminated) else 130)


def _run(action: Callable[[], T]) -> T:
    """Bad input is one line on stderr and exit code 2; a full disk (or quota, or file size limit) is one
    line and exit code 1: the machine failed, not the input, whether a command said so in its own words (an
    error raised while handling it) or not; so is object storage that cannot be reached (credentials that may
    not do what the command needs: 2); anything else is a bug and keeps its traceback."""
    try:
        return action()
    except InputError as exc:
        typer.echo(f"clipcache: error: {exc}", err=True)
        raise typer.Exit(1 if _out_of_space(exc.__cause__ or exc.__context__) else 2) from None
    except OSError as exc:
        if not _out_of_space(exc):
            raise
        typer.echo(f"clipcache: error: {f'{exc.filename}: ' if exc.filename else ''}{exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        from clipcache.cache.location import storage_refusal

        refusal = storage_refusal(exc)
        if refusal is None:
            raise
        typer.echo(f"clipcache: error: {refusal[0]}", err=True)
        raise typer.Exit(refusal[1]) from None


def _out_of_space(exc: BaseException | None) -> bool:
    from clipcache.cache.writer import SPACE_ERRORS

    return isinstance(exc, OSError) and exc.errno in SPACE_ERRORS


def _parameter(f: dataclasses.Field, cli: Cli, hint: Any) -> inspect.Parameter:
    """The typer parameter of one config field: its default and help come from the field."""
    if cli.argument:
        info = typer.Argument(..., help=cli.help, metavar=f.name.upper(), show_default=False)
    else:
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = [] if get_origin(cli.text) is list else f.default_factory()
        else:
            default = ...  # a required option
        flags = cli.flags or (f"--{f.name.replace('_', '-')}",)
        info = typer.Option(default, *flags, help=cli.help, metavar=cli.metavar)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=cli.text or hint)


class _Command(typer.core.TyperCommand):
    """Usage lines name positional arguments plainly (`clipcache extract [OPTIONS] VIDEOS STORE`), as usage lines
    do, not in typer's braces."""

    def collect_usage_pieces(self, ctx: typer.core._click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument) and param.required:
                pieces.append(param.display_name_raw + ("..." if param.nargs != 1 else ""))
            else:
                pieces += param.get_usage_pieces(ctx)
        return pieces


def command(config: type[C], name: str, epilog: str) -> Callable[[Callable[[C], None]], Callable[[C], None]]:
    """Register `body(cfg)` as command `name`, with one option per command-line field of `config`."""
    hints = get_type_hints(config)
    # the command's own fields: those of the first class that declares any (a command may only mix groups in)
    own = list(next(vars(c)["__annotations__"] for c in config.__mro__ if vars(c).get("__annotations__")))
    exposed = [(f, cli) for f in dataclasses.fields(config) if (cli := cli_of(f)) is not None]
    # positional arguments, then the command's own options, then the shared groups it mixes in
    exposed.sort(key=lambda pair: (not pair[1].argument, pair[0].name not in own,
                                   own.index(pair[0].name) if pair[0].name in own else 0))

    def register(body: Callable[[C], None]) -> Callable[[C], None]:
        def run(**values: Any) -> None:
            def build() -> C:
                for f, cli in exposed:
                    if cli.parse is not None:
                        values[f.name] = cli.parse(values[f.name])
                return config(**values)
            try:
                body(_run(build))
            except Terminated:  # a command that does not say what it kept (extract and train-head do)
                raise typer.Exit(143) from None  # typer would report any KeyboardInterrupt as 130

        parameters = [_parameter(f, cli, hints[f.name]) for f, cli in exposed]
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        run.__doc__, run.__name__ = body.__doc__, body.__name__
        app.command(name, epilog=epilog, cls=_Command)(run)
        return body
    return register


def _version(show: bool) -> None:
    if show:
        typer.echo(f"clipcache {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Decode each video once, run a frozen CLIP encoder once, train light video heads on the cache."""


@command(ExtractConfig, "extract", epilog="Example: clipcache extract videos/ features.zarr --model ViT-B-16 "
                                          "--pretrained openai --frames 8 --layers -4,-3,-2,-1")
def extract(cfg: ExtractConfig) -> None:
    """Decode videos once and cache frozen CLIP tokens + pooled embeddings in a Zarr store.

    Rerunning the same command resumes; under `torchrun --nproc-per-node N` the ranks split the work.
    """
    from clipcache.pipeline.extract.run import dry_run
    from clipcache.pipeline.extract.run import extract as run_extract
    from clipcache.pipeline.extract.summary import format_extract_summary

    if cfg.dry_run:
        typer.echo(_run(lambda: dry_run(cfg)))
        return
    try:
        summary = _run(lambda: run_extract(cfg))
    except KeyboardInterrupt as exc:
        raise _stopped(exc, "finished shard groups are kept, rerun the same command to resume") from None
    typer.echo(format_extract_summary(summary))
    failure = summary.failure(cfg.strict)
    if failure is not None:
        typer.echo(f"clipcache: {failure}", err=True)
        raise typer.Exit(1)


@command(InfoConfig, "info", epilog="Example: clipcache info features.zarr --json")
def info(cfg: InfoConfig) -> None:
    """Counts (done/failed/pending), model, layers, views, bytes on disk and the failures of a store."""
    from clipcache.cache.info import format_info, store_info

    summary = _run(lambda: store_info(cfg.store))
    typer.echo(json.dumps(summary, indent=2) if cfg.as_json else format_info(summary))


@dataclasses.dataclass(kw_only=True)
class VerifyConfig(JsonOutput):
    store: Store = store_argument("A clipcache Zarr store.")


@command(VerifyConfig, "verify", epilog="Example: clipcache verify features.zarr")
def verify(cfg: VerifyConfig) -> None:
    """Check every chunk of a store (checksums, missing chunks) and name each damaged video and array.

    Exits 1 when damage is found; `clipcache extract ... --repair` redoes the damaged videos.
    """
    from clipcache.cache.verify import format_verify, verify_store

    report = _run(lambda: verify_store(cfg.store))
    typer.echo(json.dumps(report.to_json(), indent=2) if cfg.as_json else format_verify(report))
    if not report.intact:
        raise typer.Exit(1)


@command(TrainConfig, "train-head", epilog="Example: clipcache train-head features.zarr --head text --out runs/text "
                                           "--shots 8 --seeds 3; retrieval: clipcache train-head features.zarr "
                                           "--head prompt --captions captions.csv --out runs/retrieval")
def train_head(cfg: TrainConfig) -> None:
    """Train a light head on cached features (no video is decoded, no image encoder runs).

    With --shots K it trains one K-shot run per seed (OUT/seed-<s>); with --base-to-novel it trains on half
    of the classes and tests the other half too; with --captions (prompt head) it trains text-video retrieval.
    Under `torchrun --nproc-per-node N cli.py train-head ...` it trains on N processes (DistributedDataParallel),
    each reading its share of every batch.
    """
    from clipcache.pipeline.evaluate.protocols import format_training, run_train_head
    from clipcache.pipeline.train.distributed import is_main

    try:
        result = _run(lambda: run_train_head(cfg))
    except KeyboardInterrupt as exc:
        if not is_main():
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
        raise _stopped(exc, _kept_epochs(cfg.out)) from None
    if is_main():  # under torchrun every rank trains; rank 0 reports
        typer.echo(format_training(result))


def _kept_epochs(out: Path) -> str:
    """What an interrupted train-head keeps: each run's finished epochs (a protocol's runs are OUT/seed-<s>)."""
    from clipcache.pipeline.train.checkpoint import METRICS

    runs = [run for run in (out, *sorted(out.glob("seed-*"))) if (run / METRICS).is_file()]
    finished = {run: len((run / METRICS).read_text(encoding="utf-8").splitlines()) for run in runs}
    kept = "; ".join(f"{run}: {n} finished epoch{'s' if n != 1 else ''} kept" for run, n in finished.items())
    return f"{kept or f'{out}: no epoch had finished'}; rerun the same command with --resume to continue"


@command(EvalConfig, "eval", epilog="Examples: clipcache eval features.zarr --checkpoint runs/text; "
                                    "clipcache eval features.zarr --zero-shot; "
                                    "clipcache eval features.zarr --zero-shot --captions captions.csv; "
                                    "clipcache eval features.zarr --probe linear --shots 4")
def eval_(cfg: EvalConfig) -> None:
    """Evaluate a trained head, zero-shot CLIP, or a linear probe: top-1/top-5, mean class accuracy; with
    --captions or the checkpoint of a retrieval run, text-video retrieval (R@1/5/10, median and mean rank, both
    directions)."""
    from clipcache.pipeline.evaluate.report import format_report
    from clipcache.pipeline.evaluate.run import evaluate

    report = _run(lambda: evaluate(cfg))
    typer.echo(json.dumps(report, indent=2) if cfg.as_json else format_report(report))


@command(PredictConfig, "predict", epilog="Example: clipcache predict clip1.mp4 clip2.mp4 --checkpoint runs/text "
                                         "--top-k 3 --json")
def predict(cfg: PredictConfig) -> None:
    """Classify new videos with a trained head: each is decoded, sampled and cropped as the run's store was made,
    encoded by the store's model and scored by the head (views averaged); the top-k classes with their scores."""
    from clipcache.pipeline.predict.run import format_predictions, predict_videos

    typer.echo(format_predictions(_run(lambda: predict_videos(cfg)), cfg.as_json))


@command(ExportConfig, "export", epilog="Examples: clipcache export thumos.zarr features/ --format actionformer; "
                                       "clipcache export features.zarr npy/ --format npy")
def export(cfg: ExportConfig) -> None:
    """Write a store's features for other tools: ActionFormer/OpenTAD (one (T, C) .npy per video, the annotations
    JSON and the exact feature settings), or video_features' per-video .npy with fps and timestamps."""
    from clipcache.pipeline.export.run import export as run_export

    typer.echo(str(_run(lambda: run_export(cfg))))


TableFormat = StrEnum("TableFormat", {"markdown": "markdown", "csv": "csv"})


@dataclasses.dataclass(kw_only=True)
class ResultsConfig:
    paths: tuple[Path, ...] = dataclasses.field(metadata={"cli": Cli(
        "result.json files, or folders searched for them (e.g. eval/ or runs/).", argument=True, text=list[Path],
        parse=tuple)})
    format: TableFormat = option(TableFormat.markdown, "markdown (a table to paste) or csv.")


@command(ResultsConfig, "results", epilog="Example: clipcache results eval/ runs/ --format csv > results.csv")
def results(cfg: ResultsConfig) -> None:
    """One table of many evaluations: a row per result.json (store, split, method, protocol, the numbers)."""
    from clipcache.pipeline.evaluate.collect import collect

    typer.echo(_run(lambda: collect(cfg.paths, cfg.format)))


@command(SearchConfig, "search", epilog="Examples: clipcache search thumos.zarr 'a person diving'; "
                                       "clipcache search features.zarr 'a dog catches a frisbee' --top 5 --json")
def search(cfg: SearchConfig) -> None:
    """Find videos (clip stores) or moments within them (dense stores) that match a sentence, with the store's own
    text tower: zero-shot, nothing trained, nothing decoded."""
    from clipcache.pipeline.search.run import format_matches, matches_json
    from clipcache.pipeline.search.run import search as run_search

    matches = _run(lambda: run_search(cfg))
    typer.echo(json.dumps(matches_json(matches), indent=2) if cfg.as_json else format_matches(matches))


@command(DemoConfig, "demo", epilog="Example: clipcache demo --out demo_out")
def demo(cfg: DemoConfig) -> None:
    """Run the whole flow offline on generated sample videos with a tiny built-in model (< 1 min on CPU)."""
    from clipcache.pipeline.demo.run import run_demo

    typer.echo(_run(lambda: run_demo(cfg)))


@command(CopyConfig, "copy", epilog="Examples: clipcache copy features.zarr s3://bucket/stores/features.zarr; "
                                   "clipcache copy s3://bucket/stores/features.zarr features.zarr")
def copy(cfg: CopyConfig) -> None:
    """Copy a store between a folder and object storage, either way: every object's checksum checked before it is
    written and read back after, the destination's root written last; a stopped copy resumes where it stopped."""
    from clipcache.pipeline.copy.run import copy_store

    typer.echo(str(_run(lambda: copy_store(cfg))))


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app()


if __name__ == "__main__":
    sys.exit(main())
