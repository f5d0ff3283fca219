"""Options, declared once: each config field carries its default and its help, and the command line is
derived from the config dataclasses (cli.py), so the two can never disagree.

The option groups shared by several commands (device, threads, templates, splits, shots, captions) are declared here
once and mixed into the stages' configs. Every config checks on construction what holds for any option: a number is
finite (`--lr inf` would train to NaN weights) and within the range its field declares (`limits`), so a value no
library accepts (`--seed 1e23`) or that would run for ever (`--min-steps 1e22`) is one line, before anything heavy
starts.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

from clipcache import InputError
from clipcache.cache.location import Store, parse_store
from clipcache.heads.options import Limits, check_limits


@dataclass(frozen=True)
class Cli:
    """How a config field appears on the command line."""

    help: str
    flags: tuple[str, ...] = ()  # option names; default: --field-name
    argument: bool = False  # positional
    text: type | None = None  # what the command line reads when it differs from the field's type...
    parse: Callable[[Any], Any] | None = None  # ...and how that becomes the field's value
    metavar: str | None = None
    limits: Limits | None = None  # the range a number must lie in (checked by `Options`)

    def name(self, field_name: str) -> str:
        """The option as the user typed it: --lr, --option."""
        return self.flags[0].split("/")[0] if self.flags else f"--{field_name.replace('_', '-')}"


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
           flags: tuple[str, ...] = (), text: type | None = None, parse: Callable[[Any], Any] | None = None,
           metavar: str | None = None, limits: Limits | None = None) -> Any:
    """A config field that is also a command-line option (required when it has no default)."""
    cli = Cli(help, flags, False, text, parse, metavar, limits)
    if factory is not None:
        return field(default_factory=factory, metadata={"cli": cli})
    return field(default=default, metadata={"cli": cli})


def argument(help: str, text: type | None = None) -> Any:
    """A required positional command-line argument (read as `text` when given)."""
    return field(metadata={"cli": Cli(help, argument=True, text=text)})


def store_argument(help: str) -> Any:
    """A store: a folder or an object-storage URL, read as text (a `Path` would fold `s3://` into `s3:/`)."""
    return argument(help, text=str)


def internal(default: Any = None) -> Any:
    """A config field set by the library (e.g. by a protocol), not on the command line."""
    return field(default=default)


def cli_of(f: dataclasses.Field) -> Cli | None:
    return f.metadata.get("cli")


class Options:
    """Base of every option group: paths given as text (from Python: `store="features.zarr"`) become
    `Path`s (a store: a `Path` or a `StoreUrl`), as the command line makes them, so the stages can rely on the
    field's type; numbers are checked (`check_numbers`)."""

    def __post_init__(self) -> None:
        for name, kind in _path_fields(type(self)):
            value = getattr(self, name)
            if kind == "path" and isinstance(value, str):
                setattr(self, name, Path(value))
            elif kind == "store" and value is not None:
                setattr(self, name, parse_store(value))
            elif kind == "paths" and value is not None:
                values = [value] if isinstance(value, (str, Path)) else value
                setattr(self, name, tuple(Path(v) for v in values))
        check_numbers(self)


def check_numbers(config: Any) -> None:
    """Every float option is finite and every option with `limits` lies within them (InputError otherwise)."""
    for f in dataclasses.fields(config):
        value, cli = getattr(config, f.name), cli_of(f)
        if cli is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if cli.limits is not None:
            check_limits(cli.name(f.name), value, cli.limits)
        if not math.isfinite(value):
            raise InputError(f"{cli.name(f.name)} must be a finite number, got {value}")


@cache
def _path_fields(config: type) -> tuple[tuple[str, str], ...]:
    """(field, "path" | "paths" | "store") for the fields typed `Path`, `Path | None`, `tuple[Path, ...]`, `Store`
    or `Store | None`."""
    found = []
    for name, hint in get_type_hints(config).items():
        if hint in (Path, Path | None):
            found.append((name, "path"))
        elif hint in (Store, Store | None):
            found.append((name, "store"))
        elif hint == tuple[Path, ...]:
            found.append((name, "paths"))
    return tuple(found)


@dataclass(kw_only=True)
class RunOptions(Options):
    """Where models run and how much is printed."""

    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N.")
    quiet: bool = option(False, "No progress bars and no notes on stderr.")


