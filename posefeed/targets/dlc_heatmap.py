"""DeepLabCut 3.x heatmap + location-refinement targets, vectorised (no Python loops)."""
from __future__ import annotations

import math
from enum import Enum
from typing import Any, Mapping

import numpy as np

from posefeed.targets._common import (
    Array,
    as_keypoints,
    broadcast_binary,
    dlc_cell_centres,
    gather2d,
    heatmap_argmax,
    outer_product_maps,
    size_pair,
    split_keypoints,
    to_backend,
)
from posefeed.targets import kernels
from posefeed.targets.base import Codec

_BIG = 1.0e7  # coordinates are clipped to +-_BIG px before window arithmetic (never drawn there)


class DLCMode(str, Enum):
    """DeepLabCut's heatmap modes (its ``HeatmapGenerator.Mode``); a ``str`` enum, so
    ``DLCMode.PLATEAU == "plateau"`` and the strings keep working as arguments."""

    GAUSSIAN = "gaussian"   # max_n exp(-d^2 / (2 sigma^2)) over the full map
    PLATEAU = "plateau"     # 1 inside the disk d <= pos_dist_thresh, else 0


def _zero_cells(flat: Array, prev: dict, channels: int, hw: int, fresh: bool) -> None:
    """Zero a sparse output (flattened ``(B, K, channels, H, W)``) before its cells are
    written: nothing to do when freshly allocated (zeros), only the previous call's cells
    when the memo has them, else the whole array."""
    if fresh:
        return
    if "cells" in prev:
        pm, pp = prev["cells"]
        if pm.size:
            base = pm * (channels * hw) + pp
            for ch in range(channels):  # 1 or 2
                flat[base + ch * hw] = 0.0
    else:
        flat.fill(0.0)


