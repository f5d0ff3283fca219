"""The dense layout (format 3): each video of an untrimmed store is its own time series, `dense/<video>/`.

A video's length is known only once it has been decoded, and a long video never fits in memory, so its arrays are
created empty and grow piece by piece as its frames are encoded (one writer per video: the process that owns its
shard group). One group per video also makes each a dataset of its own for other tools: `xarray.open_zarr(store,
group="dense/17", consolidated=False)` has `pooled (time, embed)` with `time` in seconds as its coordinate (dense
stores keep no consolidated metadata: see cache.store.consolidate). Arrays are chunked along time only (every chunk
a file, crc32c last, written even when it holds zeros), so a video's chunks are exactly those covering its
`videos/samples` frames; the last is padded to a whole chunk (at most DENSE_CHUNK - 1 frames of padding per array
per video).

    dense/<v>/time          (samples,)          float64  presentation time of each stored frame, seconds
    dense/<v>/frame         (samples,)          int32    decoded frame number of each stored frame
    dense/<v>/pooled        (samples, E)        float16  image embedding before normalisation
    dense/<v>/block_<b>     (samples, L, D)     float16 or int8 (L = 1 with --tokens cls)
    dense/<v>/block_<b>_scale (samples, L)      float32  per-token int8 scales
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from clipcache import InputError
from clipcache.cache import quant
from clipcache.cache.chunks import DECODE_ERRORS, chunk_exists, damaged_rows, rows_per_file
from clipcache.cache.schema import StoreSettings, dimension_names

RATE_DENOMINATOR = 1001  # rates are taken as the nearest fraction with this denominator or less: 30000/1001 exact
DENSE_CHUNK = 64  # frames per chunk: 64 KB of ViT-B/16 pooled float16, 6.4 s at 10 fps
TOKEN_CHUNK_BYTES = 4 << 20  # all tokens of a block: as many frames as fit in ~4 MB (16 at ViT-B/16)
WRITE_EMPTY = {"write_empty_chunks": True}


def sample_rate(fps: float | Fraction | None) -> Fraction | None:
    """A dense store's rate F as an exact fraction (sample k stands for time k/F); None for every frame (None or
    0). Shared by the decoder that picks the frames and the readers that place them in time."""
    if not fps:
        return None
    if not math.isfinite(fps) or fps < 0:
        raise InputError(f"frame rate must be a positive number of frames per second, got {fps}")
    return Fraction(fps).limit_denominator(RATE_DENOMINATOR)


def dense_group(video: int) -> str:
    return f"dense/{video}"


def block_name(layer: int) -> str:
    return f"block_{layer}"


def token_chunk(settings: StoreSettings) -> int:
    """Frames per chunk of a token array: a power of two dividing DENSE_CHUNK, so that pieces of whole
    DENSE_CHUNK chunks always fill whole token chunks too."""
    frame_bytes = settings.stored_tokens * settings.width * (1 if settings.dtype == "int8" else 2)
    frames = DENSE_CHUNK
    while frames > 1 and frames * frame_bytes > TOKEN_CHUNK_BYTES:
        frames //= 2
    return frames


def array_specs(settings: StoreSettings) -> dict[str, dict[str, object]]:
    """Name (inside dense/<v>/) -> how it is made, with a frame axis of length 0."""
    features = ((ZstdCodec(level=3),) if settings.compression == "zstd" else ()) + (Crc32cCodec(),)
    checksum = (Crc32cCodec(),)
    length, width, chunk = settings.stored_tokens, settings.width, token_chunk(settings)
    specs: dict[str, dict[str, object]] = {
        "time": {"shape": (0,), "chunks": (DENSE_CHUNK,), "dtype": "float64", "compressors": checksum},
        "frame": {"shape": (0,), "chunks": (DENSE_CHUNK,), "dtype": "int32", "compressors": checksum},
        "pooled": {"shape": (0, settings.embed_dim), "chunks": (DENSE_CHUNK, settings.embed_dim),
                   "dtype": "float16", "compressors": features},
    }
    for layer in settings.layers:
        specs[block_name(layer)] = {"shape": (0, length, width), "chunks": (chunk, length, width),
                                    "dtype": "int8" if settings.dtype == "int8" else "float16",
                                    "compressors": features}
        if settings.dtype == "int8":
            specs[f"{block_name(layer)}_scale"] = {"shape": (0, length), "chunks": (chunk, length),
                                                   "dtype": "float32", "compressors": checksum}
    return specs


def frame_bytes(settings: StoreSettings) -> int:
    """Uncompressed bytes of one stored frame across a video's arrays, as their dtypes hold them."""
    return sum(int(np.prod(spec["shape"][1:])) * np.dtype(spec["dtype"]).itemsize
               for spec in array_specs(settings).values())


