"""int8 storage of activations with one symmetric scale per token: half the bytes of float16.

A per-token scale follows the large spread of activation norms across tokens (CLS and a few
patch tokens carry outliers), which a per-tensor scale would crush.
"""
from __future__ import annotations

import numpy as np


def quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize the last axis of `x`; returns (int8 values, float32 scales of shape x.shape[:-1])."""
    x = np.asarray(x, dtype=np.float32)
    scale = np.abs(x).max(axis=-1) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(x / safe[..., None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Inverse of `quantize` (up to rounding)."""
    return (q.astype(np.float32) * scale[..., None].astype(np.float32)).astype(dtype, copy=False)
