"""The clipcache store format: names, versions and the settings that define a store.

Kept free of torch and of how features are produced, so readers of the format need only zarr.
The README's "Cache format" section documents the same contract for other readers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from clipcache import InputError

FORMAT = "clipcache/2"  # stores of trimmed clips: their layout is unchanged since version 2
DENSE_FORMAT = "clipcache/3"  # 3: dense stores of untrimmed videos (older clipcache refuses them)
FORMAT_VERSION = 3  # the newest this clipcache reads; 2: crc32c on every chunk, status written at creation
CLIPS, DENSE = "clips", "dense"  # a store's layout: fixed (video, view, frame) arrays, or per-video time series

PENDING, DONE, FAILED, MISSING = 0, 1, 2, 3  # MISSING: listed, but the file was not found (format 2)
STATUSES = (PENDING, DONE, FAILED, MISSING)

# How datasets spell the three splits (MSR-VTT's "validate", ...): stored as train/val/test, so every source
# (folders, lists, caption files) agrees with `--split val`.
SPLIT_SPELLINGS = {"training": "train", "valid": "val", "validate": "val", "validation": "val", "testing": "test"}


def canonical_split(name: str) -> str:
    """A split name as the store spells it: train, val, test (other names unchanged, lower case)."""
    name = name.strip().lower()
    return SPLIT_SPELLINGS.get(name, name)

DTYPES = ("float16", "int8")
COMPRESSIONS = ("none", "zstd")

# Per-video arrays under videos/, one entry per video, chunked by shard group.
VIDEO_STRING_ARRAYS = ("path", "split", "error", "note")
# written for every video when the store is created; the other per-video arrays when its group is done
TABLE_AT_CREATION = ("path", "label", "split", "status")
VIDEO_NUMERIC_ARRAYS = {
    "label": "int32",
    "status": "uint8",
    "fps": "float32",
    "num_frames": "int32",
    "width": "int32",
    "height": "int32",
    "duration": "float32",
}
DENSE_NUMERIC_ARRAYS = {"samples": "int32"}  # dense stores: frames stored per video (the length of dense/<i>)


def numeric_columns(layout: str) -> dict[str, str]:
    """The numeric per-video columns of a store with this layout, by dtype."""
    return {**VIDEO_NUMERIC_ARRAYS, **(DENSE_NUMERIC_ARRAYS if layout == DENSE else {})}


# Named dimensions of every array (zarr's `dimension_names`), so xarray and other readers label the axes.
VIDEO, VIEW, FRAME, TOKEN, CHANNEL, EMBED = "video", "view", "frame", "token", "channel", "embed"
TIME = "time"  # a dense store's frame axis: its `time` array (seconds) is the coordinate xarray shows


def dimension_names(name: str) -> tuple[str, ...]:
    """The dimensions of the array at path `name` in a store."""
    base = name.rsplit("/", 1)[-1]
    if name.startswith("videos/"):
        return (VIDEO, VIEW, FRAME) if base == "frame_index" else (VIDEO,)
    if name.startswith("dense/"):
        if base == "pooled":
            return (TIME, EMBED)
        if base.startswith("block_"):
            return (TIME, TOKEN) if base.endswith("_scale") else (TIME, TOKEN, CHANNEL)
        return (TIME,)  # time (seconds) and frame (decoded frame number) of every stored sample
    if name.startswith("tokens/"):
        return (VIDEO, VIEW, FRAME, TOKEN) if base.endswith("_scale") else (VIDEO, VIEW, FRAME, TOKEN, CHANNEL)
    if name == "pooled":
        return (VIDEO, VIEW, FRAME, EMBED)
    if name.startswith("text/"):
        return ("class", EMBED)
    if name.startswith("segments/"):
        return ("segment",)
    if name.startswith("frozen/"):
        if base == "proj":
            return (CHANNEL, EMBED)
        if base == "logit_scale":
            return ("scalar",)
        if base.startswith("blocks.") and ".attn.in_proj_" in base:
            return ("qkv", CHANNEL) if base.endswith("weight") else ("qkv",)
        return (CHANNEL,)  # the LayerNorms' weights and biases
    raise KeyError(f"no dimension names for array {name!r}")


def tokens_name(layer: int) -> str:
    """Array holding the residual stream (all tokens) after absolute block `layer`."""
    return f"tokens/{layer}"


def scale_name(layer: int) -> str:
    """Per-token int8 scales of `tokens_name(layer)` (only in int8 stores)."""
    return f"tokens/{layer}_scale"


@dataclass(frozen=True)
class StoreSettings:
    """Everything that decides a store's content; two runs with equal settings write equal bytes."""

    model: str
    pretrained: str
    model_config: dict[str, Any]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str
    frames: int
    sampling: str
    stride: int
    clips: int
    crops: int
    augment: int
    seed: int
    layers: tuple[int, ...]
    num_blocks: int
    width: int
    heads: int
    embed_dim: int
    tokens: int
    grid: tuple[int, int]
    dtype: str
    compression: str
    shard_videos: int
    num_videos: int
    classes: tuple[str, ...]
    inputs_digest: str
    pretrained_sha256: str = ""  # of a checkpoint file (format 2); "" for tags and random weights
    batch_size: int = 0  # frames per encoder batch, every batch padded to it (format 2); 0: not recorded
    layout: str = CLIPS  # dense (format 3): every video's frames at `fps`, as per-video time series
    fps: float = 0.0  # dense stores: samples per second; 0 keeps every decoded frame
    keep_tokens: str = "all"  # the tokens of each stored block: all (CLS + patches), or cls (dense stores)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        return self.layout == DENSE

    @property
    def format(self) -> str:
        """The format attribute: dense stores need format 3; clip stores stay readable by clipcache versions
        that read format 2."""
        return DENSE_FORMAT if self.dense else FORMAT

    @property
    def stored_tokens(self) -> int:
        """Tokens per frame in each stored block: all of them, or the CLS token alone."""
        return 1 if self.keep_tokens == "cls" else self.tokens

    @property
    def views(self) -> int:
        """Views per video: clips x crops evaluation views, then the augmented training views."""
        return self.clips * self.crops + self.augment

    @property
    def num_groups(self) -> int:
        return -(-self.num_videos // self.shard_videos)

    def group_range(self, group: int) -> tuple[int, int]:
        """Video indices [start, stop) of shard group `group`, the unit of writing and resuming."""
        start = group * self.shard_videos
        return start, min(start + self.shard_videos, self.num_videos)

    def to_attrs(self) -> dict[str, Any]:
        attrs = json.loads(json.dumps(asdict(self)))
        attrs["views"] = {"clips": self.clips, "crops": self.crops, "augmented": self.augment}
        attrs["fingerprint"] = self.fingerprint()
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], where: str = "store") -> "StoreSettings":
        """The settings recorded in a store's attributes; an incomplete record is refused clearly."""
        names = cls.__dataclass_fields__
        required = [name for name, f in names.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        absent = [name for name in required if name not in attrs]
        if absent:
            raise InputError(f"{where}: not a complete clipcache store (attributes missing: {', '.join(absent)})")
        values = {k: v for k, v in attrs.items() if k in names}
        try:
            for key in ("mean", "std", "layers", "grid", "classes"):
                values[key] = tuple(values[key])
        except TypeError:
            raise InputError(f"{where}: attribute {key!r} is not a list ({values[key]!r})") from None
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """The content-defining settings: not `extras` (provenance), and a checkpoint file by its content,
        not by where it lies. `pretrained_sha256` and `batch_size` enter only when set, so stores made
        before them keep their fingerprint."""
        content = {k: v for k, v in asdict(self).items() if k != "extras"}
        if self.pretrained_sha256:
            del content["pretrained"]
        else:
            del content["pretrained_sha256"]
        if not self.batch_size:
            del content["batch_size"]
        for key, default in (("layout", CLIPS), ("fps", 0.0), ("keep_tokens", "all")):
            if content[key] == default:  # stores made before these settings keep their fingerprint
                del content[key]
        return content

    def fingerprint(self) -> str:
        """Hash of `identity()`."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, other: "StoreSettings") -> list[str]:
        """Human-readable `key: stored -> requested` lines for every content setting that differs."""
        mine, theirs = self.identity(), other.identity()
        shown, wanted = asdict(self), asdict(other)
        return [f"{key}: {_short(shown[key])} -> {_short(wanted[key])}" for key in shown
                if (key in mine or key in theirs) and mine.get(key) != theirs.get(key)]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def inputs_digest(listed: list[str], labels: list[int], splits: list[str]) -> str:
    """Identifies the input list, so a store is never resumed against a different set of videos. Rows are
    what the lists name (for folders, the paths), so a listed file that appears later changes nothing."""
    payload = json.dumps([listed, labels, splits]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


UNFINISHED = "clipcache/unfinished"  # the format of a store being created, removed or copied in place (cache.place)


def check_format(attrs: dict[str, Any], where: str) -> int:
    """The store's format version; stores that are not clipcache stores or come from a newer version are
    refused."""
    fmt = attrs.get("format")
    name, _, version = fmt.partition("/") if isinstance(fmt, str) else ("", "", "")
    if fmt == UNFINISHED:
        raise InputError(f"{where}: an unfinished store: being created, removed or copied, or a run that did so was "
                         "stopped (run the same extract or copy again to finish it)")
    if name != "clipcache" or not version.isdigit():
        raise InputError(f"{where}: not a clipcache store (no clipcache 'format' attribute)")
    if int(version) > FORMAT_VERSION:
        raise InputError(
            f"{where}: store format {fmt} is newer than this clipcache reads (clipcache/{FORMAT_VERSION}); "
            "upgrade clipcache"
        )
    return int(version)