class DenseVideoWriter:
    """Writes one video's time series from scratch, piece by piece (each piece a multiple of DENSE_CHUNK
    frames but the last, so no chunk is ever written twice). Creating it removes what an earlier,
    unfinished or damaged attempt left for this video."""

    def __init__(self, root: zarr.Group, settings: StoreSettings, video: int) -> None:
        self.settings, self.count = settings, 0
        group = root.create_group(dense_group(video), overwrite=True)
        self.arrays = {name: group.create_array(name, dimension_names=dimension_names(f"dense/{name}"),
                                                fill_value=0, config=WRITE_EMPTY, **spec)
                       for name, spec in array_specs(settings).items()}

    def append(self, time: np.ndarray, frame: np.ndarray, pooled: np.ndarray, tokens: dict[int, np.ndarray]) -> None:
        """One piece: (n,) times and frame numbers, (n, E) embeddings, {block: (n, L, D)} tokens."""
        if self.count % DENSE_CHUNK:
            raise ValueError("a piece after a piece that was not a whole number of chunks")
        values: dict[str, np.ndarray] = {"time": time, "frame": frame, "pooled": pooled.astype(np.float16)}
        for layer, value in tokens.items():
            if self.settings.keep_tokens == "cls":
                value = value[:, :1]
            if self.settings.dtype == "int8":
                values[block_name(layer)], values[f"{block_name(layer)}_scale"] = quant.quantize(value)
            else:
                values[block_name(layer)] = value.astype(np.float16, copy=False)
        start, stop = self.count, self.count + len(time)
        for name, array in self.arrays.items():
            array.resize((stop, *array.shape[1:]))
            array[start:stop] = values[name]
        self.count = stop


def video_damage(root: zarr.Group, settings: StoreSettings, video: int, samples: int) -> dict[str, str]:
    """Array name (dense/<v>/...) -> reason, for every array of a done video that is missing, has another
    length than the `samples` its table records, or has a chunk missing or failing its checksum."""
    found: dict[str, str] = {}
    prefix = dense_group(video)
    for name in array_specs(settings):
        path = f"{prefix}/{name}"
        try:
            array = root[path]
        except KeyError:
            found[path] = "array missing"
            continue
        except ValueError as error:
            found[path] = f"metadata unreadable ({str(error).splitlines()[0][:60]})"
            continue
        if array.shape[0] != samples:
            found[path] = f"holds {array.shape[0]} frames, the table records {samples}"
            continue
        for block in range(-(-samples // rows_per_file(array))):
            reasons = damaged_rows(array, block)
            if reasons:
                found[path] = next(iter(reasons.values()))
                break
    return found


def read_video(root: zarr.Group, settings: StoreSettings, video: int, name: str, samples: int) -> np.ndarray:
    """dense/<video>/<name> read whole and checked (int8 blocks dequantised); DenseDamage when it cannot be
    trusted."""
    def checked(path: str) -> np.ndarray:
        try:
            array = root[path]
        except (KeyError, ValueError):
            raise DenseDamage(path, "array missing or its metadata unreadable") from None
        if array.shape[0] != samples:
            raise DenseDamage(path, f"holds {array.shape[0]} frames, the table records {samples}")
        for block in range(-(-samples // rows_per_file(array))):
            if not chunk_exists(array, block):
                raise DenseDamage(path, "chunk file missing")
        try:
            return array[...]
        except DECODE_ERRORS as error:
            raise DenseDamage(path, f"cannot be decoded ({str(error).splitlines()[0][:60]})") from None

    values = checked(f"{dense_group(video)}/{name}")
    if name.startswith("block_") and settings.dtype == "int8":
        return quant.dequantize(values, checked(f"{dense_group(video)}/{name}_scale"))
    return values


class DenseDamage(Exception):
    """A dense array of a done video that cannot be trusted (the reader turns it into one line)."""

    def __init__(self, array: str, reason: str) -> None:
        super().__init__(f"{array}: {reason}")
        self.array, self.reason = array, reason
