"""Filling equal-width runs of a flat array at many starts in one call (the codecs clear the
previous call's sparse cells with it): NumPy writes through a strided view whose rows are the
runs, one contiguous copy per run instead of one indexed store per element (about 3x faster
than ``flat[idx] = 0`` for runs of 16 float32, measured on this 2-core VM); CuPy (no strided
trick needed) scatters the expanded indices."""
from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def fill_runs(xp: Any, flat: Array, starts: Array, width: int, value: Any) -> None:
    """``flat[s : s + width] = value`` for every ``s`` in ``starts`` (int64, each ``<=
    flat.size - width``; runs may overlap). ``value``: a scalar or an array broadcasting
    against ``(len(starts), width)``; overlapping runs must agree on their common cells."""
    if starts.size == 0 or width <= 0:
        return
    if xp is np:
        rows = np.lib.stride_tricks.as_strided(flat, shape=(flat.size - width + 1, width),
                                               strides=(flat.itemsize, flat.itemsize))
        rows[starts] = value
    else:
        idx = (starts[:, None] + xp.arange(width, dtype=xp.int64)[None, :]).reshape(-1)
        if isinstance(value, (int, float)):
            flat[idx] = value
        else:
            flat[idx] = xp.broadcast_to(value, (starts.size, width)).reshape(-1)
