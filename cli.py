"""clipcache command line: parse, call one pipeline function, print. No logic lives here."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, TypeVar

import typer

app = typer.Typer(
    help="Decode each video once, run a frozen CLIP encoder once, train light video heads on the cache.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")

DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N."


def _run(action: Callable[[], T]) -> T:
    """Bad input of any kind is one line on stderr and exit code 2; real failures keep their traceback."""
    try:
        return action()
    except (ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"clipcache: error: {message}", err=True)
        raise typer.Exit(2) from None


@app.command(epilog="Example: clipcache extract videos/ features.zarr --model ViT-B-16 --pretrained openai "
                    "--frames 8 --layers -4,-3,-2,-1")
def extract(
    videos: Path = typer.Argument(..., help="Root folder of the videos (root/<class>/<video> or "
                                             "root/<split>/<class>/<video>); paths in the store are relative to it."),
    store: Path = typer.Argument(..., help="Zarr store to create or resume."),
    list_file: Path = typer.Option(None, "--list", help="CSV/TSV/TXT of path[,label[,split]], a Kinetics CSV, "
                                                        "UCF101/HMDB51 split files or an SSv2 JSON, relative to VIDEOS."),
    extensions: str = typer.Option("mp4,avi,mkv,webm,mov", help="Video file extensions to include."),
    model: str = typer.Option(None, help="open_clip model name (see open_clip.list_models()); default ViT-B-16, "
                                         "or the --model-config file's name."),
    pretrained: str = typer.Option(None, help="open_clip pretrained tag (e.g. openai, laion2b_s34b_b88k) or a "
                                              "local checkpoint file. Omitted: random weights."),
    model_config: Path = typer.Option(None, help="JSON open_clip model config to register; its file name is "
                                                 "the model name unless --model is given."),
    layers: str = typer.Option("-4,-3,-2,-1", help="Blocks whose full token stream is stored; negatives count "
                                                   "from the end; '-5:' means the last five."),
    frames: int = typer.Option(8, help="Frames per view (T)."),
    sampling: str = typer.Option("uniform", help="uniform: TSN segment centres; dense: T frames --stride apart."),
    stride: int = typer.Option(4, help="Frame stride for --sampling dense."),
    clips: int = typer.Option(1, help="Temporal views per video."),
    crops: int = typer.Option(1, help="Spatial views: 1 (centre) or 3 (along the long side)."),
    augment: int = typer.Option(0, help="Extra randomly augmented training views per video (seeded)."),
    seed: int = typer.Option(0, help="Seed of the augmented views."),
    dtype: str = typer.Option("float16", help="float16, or int8 with a per-token scale (half the bytes)."),
    compression: str = typer.Option("none", help="none or zstd (lossless; see README for what it buys)."),
    shard_videos: int = typer.Option(16, help="Videos per shard: the unit of writing, resuming and splitting."),
    batch_size: int = typer.Option(64, help="Frames per encoder batch (batches span videos)."),
    workers: int = typer.Option(None, help="Decode worker processes (default: cores - 1, at most 8)."),
    timeout: float = typer.Option(120.0, help="Seconds before a video's decode is abandoned as hung."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a store made with other settings."),
    shard: str = typer.Option(None, help="i/n: this job's share of the work (job arrays without torchrun)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any video failed."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Decode videos once and cache frozen CLIP tokens + pooled embeddings in a Zarr store.

    Rerunning the same command resumes; under `torchrun --nproc-per-node N` the ranks split the work.
    """
    from pipeline.extract import ExtractConfig, extract as run_extract
    from pipeline.report import format_extract_summary

    cfg = ExtractConfig(
        videos=videos, store=store, list_file=list_file,
        extensions=tuple(e.strip() for e in extensions.split(",") if e.strip()), model=model or "",
        pretrained=pretrained, model_config=model_config, layers=layers, frames=frames,
        sampling=sampling, stride=stride, clips=clips, crops=crops, augment=augment, seed=seed, dtype=dtype,
        compression=compression, shard_videos=shard_videos, batch_size=batch_size, timeout=timeout,
        device=device, overwrite=overwrite, shard=shard, quiet=quiet,
    )
    if workers is not None:
        cfg.workers = workers
    summary = _run(lambda: run_extract(cfg))
    if summary is None:
        return
    typer.echo(format_extract_summary(summary))
    if strict and summary.failed:
        raise typer.Exit(1)


@app.command(epilog="Example: clipcache info features.zarr --json")
def info(
    store: Path = typer.Argument(..., help="A clipcache Zarr store."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Counts (done/failed/pending), model, layers, views, bytes on disk and the failures of a store."""
    from cache.info import format_info, store_info

    summary = _run(lambda: store_info(store))
    typer.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))


@app.command(epilog="Example: clipcache demo --out demo_out")
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the sample videos and the store (replaced)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run the whole flow offline on generated sample videos with a tiny built-in model (< 1 min on CPU)."""
    from pipeline.demo import run_demo

    typer.echo(_run(lambda: run_demo(out, quiet)))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
