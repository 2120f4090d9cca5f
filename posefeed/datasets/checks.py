"""Checks shared by the loaders: non-finite coordinates (fatal) and keypoints outside the
image (flagged in ``problems`` and set to ``v = 0``, ``x = y = 0``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from posefeed.datasets.errors import AnnotationError


def check_finite(values: np.ndarray, rows: Sequence[object], fields: Sequence[str],
                 source: str | Path) -> None:
    """Raise on the first ``inf`` in ``values (N, F)`` naming the row and field (NaN is fine:
    it means "not labelled")."""
    bad = np.isinf(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise AnnotationError(f"infinite coordinate {values[i, j]}", file=source,
                              row=rows[i], field=fields[j])


def clear_outside(keypoints: np.ndarray, sizes: np.ndarray, rows: Sequence[object],
                  individuals: Sequence[str], bodyparts: Sequence[str],
                  source: str | Path) -> tuple[np.ndarray, list[str]]:
    """Set keypoints outside their image to ``(0, 0, 0)``; one problem line each.

    ``keypoints (N, K, 3)`` pixels (pixel-centre origin, so an image of width W spans
    ``[-0.5, W - 0.5]``), ``sizes (N, 2)`` (width, height).
    """
    kp = np.array(keypoints, dtype=np.float64, copy=True)
    w = sizes[:, 0:1].astype(np.float64)
    h = sizes[:, 1:2].astype(np.float64)
    x, y = kp[..., 0], kp[..., 1]
    outside = (kp[..., 2] > 0) & ((x < -0.5) | (y < -0.5) | (x > w - 0.5) | (y > h - 0.5))
    problems = []
    for i, k in np.argwhere(outside):
        problems.append(
            f"{source}: row {rows[i]!r} (individual {individuals[i]!r}), bodypart "
            f"{bodyparts[k]!r} at ({x[i, k]:.2f}, {y[i, k]:.2f}) is outside the "
            f"{int(w[i, 0])}x{int(h[i, 0])} image; set to v=0")
    kp[outside] = 0.0
    return kp, problems