class DLCHeatmap(Codec):
    r"""DeepLabCut 3.x ``HeatmapGaussianGenerator`` / ``HeatmapPlateauGenerator`` targets.

    Grid: cell ``(i, j)`` of the ``(W, H)`` map has centre ``gx = int(j*stride + stride/2)``,
    ``gy = int(i*stride + stride/2)`` in input pixels; DLC writes the float into an integer
    ``np.mgrid`` array, so the value is *truncated* (stride 3: 1, 4, 7, ...). With the
    distance threshold :math:`t` (``pos_dist_thresh``, px), :math:`\sigma = 2t/3` and
    :math:`d^2 = (g_x - x)^2 + (g_y - y)^2`:

    * ``mode="gaussian"``: ``heatmap = max_n exp(-d^2 / (2 sigma^2))`` over the full map;
    * ``mode="plateau"``: ``heatmap = 1`` where ``d^2 <= t^2`` for some instance, else 0.
    * ``locref`` channel ``2k`` is ``(x - gx) / locref_std``, ``2k+1`` is
      ``(y - gy) / locref_std``; ``locref_weight`` (both channels) is 1 where
      ``d^2 <= t^2`` for some instance, else 0.

    Overlapping individuals (DLC's loop order, reproduced exactly): the heatmap and the mask
    take the max / union over instances, and the locref value comes from the **last**
    instance (highest index ``n``) that writes it. In gaussian mode DLC writes the locref of
    every visible instance over the *whole* map, so the last visible instance wins
    everywhere (also outside the mask, where the weight is 0); in plateau mode each instance
    writes only inside its own disk, so on overlaps the last instance wins and outside all
    disks the locref is 0.

    Visibility ``v`` (DLC): ``v > 0`` draws; ``v == -1`` sets ``heatmap_weight`` to 0 on the
    whole map of that keypoint (for that sample, whatever the other instances are);
    ``v == 0`` (missing / padding) draws nothing and leaves the weight at 1. Note: DLC's
    current source also zeroes the weight for ``v == 0``; posefeed pads instances with
    ``v = 0`` rows, under which that rule would mute every keypoint of a frame with fewer
    than ``N`` animals, so it is off by default (``zero_weight_unlabeled=True`` turns it on).
    NaN coordinates never draw.

    Cost (NumPy): every dense output element is written once (sparse outputs: zeroed
    memory, then their cells). The Gaussian map is an outer product of per-axis
    exponentials written straight into the output (``N > 1`` needs an ``N``-times temporary
    before the max); both locref channels come from one broadcast sum of a row and a column;
    these dense writes go through torch's vectorised kernels on the NumPy buffers (same
    float32 values, 1.5-3x faster than NumPy's broadcasting loops). Masks and plateaus are
    scattered from a window of ``ceil((2t+1)/stride) + 4`` cells around each keypoint. At
    large maps the cost is the memory written: fresh outputs also pay the page faults of new
    memory, which ``encode(..., out=buffers)`` and :meth:`encoder` (kept buffers, which also
    rewrite only the changed weight maps and mask / plateau cells) avoid; the DALI adapter
    uses the latter on the CPU. CuPy input uses one fused kernel (``posefeed.targets.kernels``).

    Args:
        stride: input pixels per heatmap cell (may be odd or fractional).
        heatmap_size: heatmap ``(W, H)`` in cells (DLC takes it from the model output).
        mode: `DLCMode` (or its value, ``"gaussian"`` or ``"plateau"``).
        pos_dist_thresh: :math:`t` in input pixels (DLC default 17).
        locref_std: locref scale in input pixels (DLC default 7.2801).
        locref: also produce ``locref`` / ``locref_weight``.
        zero_weight_unlabeled: DLC's ``v == 0`` -> weight 0 rule (see above).
        use_kernel: on CuPy input use the fused CUDA kernel (``False`` forces the vectorised
            CuPy path).
    """

    name = "dlc"

    def __init__(
        self,
        stride: float,
        heatmap_size: tuple[int, int],
        mode: DLCMode | str = DLCMode.GAUSSIAN,
        pos_dist_thresh: float = 17,
        locref_std: float = 7.2801,
        locref: bool = True,
        zero_weight_unlabeled: bool = False,
        use_kernel: bool = True,
    ) -> None:
        self.stride = float(stride)
        if self.stride <= 0:
            raise ValueError(f"stride must be positive; got {stride!r}")
        self.heatmap_size = size_pair(heatmap_size, "heatmap_size")
        if mode not in tuple(DLCMode):
            raise ValueError(f"mode must be 'gaussian' or 'plateau'; got {mode!r}")
        self.mode = DLCMode(mode)
        self.pos_dist_thresh = float(pos_dist_thresh)
        self.std = 2.0 * self.pos_dist_thresh / 3.0
        self.locref_std = float(locref_std)
        self.locref_scale = 1.0 / self.locref_std
        self.locref = bool(locref)
        self.zero_weight_unlabeled = bool(zero_weight_unlabeled)
        self.use_kernel = bool(use_kernel)
        self.grid_x, self.grid_y = dlc_cell_centres(self.heatmap_size, self.stride)

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.locref:
            return ("heatmap", "heatmap_weight", "locref", "locref_weight")
        return ("heatmap", "heatmap_weight")

    def __repr__(self) -> str:
        return (f"DLCHeatmap(stride={self.stride}, heatmap_size={self.heatmap_size}, mode={self.mode.value!r}, "
                f"pos_dist_thresh={self.pos_dist_thresh}, locref_std={self.locref_std}, locref={self.locref})")

    # ------------------------------------------------------------------ encode
    def _prepare(self, keypoints: Array) -> tuple[Any, Array, Array, Array, Array]:
        xp, x, y, v = split_keypoints(keypoints)
        vis = v > 0
        ignore = v == -1
        if self.zero_weight_unlabeled:
            ignore = ignore | (v == 0)
        weight = (~ignore.any(axis=1)).astype(xp.float32)  # (B, K)
        return xp, x, y, vis, weight

    def output_shapes(self, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
        w, h = self.heatmap_size
        b, k = int(batch_size), int(num_keypoints)
        shapes = {"heatmap": (b, k, h, w), "heatmap_weight": (b, k, h, w)}
        if self.locref:
            shapes["locref"] = (b, 2 * k, h, w)
            shapes["locref_weight"] = (b, 2 * k, h, w)
        return shapes

    def encode(self, keypoints: Array, out: Mapping[str, Array] | None = None) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` in input pixels -> ``heatmap (B, K, H, W)``,
        ``heatmap_weight (B, K, H, W)`` and, with ``locref``, ``locref (B, 2K, H, W)``,
        ``locref_weight (B, 2K, H, W)``; float32, same array module as the input.

        ``out``: arrays to write into (every element is written; shapes from
        :meth:`output_shapes`); returned in place of fresh ones."""
        return self._encode(keypoints, out, None)

    def _encode_reusing(self, keypoints: Array, out: dict[str, Array], memo: dict) -> dict[str, Array]:
        return self._encode(keypoints, out, memo)

    def _encode(self, keypoints: Array, out: Mapping[str, Array] | None, memo: dict | None) -> dict[str, Array]:
        # memo (BufferedEncoder): what the previous call wrote into ``out`` -- the per-map
        # weights and the sparse cells (mask disks, plateau disks); empty = unknown contents.
        xp, kp = as_keypoints(keypoints)
        b, n, k = kp.shape[:3]
        w, h = self.heatmap_size
        prev = {}
        if memo is not None:
            prev = dict(memo)
            memo.clear()  # stays empty if anything below raises: the next call rewrites all
        if self.use_kernel and xp.__name__ == "cupy":
            dst = None if out is None else self._check_out(xp, out, b, k)
            return kernels.dlc_targets(self, kp, out=dst)  # writes every element
        if out is not None:
            dst = self._check_out(xp, out, b, k)
            fresh = False
        else:
            dst = self._allocate(xp, b, k)
            fresh = True
        xp, x, y, vis, weight = self._prepare(kp)
        gx = xp.asarray(self.grid_x, dtype=xp.float64)
        gy = xp.asarray(self.grid_y, dtype=xp.float64)
        x64 = x.astype(xp.float64)
        y64 = y.astype(xp.float64)
        plateau = self.mode is DLCMode.PLATEAU
        hw_ = h * w
        new_memo: dict[str, Any] = {}
        if plateau or self.locref:  # the disks: instance (b, n, k) and cell of each
            inst, cp_ = self._support(xp, x64, y64, vis, gx, gy)
            cm = inst if n == 1 else (inst // (n * k)) * k + inst % k  # map (b, k) of each cell
            new_memo["cells"] = (cm, cp_)

        # heatmap_weight: one value per map
        hwt = dst["heatmap_weight"]
        if "weight" in prev:
            cb, ck = xp.nonzero(prev["weight"] != weight)
            if cb.size:
                hwt[cb, ck] = weight[cb, ck][:, None, None]
        else:
            xp.copyto(hwt, weight[:, :, None, None])
        new_memo["weight"] = weight

        # heatmap
        hm = dst["heatmap"]
        if not plateau:
            c = 1.0 / (2.0 * self.std * self.std)
            far = xp.where(vis, 0.0, xp.inf)[..., None]  # exp(-inf) = 0: hidden keypoints draw nothing
            dx = gx - x64[..., None] + far
            dy = gy - y64[..., None] + far
            ex = xp.exp(-(dx * dx) * c).astype(xp.float32)
            ey = xp.exp(-(dy * dy) * c).astype(xp.float32)
            if n == 1:
                outer_product_maps(xp, ey[:, 0], ex[:, 0], out=hm)
            else:  # (B, N, K, H, W) temporary, then the max over instances written once
                xp.max(ey[..., :, None] * ex[..., None, :], axis=1, out=hm)
        else:
            flat = hm.reshape(-1)
            _zero_cells(flat, prev, 1, hw_, fresh)
            flat[cm * hw_ + cp_] = 1.0
        if self.locref:
            # locref_weight: the union of the disks, both channels
            flat = dst["locref_weight"].reshape(-1)
            _zero_cells(flat, prev, 2, hw_, fresh)
            idx = cm * (2 * hw_) + cp_
            flat[idx] = 1.0  # one channel after the other (interleaving them is 4x slower)
            flat[idx + hw_] = 1.0
            scale = self.locref_scale
            if not plateau:
                # the last visible instance writes the whole map
                loc = dst["locref"].reshape(b, k, 2, h, w)
                if n == 1:
                    has, xl, yl = vis[:, 0], x64[:, 0], y64[:, 0]
                else:
                    last = xp.where(vis, xp.arange(n)[None, :, None], -1).max(axis=1)  # (B, K)
                    has = last >= 0
                    sel = xp.clip(last, 0, None)[:, None, :]
                    xl = xp.take_along_axis(x64, sel, axis=1)[:, 0]
                    yl = xp.take_along_axis(y64, sel, axis=1)[:, 0]
                # channel 0 varies along W only, channel 1 along H only: one broadcast sum
                # of a (B, K, 2, 1, W) row [lx, 0] and a (B, K, 2, H, 1) column [0, ly]
                # writes both (v + 0 == v exactly)
                rows_ = xp.zeros((b, k, 2, 1, w), dtype=xp.float32)
                cols_ = xp.zeros((b, k, 2, h, 1), dtype=xp.float32)
                rows_[:, :, 0, 0] = xp.where(has[..., None], (xl[..., None] - gx) * scale, 0.0)
                cols_[:, :, 1, :, 0] = xp.where(has[..., None], (yl[..., None] - gy) * scale, 0.0)
                broadcast_binary(xp, "add", rows_, cols_, loc)
            else:
                # inside each disk; on overlaps the highest instance index wins; 0 elsewhere
                flat = dst["locref"].reshape(-1)
                _zero_cells(flat, prev, 2, hw_, fresh)
                ni = (inst // k) % n
                order = xp.argsort((cm * hw_ + cp_) * n + ni)
                cs = (cm * hw_ + cp_)[order]
                lastw = xp.ones(cs.shape, dtype=bool)
                if cs.size:
                    lastw[:-1] = cs[1:] != cs[:-1]
                s_ = order[lastw]
                ps = cp_[s_]
                idx = cm[s_] * (2 * hw_) + ps
                flat[idx] = ((x64.reshape(-1)[inst[s_]] - gx[ps % w]) * scale).astype(xp.float32)
                flat[idx + hw_] = ((y64.reshape(-1)[inst[s_]] - gy[ps // w]) * scale).astype(xp.float32)
        if memo is not None:
            memo.update(new_memo)
        return dst

    def _allocate(self, xp: Any, b: int, k: int) -> dict[str, Array]:
        """Fresh outputs: ``empty`` for the maps every element of which is written, ``zeros``
        (calloc'd pages) for the sparse ones."""
        shapes = self.output_shapes(b, k)
        sparse = {"locref_weight"} | ({"heatmap", "locref"} if self.mode is DLCMode.PLATEAU else set())
        return {name: (xp.zeros if name in sparse else xp.empty)(shapes[name], dtype=xp.float32)
                for name in self.output_names}

    def _support(self, xp: Any, x64: Array, y64: Array, vis: Array, gx: Array, gy: Array):
        """Cells with ``d^2 <= t^2`` for each visible instance, as two index arrays: the
        instance (flat ``(b, n, k)`` index) and the cell (``row * W + col``). Only a window
        of ``ceil((2t+1)/stride) + 4`` cells around each keypoint is tested (the disk cannot
        reach further: gx >= j*s + s/2 - 1)."""
        w, h = self.heatmap_size
        s, t = self.stride, self.pos_dist_thresh
        span = int(math.ceil((2 * t + 1) / s)) + 4
        sw, sh = min(span, w), min(span, h)
        xc = xp.clip(x64, -_BIG, _BIG)
        yc = xp.clip(y64, -_BIG, _BIG)
        c0 = xp.clip(xp.floor((xc - t) / s - 0.5) - 1, 0, w - sw).astype(xp.int64)
        r0 = xp.clip(xp.floor((yc - t) / s - 0.5) - 1, 0, h - sh).astype(xp.int64)
        cols = c0[..., None] + xp.arange(sw)  # (B, N, K, sw)
        rows = r0[..., None] + xp.arange(sh)
        dx = gx[cols] - x64[..., None]
        dy = xp.where(vis[..., None], gy[rows] - y64[..., None], xp.inf)  # inf: never inside
        m = (dy * dy)[..., :, None] + (dx * dx)[..., None, :] <= t * t
        hit = xp.flatnonzero(m)  # flat (b, n, k, i, j) of each cell inside a disk
        inst, cell = xp.divmod(hit, sh * sw)
        i, j = xp.divmod(cell, sw)
        pos = (r0.reshape(-1)[inst] + i) * w + c0.reshape(-1)[inst] + j
        return inst, pos

    # ------------------------------------------------------------------ decode
    def decode(self, heatmap: Any, locref: Any = None, dlc_grid: bool = False) -> tuple[Any, Any]:
        """``heatmap (..., K, H, W)`` and optionally ``locref (..., 2K, H, W)`` (NumPy, CuPy
        or torch; apply the sigmoid first if the model outputs logits) -> ``keypoints
        (..., K, 2)`` in input pixels and ``scores (..., K)`` (the heatmap maxima).

        ``x = gx[argmax] + locref_x * locref_std`` (likewise y). ``gx`` is the encoder's
        truncated grid, so encode -> decode is exact up to float32 rounding for every
        stride; DLC's predictor uses ``argmax*stride + stride/2`` instead, which differs by
        0.5 px for odd strides (``dlc_grid=True`` reproduces it)."""
        xp, (hm, lr), wrap = to_backend(heatmap, locref)
        hm = hm.astype(xp.float32)
        col, row, score = heatmap_argmax(xp, hm)
        s = self.stride
        if dlc_grid:
            px = col.astype(xp.float32) * xp.float32(s) + xp.float32(s / 2)
            py = row.astype(xp.float32) * xp.float32(s) + xp.float32(s / 2)
        else:
            px = xp.asarray(self.grid_x, dtype=xp.float32)[col]
            py = xp.asarray(self.grid_y, dtype=xp.float32)[row]
        if lr is not None:
            lr = lr.astype(xp.float32)
            *lead, c2, h, w = lr.shape
            lr = lr.reshape(*lead, c2 // 2, 2, h, w)
            std = xp.float32(self.locref_std)
            px = px + gather2d(xp, lr[..., 0, :, :], row, col) * std
            py = py + gather2d(xp, lr[..., 1, :, :], row, col) * std
        kp = xp.stack([px, py], axis=-1).astype(xp.float32)
        return wrap(kp), wrap(score)
