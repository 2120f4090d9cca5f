"""Pick NumPy or CuPy from the input array, so one vectorised codec serves CPU and GPU."""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def cupy_or_none() -> ModuleType | None:
    """CuPy when it is installed and imports, else None (CPU-only machines)."""
    try:
        import cupy  # noqa: PLC0415 - optional (gpu extra); absent or unloadable on CPU hosts
    except Exception:  # ImportError, or a CUDA runtime that fails to load
        return None
    return cupy


def array_module(x: Any) -> ModuleType:
    """``cupy`` for CuPy arrays, ``numpy`` for everything else."""
    if type(x).__module__.startswith("cupy"):
        cp = cupy_or_none()
        if cp is not None:
            return cp
    return np
