"""Optional compiled CPU kernels (numba), for the codecs whose NumPy version is bound by the
number of NumPy calls rather than by the elements written.

numba is not a core dependency: ``pip install "posefeed[cpu]"`` adds it, and DeepLabCut 3
depends on it, so every DeepLabCut user has it. A codec with a compiled kernel uses it when
numba imports (``kernel="auto"``) and its vectorised NumPy version otherwise; the two give the
same outputs (the tests compare them). Kernels are compiled on first use (a few seconds, once:
``cache=True`` keeps the machine code on disk beside the module, or in numba's user cache
when that folder is read-only) and release the GIL while they run (``nogil``), so DALI's and
the loader's threads keep running beside them.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable


def numba_or_none() -> ModuleType | None:
    """numba when it is installed and imports, else None."""
    try:
        import numba  # noqa: PLC0415 - optional (cpu extra); absent on a minimal install
    except Exception:  # ImportError, or an llvmlite that fails to load
        return None
    return numba


def cpu_kernel(fn: Callable[..., Any]) -> Callable[..., Any] | None:
    """``fn`` compiled by numba (nopython mode, GIL released, cached on disk), or None
    without numba (the caller then runs its NumPy version)."""
    nb = numba_or_none()
    if nb is None:
        return None
    return nb.njit(cache=True, nogil=True)(fn)


def use_kernel(kernel: str) -> bool:
    """Whether to run the compiled kernel for ``kernel`` = "auto" (when numba imports),
    "numba" (required: ImportError without it) or "numpy" (never)."""
    if kernel == "numpy":
        return False
    have = numba_or_none() is not None
    if kernel == "numba" and not have:
        raise ImportError('kernel="numba" needs numba: pip install "posefeed[cpu]"')
    if kernel not in ("auto", "numba"):
        raise ValueError(f'kernel must be "auto", "numba" or "numpy", not {kernel!r}')
    return have
