"""A store's chunks as objects: where each lives, and whether its bytes are intact, without decoding them.

Every array of a `clipcache/2` store ends its codecs with crc32c (inside the sharding codec for the
token arrays, whose shard index has its own crc32c), and its chunks are written even when they hold
only zeros. So a chunk that was written must exist, and its bytes carry their own checksum: a deleted
file is found here (zarr would read it as zeros) and so are flipped or cut bytes. Arrays of older
stores have no checksum; for them only a missing file or a failed decode can show damage.
"""
from __future__ import annotations

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

from clipcache.cache.objects import StoreObjects

EMPTY = 2**64 - 1  # offset and length of an absent inner chunk in a shard index

# what zarr's codecs raise on bytes they did not write: a checksum mismatch or a reshape of the wrong
# length (ValueError), a broken zstd frame (RuntimeError), a vlen-utf8 length prefix of garbage (MemoryError)
DECODE_ERRORS = (ValueError, RuntimeError, MemoryError)


def is_checked(array: zarr.Array) -> bool:
    """Whether the array's chunks carry a crc32c checksum (and are always written, zeros included)."""
    codecs = array.metadata.codecs
    if isinstance(codecs[0], ShardingCodec):
        codecs = codecs[0].codecs
    return isinstance(codecs[-1], Crc32cCodec)


def rows_per_file(array: zarr.Array) -> int:
    """Rows along the first axis (videos) stored in one file: a chunk, or a shard."""
    return (array.shards or array.chunks)[0]


def chunk_key(array: zarr.Array, block: int) -> str:
    """The key (file, or object) holding rows [block * rows_per_file, ...) of an array chunked only along its
    first axis."""
    coords = (block,) + (0,) * (array.ndim - 1)
    return f"{array.store_path.path}/{array.metadata.encode_chunk_key(coords)}"


def chunk_exists(array: zarr.Array, block: int) -> bool:
    return StoreObjects.of_array(array).exists(chunk_key(array, block))


def crc_intact(data: bytes) -> bool:
    """Whether `data` ends with the crc32c of what precedes it (the crc32c codec's layout)."""
    return len(data) >= 4 and np.uint32(google_crc32c.value(data[:-4])).tobytes() == data[-4:]


def index_bytes(entries: int) -> int:
    """Size of a shard's index of `entries` inner chunks: (offset, length) as uint64 each, then its crc32c."""
    return entries * 16 + 4


def shard_index(tail: bytes, entries: int) -> np.ndarray | None:
    """(offset, length) per inner chunk from a shard's last `index_bytes(entries)` bytes (the index and its
    crc32c, as the writer makes them); None when cut short or failing its checksum."""
    size = index_bytes(entries)
    if len(tail) < size or not crc_intact(tail[-size:]):
        return None
    return np.frombuffer(tail[-size:-4], dtype="<u8").reshape(entries, 2)


def plain_inner_grid(array: zarr.Array) -> tuple[int, ...] | None:
    """Inner chunks per shard along each axis, for a sharded array whose inner chunks are one (video, view)
    each, stored as little-endian bytes plus crc32c with the index at the end (the token arrays of
    `clipcache/2`), so a view's bytes can be read straight from the file; else None."""
    codecs = array.metadata.codecs
    if not (array.shards and isinstance(codecs[0], ShardingCodec)) or array.chunks[:2] != (1, 1) \
            or array.dtype.byteorder == ">":
        return None
    sharding = codecs[0]
    plain = ((BytesCodec(endian="little"), Crc32cCodec()), (BytesCodec(endian=None), Crc32cCodec()))  # int8: None
    if tuple(sharding.codecs) not in plain or tuple(sharding.index_codecs) not in plain \
            or sharding.index_location != ShardingCodecIndexLocation.end:
        return None
    grid = tuple(shard // chunk for shard, chunk in zip(array.shards, array.chunks))
    return grid if all(g == 1 for g in grid[2:]) else None


def damaged_rows(array: zarr.Array, block: int) -> dict[int, str]:
    """{row within the block: why it is damaged} for the file of `block`: missing, cut short or failing
    its checksum. A shard is checked inner chunk by inner chunk, so one damaged video names only
    itself. Empty when intact, or when the array has no checksum and its file exists."""
    rows = min(rows_per_file(array), array.shape[0] - block * rows_per_file(array))
    data = StoreObjects.of_array(array).read(chunk_key(array, block))
    if data is None:
        return dict.fromkeys(range(rows), "chunk file missing") if is_checked(array) else {}
    if not is_checked(array):
        return {}
    sharding = array.metadata.codecs[0]
    if not isinstance(sharding, ShardingCodec):
        return {} if crc_intact(data) else dict.fromkeys(range(rows), "checksum mismatch")
    return shard_damage(array, data, rows)


def shard_damage(array: zarr.Array, data: bytes, rows: int) -> dict[int, str]:
    """{row within the shard: why it is damaged} for the first `rows` rows of a shard's bytes, as the writer makes
    a shard: its inner chunks (the token arrays: one per video and view), then the index (offset, length per
    inner chunk, uint64, in C order over the shard's grid of inner chunks) and its crc32c. A row is damaged when
    any of its inner chunks is. `verify` and `copy` judge a shard by it."""
    grid = [shard // chunk for shard, chunk in zip(array.shards, array.chunks)]
    inner, per_position = int(np.prod(grid)), int(np.prod(grid[1:]))
    index_size = index_bytes(inner)
    index = shard_index(data, inner)
    if index is None:
        return dict.fromkeys(range(rows), "shard index damaged (cut short or checksum mismatch)")
    damaged: dict[int, str] = {}
    for entry, (offset, length) in enumerate(index.tolist()):
        first = entry // per_position * array.chunks[0]
        if first >= rows:
            break
        if offset == EMPTY:
            why = "chunk missing from its shard"
        elif offset + length > len(data) - index_size or not crc_intact(data[offset:offset + length]):
            why = "checksum mismatch"
        else:
            continue
        for row in range(first, min(first + array.chunks[0], rows)):
            damaged.setdefault(row, why)
    return damaged
