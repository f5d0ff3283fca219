"""Every option of `clipcache extract`, with its default and help (the command line is derived from it)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from clipcache.cache.location import Store
from clipcache.cache.schema import COMPRESSIONS, DTYPES
from clipcache.pipeline.extract.sources import VIDEO_EXTENSIONS
from clipcache.pipeline.options import RunOptions, argument, option, store_argument

Sampling = StrEnum("Sampling", {"uniform": "uniform", "dense": "dense"})
TokenDtype = StrEnum("TokenDtype", {name: name for name in DTYPES})
Compression = StrEnum("Compression", {name: name for name in COMPRESSIONS})
TokenSet = StrEnum("TokenSet", {"all": "all", "cls": "cls"})


@dataclass(kw_only=True)
class ExtractConfig(RunOptions):
    videos: Path = argument("Root folder of the videos (root/<class>/<video> or root/<split>/<class>/<video>); "
                            "paths in the store are relative to it.")
    store: Store = store_argument("Zarr store to create or resume.")
    lists: tuple[Path, ...] = option(
        help="CSV/TSV/TXT of path[,label[,split]], a Kinetics CSV, UCF101/HMDB51 split files or an SSv2 JSON; "
             "repeatable (e.g. a train and a test list into one store). FILE is looked up in the working "
             "directory, else in VIDEOS; the paths it lists are relative to VIDEOS.",
        factory=tuple, flags=("--list",), text=list[Path], parse=tuple, metavar="FILE")
    annotations: tuple[Path, ...] = option(
        help="Temporal annotations of the videos, kept in the store's segments table: a THUMOS14 folder of "
             "<Class>_val.txt/<Class>_test.txt files, an ActivityNet-1.3 or ActionFormer/OpenTAD JSON, or a "
             "CSV/TSV of video,start,end,label[,split]; repeatable. Their splits fill the store's split column.",
        factory=tuple, flags=("--annotations",), text=list[Path], parse=tuple, metavar="FILE")
    extensions: str = option(",".join(VIDEO_EXTENSIONS), "Video file extensions to include, comma-separated.")
    model: str = option("", "open_clip model name (see open_clip.list_models()); default ViT-B-16, or the "
                            "--model-config file's name.")
    pretrained: str | None = option(None, "open_clip pretrained tag (e.g. openai, laion2b_s34b_b88k) or a local "
                                          "checkpoint file. Omitted: random weights.")
    model_config: Path | None = option(None, "JSON open_clip model config to register; its file name is the model "
                                             "name unless --model is given.")
    layers: str | None = option(None, "Blocks whose token stream is stored; negatives count from the end; "
                                      "'-5:' means the last five; 'none' keeps the pooled embeddings only. "
                                      "Default: -4,-3,-2,-1, or none with --fps.")
    tokens: TokenSet = option(TokenSet.all, "Tokens kept of each stored block: all (CLS + patches), or cls "
                                            "(the CLS token alone; dense stores only).")
    fps: str | None = option(None, "Untrimmed videos: store every video whole at this many frames per second "
                                   "(the frame nearest each time k/F, by presentation time), or 'all' for every "
                                   "decoded frame, as one time series per video (a dense store). Replaces "
                                   "--frames/--sampling/--clips/--augment.", metavar="F")
    frames: int = option(8, "Frames per view (T).", limits=(1, None))
    sampling: Sampling = option(Sampling.uniform, "uniform: TSN segment centres; dense: T frames --stride apart.")
    stride: int = option(4, "Frame stride for --sampling dense.", limits=(1, None))
    clips: int = option(1, "Temporal views per video.", limits=(1, None))
    crops: int = option(1, "Spatial views: 1 (centre) or 3 (along the long side).")
    augment: int = option(0, "Extra randomly augmented training views per video (seeded).", limits=(0, None))
    seed: int = option(0, "Seed of the augmented views.")
    dtype: TokenDtype = option(TokenDtype.float16, "float16, or int8 with a per-token scale (half the bytes).")
    compression: Compression = option(Compression.none, "Lossless compression of the features (see the README "
                                                        "for what it buys).")
    shard_videos: int = option(16, "Videos per shard: the unit of writing, resuming and splitting work.",
                               limits=(1, None))
    batch_size: int = option(64, "Frames per encoder batch (batches span videos).", limits=(1, None))
    workers: int | None = option(None, "Decode worker processes (default: cores - 1, at most 8).", limits=(1, None))
    timeout: float = option(120.0, "Seconds before a video's decode is abandoned as hung.")
    overwrite: bool = option(False, "Replace a store made with other settings.")
    shard: str | None = option(None, "i/n: this job's share of the work (job arrays without torchrun).")
    strict: bool = option(False, "Exit 1 if any video failed or a listed video is missing.")
    retry_failed: bool = option(False, "Decode the store's failed videos again (in place; the others are kept).")
    dry_run: bool = option(False, "Read the inputs (folders, lists, annotations) and print what a run would do: "
                                  "videos found and missing, splits, segments, the store's fate, estimated frames "
                                  "and bytes. Writes nothing.")
    repair: bool = option(False, "Redo the videos whose stored data is damaged (what `clipcache verify` finds), "
                                 "with their shard groups.")
