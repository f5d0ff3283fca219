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


def _parse_options(pairs: list[str]) -> dict[str, object]:
    """`key=value` head options; values are read as JSON when they parse (numbers, true/false)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected key=value", param_hint="--option")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


@app.command("train-head", epilog="Example: clipcache train-head features.zarr --head text --out runs/text "
                                  "--epochs 30 --option depth=6")
def train_head(
    store: Path = typer.Argument(..., help="A store made by `clipcache extract`."),
    head: str = typer.Option(..., help="Head to train: linear, text, evl, attnpool or prompt (see README)."),
    out: Path = typer.Option(..., help="Run directory: run.json, best/last weights, metrics.jsonl."),
    option: list[str] = typer.Option([], "--option", help="Head option key=value, repeatable "
                                                           "(text: depth=6; evl: num_layers=4, dropout=0.5; attnpool: queries=1, layer=-1, "
                                                           "heads=8; prompt: prefix=16, suffix=16, depth=1)."),
    epochs: int = typer.Option(20, help="Training epochs."),
    batch_size: int = typer.Option(None, help="Videos per batch (default 64, or the head's recipe)."),
    lr: float = typer.Option(None, help="AdamW peak learning rate (default 1e-3, or the head's recipe)."),
    weight_decay: float = typer.Option(0.05, help="AdamW weight decay."),
    warmup_epochs: float = typer.Option(1.0, help="Linear warm-up length before the cosine decay."),
    label_smoothing: float = typer.Option(None, help="Label smoothing (default 0, or the head's recipe)."),
    grad_clip: float = typer.Option(None, help="Gradient norm clip, 0: off (default 1)."),
    seed: int = typer.Option(0, help="Seed of initialisation, shuffling, views, hold-out and shots."),
    frames: int = typer.Option(None, help="Frames the head sees (a subset of the stored ones; default all)."),
    train_split: str = typer.Option("train", help="Training split name, or a file of video paths."),
    val_split: str = typer.Option("val", help="Validation split or file; none: a stratified 10% of train."),
    test_split: str = typer.Option("test", help="Test split or file (recorded for eval)."),
    shots: int = typer.Option(None, help="K-shot: K training videos per class (seeded)."),
    seeds: int = typer.Option(1, help="With --shots: one run per seed 0..n-1 in OUT/seed-<s>, test top-1 mean ± std."),
    base_to_novel: bool = typer.Option(False, "--base-to-novel", help="Train on a seeded half of the classes, test "
                                                                      "base and novel classes (text, prompt heads)."),
    patience: int = typer.Option(0, help="Stop after this many epochs without a better validation top-1 (0: off)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last epoch."),
    preload: bool = typer.Option(None, "--preload/--no-preload", help="Hold the features the head reads in memory "
                                 "(on the GPU when training there and they fit, else in RAM; refused when they "
                                 "exceed half of what is free). Default: only when they fit; --no-preload streams."),
    workers: int = typer.Option(0, help="DataLoader worker processes (streamed features only)."),
    templates: str = typer.Option("text4vis", help="Prompt templates for class names: text4vis, ensemble or a file."),
    class_names: Path = typer.Option(None, help="File of label,name lines overriding the class names."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train a light head on cached features (no video is decoded, no image encoder runs)."""
    from pipeline.protocols import base_to_novel as run_base_to_novel, few_shot
    from pipeline.train import TrainConfig, train_head as run_train

    cfg = TrainConfig(
        store=store, head=head, out=out, head_options=_parse_options(option), epochs=epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
        grad_clip=grad_clip, seed=seed, frames=frames, train_split=train_split, val_split=val_split,
        test_split=test_split, shots=shots, patience=patience, resume=resume, preload=preload, workers=workers,
        device=device, templates=templates, class_names=class_names, quiet=quiet,
    )
    if seeds > 1 or base_to_novel:
        if seeds > 1 and not shots:
            raise typer.BadParameter("--seeds needs --shots", param_hint="--seeds")
        protocol = (lambda: run_base_to_novel(cfg, seed)) if base_to_novel else (lambda: few_shot(cfg, shots, seeds))
        typer.echo(json.dumps(_run(protocol), indent=2))
        return
    run = _run(lambda: run_train(cfg))
    best = run["best"]
    typer.echo(f"{out}: {run['epochs_done']} epochs, best val top-1 {best['val_top1']:.4f} at epoch {best['epoch']}")


