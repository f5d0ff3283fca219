"""Import decord without the CUDA libraries its import would load into every process.

decord2 `dlopen`s every pip-installed NVIDIA library (`site-packages/nvidia/*/lib/*.so*`) with
RTLD_GLOBAL when imported, for the sake of its CUDA builds. We decode on the CPU, and torch's CUDA
wheels install those libraries, so the preload costs ~650 MB of memory per decode worker, and when
decord is imported before torch it puts libnvblas in front of torch's CPU BLAS: the first matmul
segfaults. Hiding the `nvidia` package while decord is imported skips the preload.
"""
from __future__ import annotations

import sys
from types import ModuleType


def load_decord() -> ModuleType:
    if "decord" in sys.modules:
        return sys.modules["decord"]
    missing = object()
    saved = sys.modules.get("nvidia", missing)
    sys.modules["nvidia"] = None  # type: ignore[assignment]  # find_spec("nvidia") now answers None
    try:
        import decord
    finally:
        if saved is missing:
            del sys.modules["nvidia"]
        else:
            sys.modules["nvidia"] = saved  # type: ignore[assignment]
    return decord
