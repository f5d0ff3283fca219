"""A store's chunks as files: where each lives, and whether its bytes are intact, without decoding them.

Every array of a `clipcache/2` store ends its codecs with crc32c (inside the sharding codec for the
token arrays, whose shard index has its own crc32c), and its chunks are written even when they hold
only zeros. So a chunk that was written must exist, and its bytes carry their own checksum: a deleted
file is found here (zarr would read it as zeros) and so are flipped or cut bytes. Arrays of older
stores have no checksum; for them only a missing file or a failed decode can show damage.
"""
from __future__ import annotations

from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ShardingCodec

_EMPTY = 2**64 - 1  # offset and length of an absent inner chunk in a shard index

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


def chunk_file(array: zarr.Array, block: int) -> Path:
    """The file holding rows [block * rows_per_file, ...) of an array chunked only along its first axis."""
    coords = (block,) + (0,) * (array.ndim - 1)
    return Path(array.store_path.store.root) / array.store_path.path / array.metadata.encode_chunk_key(coords)


def _crc_intact(data: bytes) -> bool:
    return len(data) >= 4 and np.uint32(google_crc32c.value(data[:-4])).tobytes() == data[-4:]


def damaged_rows(array: zarr.Array, block: int) -> dict[int, str]:
    """{row within the block: why it is damaged} for the file of `block`: missing, cut short or failing
    its checksum. A shard is checked inner chunk by inner chunk, so one damaged video names only
    itself. Empty when intact, or when the array has no checksum and its file exists."""
    rows = min(rows_per_file(array), array.shape[0] - block * rows_per_file(array))
    path = chunk_file(array, block)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return dict.fromkeys(range(rows), "chunk file missing") if is_checked(array) else {}
    if not is_checked(array):
        return {}
    sharding = array.metadata.codecs[0]
    if not isinstance(sharding, ShardingCodec):
        return {} if _crc_intact(data) else dict.fromkeys(range(rows), "checksum mismatch")
    return _damaged_inner_chunks(array, data, rows)


def _damaged_inner_chunks(array: zarr.Array, data: bytes, rows: int) -> dict[int, str]:
    """A shard as written by the writer: inner chunks of one row each, then the index (offset, length
    per inner chunk, uint64) and its crc32c."""
    inner = array.shards[0] // array.chunks[0]
    index_size = inner * 16 + 4
    if len(data) < index_size or not _crc_intact(data[-index_size:]):
        return dict.fromkeys(range(rows), "shard index damaged (cut short or checksum mismatch)")
    index = np.frombuffer(data[-index_size:-4], dtype="<u8").reshape(inner, 2)
    damaged = {}
    for row in range(rows):
        offset, length = (int(v) for v in index[row])
        if offset == _EMPTY:
            damaged[row] = "chunk missing from its shard"
        elif offset + length > len(data) - index_size or not _crc_intact(data[offset:offset + length]):
            damaged[row] = "checksum mismatch"
    return damaged