@app.command("eval", epilog="Examples: clipcache eval features.zarr --checkpoint runs/text; "
                            "clipcache eval features.zarr --zero-shot; clipcache eval features.zarr --probe linear --shots 4")
def eval_(
    store: Path = typer.Argument(..., help="A store made by `clipcache extract`."),
    checkpoint: Path = typer.Option(None, help="Run directory of `train-head` to evaluate (multi-view)."),
    zero_shot: bool = typer.Option(False, "--zero-shot", help="CLIP zero-shot with class-name prompts."),
    probe: str = typer.Option(None, help="linear: scikit-learn logistic regression probe, C swept on val."),
    split: str = typer.Option(None, help="Split (or file of paths) to evaluate on (default: the run's test split, "
                                         "else test; a store without a test split falls back to val)."),
    train_split: str = typer.Option("train", help="Probe training split."),
    val_split: str = typer.Option("val", help="Probe validation split (C sweep)."),
    shots: int = typer.Option(None, help="Probe: K-shot training sets."),
    seeds: int = typer.Option(3, help="Probe: seeds for --shots (mean and std)."),
    half_classes: int = typer.Option(0, help="Zero-shot: N random halves of the classes, mean ± std (Text4Vis)."),
    base_to_novel: bool = typer.Option(False, "--base-to-novel", help="Zero-shot on the base and novel halves "
                                                                      "used by train-head --base-to-novel."),
    weights: str = typer.Option("best", help="best or last checkpoint of the run."),
    templates: str = typer.Option("text4vis", help="Zero-shot templates: text4vis, ensemble or a file."),
    class_names: Path = typer.Option(None, help="File of label,name lines overriding the class names."),
    out: Path = typer.Option(None, help="Folder for report.json, confusion.png, per_class.png "
                                        "(default: the run directory, else ./eval)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar, no note about left-out videos."),
) -> None:
    """Evaluate a trained head, zero-shot CLIP, or a linear probe: top-1/top-5, mean class accuracy."""
    from cache.reader import CacheReader
    from cache.splits import left_out_note
    from pipeline.evaluate import evaluate_checkpoint, write_report, zero_shot as run_zero_shot
    from pipeline.probe import linear_probe

    chosen = [checkpoint is not None, zero_shot, probe is not None]
    if sum(chosen) != 1:
        typer.echo("clipcache: error: choose exactly one of --checkpoint, --zero-shot, --probe linear", err=True)
        raise typer.Exit(2)
    if probe is not None and probe != "linear":
        typer.echo(f"clipcache: error: --probe {probe}: only 'linear' exists", err=True)
        raise typer.Exit(2)
    if checkpoint is not None:
        report = _run(lambda: evaluate_checkpoint(store, checkpoint, split, device, f"{weights}.safetensors",
                                                  quiet=quiet))
    elif zero_shot and (half_classes or base_to_novel):
        from pipeline.protocols import half_class_zero_shot, zero_shot_base_to_novel

        test = split or "test"
        protocol = (lambda: half_class_zero_shot(store, half_classes, test, templates, class_names, device)) \
            if half_classes else (lambda: zero_shot_base_to_novel(store, 0, test, templates, class_names, device))
        typer.echo(json.dumps(_run(protocol), indent=2))
        return
    elif zero_shot:
        report = _run(lambda: run_zero_shot(store, split or "test", templates, class_names, device, quiet=quiet))
    else:
        report = _run(lambda: linear_probe(CacheReader(store), train_split, val_split, split or "test", shots, seeds))
    note = left_out_note(report["left_out"], str(store))
    if note and not quiet:
        typer.echo(note, err=True)
    if "confusion" in report:
        _run(lambda: write_report(report, out or checkpoint or Path("eval")))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    std = f" ± {report['top1_std']:.4f}" if "top1_std" in report else ""
    typer.echo(f"{report['kind']}: top-1 {report['top1']:.4f}{std}  top-5 {report['top5']:.4f}  "
               f"mean class accuracy {report['mean_class_accuracy']:.4f}")


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
