"""Test oracles: direct per-element loops written from other projects' rules (here
DeepLabCut 3.0.2's multi-animal target generators), independent of posefeed's vectorised
code. Slow by design: keep the maps small."""
from __future__ import annotations

import math

import numpy as np


def dlc_grid(size: tuple[int, int], stride: float) -> tuple[np.ndarray, np.ndarray]:
    """DeepLabCut's cell centres: ``np.mgrid`` (int) times stride plus stride / 2, assigned
    back into the int array (truncated). Returns ``(gx (W,), gy (H,))`` int64."""
    w, h = size
    grid = np.mgrid[:h, :w].transpose((1, 2, 0))
    grid[:, :, 0] = grid[:, :, 0] * stride + stride / 2
    grid[:, :, 1] = grid[:, :, 1] * stride + stride / 2
    return grid[0, :, 1].copy(), grid[:, 0, 0].copy()


def paf_loop(keypoints: np.ndarray, graph, stride: float, size: tuple[int, int],
             width: float = 20.0) -> np.ndarray:
    """``PartAffinityFieldGenerator.forward``, one cell at a time: for each sample, animal
    (in order), limb and cell, DLC's scalar expressions with NumPy 2 scalar promotion
    (float32 keypoints). ``keypoints (B, N, K, 3)`` -> ``paf (B, 2L, H, W)``. NaN
    coordinates are treated as missing (posefeed's rule; DLC never sees them)."""
    b_, n_, _, _ = keypoints.shape
    w, h = size
    gx, gy = dlc_grid(size, stride)
    out = np.zeros((b_, 2 * len(graph), h, w), np.float32)
    for b in range(b_):
        for n in range(n_):
            kp = keypoints[b, n]
            for li, (p, q) in enumerate(graph):
                ok = all(kp[i, 2] > 0 and np.isfinite(kp[i, 0]) and np.isfinite(kp[i, 1]) for i in (p, q))
                if not ok:
                    continue
                x1, y1 = kp[p, 0], kp[p, 1]  # np.float32 scalars
                x2, y2 = kp[q, 0], kp[q, 1]
                vx, vy = x2 - x1, y2 - y1
                # DLC writes vx**2 (the C library's powf for a NumPy scalar); posefeed and
                # this oracle use the correctly rounded square (see PartAffinityField)
                dist = math.sqrt(vx * vx + vy * vy)
                if not dist > 0:
                    continue
                ux, uy = vx / dist, vy / dist  # float32 (NEP 50: a Python float is weak)
                a1, a2 = ux * x1 + uy * y1, ux * x2 + uy * y2
                ortho = y1 * ux - x1 * uy
                for i in range(h):
                    for j in range(w):
                        x, y = np.int64(gx[j]), np.int64(gy[i])
                        along = ux * x + uy * y  # float64
                        across = ((y * ux - x * uy) - ortho) * 1.0 / width
                        if min(a1, a2) <= along <= max(a1, a2) and abs(across) <= 1:
                            t = 1 - abs(across)
                            out[b, 2 * li, i, j] = ux * t
                            out[b, 2 * li + 1, i, j] = uy * t
    return out