@dataclass(kw_only=True)
class ThreadOptions(Options):
    """How many threads torch computes on in stage two (the rule that picks the default is
    `common.compute_threads`). Not part of a run's identity: a resumed run may use other threads."""

    threads: int | None = option(None, "Torch CPU threads for stage two's computation (default: OMP_NUM_THREADS when "
                                       "set, else half the cores, fewer when other processes keep more busy: "
                                       "threads waiting for a busy core make small heads many times slower).",
                                 limits=(1, None))


@dataclass(kw_only=True)
class JsonOutput(Options):
    as_json: bool = option(False, "Machine-readable output on stdout.", flags=("--json",))


@dataclass(kw_only=True)
class TextOptions(Options):
    """How class names become text for heads and zero-shot that read class names."""

    templates: str = option("text4vis", "Prompt templates for class names: text4vis ('a video of a person {}.'), "
                                        "ensemble (16 templates) or a file with one template per line.")
    pretrained: Path | None = option(None, "Where the checkpoint file the store was made with is now, if it moved "
                                           "(its sha256 must match the store's); the store's text tower loads from "
                                           "it.")
    class_names: Path | None = option(None, "File of label,name (or label<TAB>name) lines overriding the class "
                                            "names (default: the labels with _ as spaces).")


@dataclass(kw_only=True)
class SplitOptions(Options):
    """Which videos train and select (split names of the store, or files of video paths)."""

    train_split: str = option("train", "Training split name, or a file of video paths.")
    val_split: str = option("val", "Validation split (selects the epoch, or the probe's C unless it is the split "
                                   "scored) or a file; none in the store: a stratified, seeded 10% of train.")


Fractions = tuple[float, float, float]


def parse_fractions(text: str | None) -> Fractions | None:
    """`--split-fractions TRAIN,VAL,TEST`: three fractions, train above 0, that add up to 1."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or values[0] <= 0 or abs(sum(values) - 1) > 1e-6:
        raise InputError(f"--split-fractions {text}: expected TRAIN,VAL,TEST fractions that add up to 1 "
                         "(train above 0), e.g. 0.7,0.1,0.2")
    return values  # type: ignore[return-value]


@dataclass(kw_only=True)
class DrawnSplitOptions(Options):
    """How the splits of a store without splits are drawn (pipeline/train/splits.py draws them)."""

    split_fractions: Fractions | None = option(
        None, "A store without splits (a root/<class>/<video> folder): the TRAIN,VAL,TEST fractions of the "
              "stratified splits drawn for it with seed 0 (default 0.7,0.1,0.2; recorded as split_drawn in "
              "run.json and result.json; eval of a run draws the run's).", text=str, parse=parse_fractions,
        metavar="TRAIN,VAL,TEST")


MAX_SEEDS = 1000  # K-shot draws: more only repeat the spread they measure, at the cost of a run each
SEED_LIMITS: Limits = (0, 2**32 - 1)  # what numpy's and torch's generators accept, with room for seed x pass


@dataclass(kw_only=True)
class ShotOptions(Options):
    """K-shot training sets, drawn per class with seeds 0..N-1."""

    shots: int | None = option(None, "K-shot: K training videos per class, drawn with each seed.", limits=(1, None))
    seeds: int = option(3, f"With --shots: K-shot sets drawn with seeds 0..N-1; mean ± std over them (at most "
                           f"{MAX_SEEDS}).", limits=(1, MAX_SEEDS))


@dataclass(kw_only=True)
class DetectionOptions(Options):
    """How temporal detections are scored (eval of a localisation run, and train-head's open-set protocol)."""

    tiou: str = option("thumos14", "Localisation: the tIoU thresholds of mAP: thumos14 (0.3:0.1:0.7), activitynet "
                                   "(0.5:0.05:0.95) or a comma-separated list.")


@dataclass(kw_only=True)
class CaptionOptions(Options):
    """Text-video retrieval instead of classification: the sentences that describe the videos."""

    captions: Path | None = option(None, "Caption file (MSR-VTT annotation JSON, the 1k-A test CSV, or video,caption "
                                         "CSV/TSV lines): train (prompt head) or evaluate text-video retrieval "
                                         "instead of classification; scored in both directions (R@1, R@5, R@10, "
                                         "median and mean rank).")
