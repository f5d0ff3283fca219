"""Batch memory that is written again once nobody uses it.

A streamed batch of token features is tens of MB. Freshly allocated, every one of its pages is faulted in
by its first write (the kernel's copy out of the page cache): a warm pass over a float16 store, batch 32,
read 890 MB/s that way and 2,252 MB/s into reused buffers (benchmark machine, medians of 4). The pool
hands a buffer out again only when its storage has no other user: a batch the caller still holds, or any
view of it, is never overwritten.
"""
from __future__ import annotations

import torch

_use_count = getattr(torch._C, "_storage_Use_Count", None)  # what torch's cudagraph trees ask, for the same reason


def _users(buffer: torch.Tensor) -> int:
    return _use_count(buffer.untyped_storage()._cdata)


class BatchBuffers:
    """Up to `keep` byte buffers per name; `take` returns a tensor over one nobody else uses, or a new one.
    Without torch's use count (a torch that lacks it) every batch gets new memory, as before."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._held: dict[str, list[tuple[torch.Tensor, int]]] = {}  # name -> [(bytes, users when free)]

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of `shape` and `dtype` (its contents are whatever the last batch left)."""
        nbytes = max(1, torch.Size(shape).numel() * dtype.itemsize)
        if _use_count is None:
            return torch.empty(shape, dtype=dtype)
        held = self._held.setdefault(name, [])
        for buffer, free in held:
            if buffer.numel() >= nbytes and _users(buffer) == free:
                return _typed(buffer, shape, dtype)
        if len(held) == self.keep:  # the smallest free one makes room (all may be in use: then the oldest)
            free = [entry for entry in held if _users(entry[0]) == entry[1]]
            held.remove(min(free, key=lambda entry: entry[0].numel()) if free else held[0])
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        held.append((buffer, _users(buffer)))
        return _typed(buffer, shape, dtype)


def _typed(buffer: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return buffer[:torch.Size(shape).numel() * dtype.itemsize].view(dtype).view(shape)
