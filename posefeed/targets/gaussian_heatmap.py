"""MSRA Gaussian heatmaps (MMPose ``MSRAHeatmap``), with MMPose's decoders incl. DARK."""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from posefeed.targets._common import Array, gather2d, modulate_blur, msra_patch, patch_weight
from posefeed.targets._heatmap_base import GaussianHeatmapBase, GaussianMode


def refine_quarter(xp: Any, heatmaps: Array, col: Array, row: Array) -> tuple[Array, Array]:
    """MMPose ``refine_keypoints``: move 0.25 cell toward the larger neighbour, with
    MMPose's exact guards (x step when ``1 < x < W-1 and 0 < y < H``; y step when
    ``1 < y < H-1 and 0 < x < W``). Returns float32 ``(x, y)`` in cells."""
    h, w = heatmaps.shape[-2:]
    x = col.astype(xp.float32)
    y = row.astype(xp.float32)
    okx = (col > 1) & (col < w - 1) & (row > 0) & (row < h)
    oky = (row > 1) & (row < h - 1) & (col > 0) & (col < w)
    dx = gather2d(xp, heatmaps, row, col + 1) - gather2d(xp, heatmaps, row, col - 1)
    dy = gather2d(xp, heatmaps, row + 1, col) - gather2d(xp, heatmaps, row - 1, col)
    x = x + xp.where(okx, xp.sign(dx).astype(xp.float32) * xp.float32(0.25), xp.float32(0))
    y = y + xp.where(oky, xp.sign(dy).astype(xp.float32) * xp.float32(0.25), xp.float32(0))
    return x, y


def refine_dark(xp: Any, heatmaps: Array, col: Array, row: Array, ksize: int) -> tuple[Array, Array]:
    """MMPose ``refine_keypoints_dark`` (DARK, Zhang et al. 2020), vectorised: blur
    (``modulate_blur``), ``log(max(hm, 1e-10))``, then one Newton step
    ``offset = -H^{-1} grad`` from central differences (step 1 for the gradient, 2 for the
    second derivatives), applied when ``1 < x < W-2 and 1 < y < H-2`` and ``det H != 0``.
    Computed in float64. Returns float32 ``(x, y)`` in cells."""
    h, w = heatmaps.shape[-2:]
    hm = xp.log(xp.maximum(modulate_blur(xp, heatmaps, ksize), xp.float32(1e-10))).astype(xp.float64)

    def at(dr: int, dc: int) -> Array:
        return gather2d(xp, hm, row + dr, col + dc)

    c0 = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * c0 + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * c0 + at(-2, 0))
    det = dxx * dyy - dxy * dxy
    ok = (col > 1) & (col < w - 2) & (row > 1) & (row < h - 2) & (det != 0)
    sdet = xp.where(det != 0, det, 1.0)
    ox = -(dyy * dx - dxy * dy) / sdet
    oy = -(-dxy * dx + dxx * dy) / sdet
    x = col.astype(xp.float64) + xp.where(ok, ox, 0.0)
    y = row.astype(xp.float64) + xp.where(ok, oy, 0.0)
    return x.astype(xp.float32), y.astype(xp.float32)


class GaussianHeatmap(GaussianHeatmapBase):
    r"""MSRA Gaussian heatmaps (MMPose ``MSRAHeatmap``; SimpleBaseline / HRNet).

    A keypoint ``(x, y)`` in input pixels maps to heatmap cells by dividing by the stride
    ``s = input_size / heatmap_size`` (per axis, float32 as MMPose). With
    :math:`R = 3\sigma`:

    * ``unbiased=False`` (default): centre :math:`\mu = \lfloor k/s + 0.5 \rfloor` (C-style
      truncation toward zero, as ``astype(int64)``), a patch of columns
      ``[trunc(mu - R), trunc(mu + R + 1))`` whose peak (value 1) sits at
      ``left + floor((2R+1)/2)`` (= mu for integer R). Value
      :math:`\exp(-((j-c_x)^2 + (i-c_y)^2) / (2\sigma^2))` inside the patch, 0 outside.
      Weight 0 (nothing drawn) when the patch is off the map, with MMPose's exact test
      ``left >= W or top >= H or right < 0 or bottom < 0`` (so a patch ending exactly at
      the left/top edge, ``right == 0``, draws nothing but keeps weight 1, as in MMPose).
    * ``unbiased=True``: float centre :math:`\mu = k/s` over the full map (DARK's unbiased
      encoding); weight 0 when ``mu - R >= W or mu + R + 1 < 0`` (either axis).

    Visibility: ``visible = clip(v, 0, 1)``; ``visible < 0.5`` draws nothing and keeps weight
    ``visible`` (0 for v <= 0). Instances merge by max; ``keypoint_weight`` is the max of the
    instance weights (1 if any instance with v > 0 draws, else 0).

    Args:
        input_size: network input ``(w, h)`` in pixels.
        heatmap_size: heatmap ``(W, H)`` in cells.
        sigma: Gaussian standard deviation in heatmap cells.
        unbiased: float-centre full-map encoding (and DARK decoding by default).
        blur_kernel_size: DARK modulation kernel (11 for sigma 2, 17 for sigma 3).
        use_kernel: on CuPy input, use the fused CUDA kernel (``False`` forces the
            vectorised CuPy path).
    """

    name = "heatmap"

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        sigma: float = 2.0,
        unbiased: bool = False,
        blur_kernel_size: int = 11,
        use_kernel: bool = True,
    ) -> None:
        super().__init__(input_size, heatmap_size, sigma, blur_kernel_size, use_kernel)
        self.unbiased = bool(unbiased)
        self.scale_factor = (np.asarray(self.input_size, dtype=np.float64)
                             / np.asarray(self.heatmap_size)).astype(np.float32)

    @property
    def kernel_mode(self) -> GaussianMode:
        return GaussianMode.UNBIASED if self.unbiased else GaussianMode.MSRA

    def __repr__(self) -> str:
        return (f"GaussianHeatmap(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
                f"sigma={self.sigma}, unbiased={self.unbiased})")

    # ------------------------------------------------------------------ encode
    def instance_params(self, keypoints: Array) -> tuple[Any, dict[str, Array], Array]:
        """Per-instance drawing parameters ``(B, N, K)`` (see the base class): the MSRA patch,
        or with ``unbiased`` the full map around the float centre."""
        xp, kx, ky, draw, vis = self._cells(keypoints)
        if self.unbiased:
            w, h = self.heatmap_size
            r = 3.0 * self.sigma
            fx, fy = kx.astype(xp.float64), ky.astype(xp.float64)
            off = (fx - r >= w) | (fy - r >= h) | (fx + r + 1 < 0) | (fy + r + 1 < 0)
            zeros = xp.zeros(kx.shape, dtype=xp.int64)
            p = dict(cx=kx, cy=ky, x_lo=zeros, x_hi=zeros + w, y_lo=zeros, y_hi=zeros + h,
                     on=draw & ~off)
            weight = patch_weight(xp, draw & off, vis)
        else:
            p, weight = msra_patch(xp, kx, ky, self.sigma, self.heatmap_size, draw, vis)
        return xp, p, weight

    # ------------------------------------------------------------------ decode
    def decode(self, heatmap: Any, dark: bool | None = None) -> tuple[Any, Any]:
        """``heatmap (..., K, H, W)`` (NumPy, CuPy or torch) -> ``keypoints (..., K, 2)`` in
        input pixels and ``scores (..., K)`` (the map maxima), same kind as the input.

        Argmax, then MMPose's refinement in heatmap cells: the 0.25-cell shift toward the
        larger neighbour (``dark=False``) or DARK (``dark=True``: Taylor expansion on the log
        of the Gaussian-blurred map); ``dark=None`` uses DARK iff ``unbiased``. Cells are
        multiplied by the stride. Where the maximum is <= 0 the location is -1 (MMPose
        returns -1 * stride there).
        """
        use_dark = self.unbiased if dark is None else bool(dark)
        refine = partial(refine_dark, ksize=self.blur_kernel_size) if use_dark else refine_quarter
        return self._decode(heatmap, refine, self.scale_factor)

    def decode_dark(self, heatmap: Any) -> tuple[Any, Any]:
        """``decode(heatmap, dark=True)``."""
        return self.decode(heatmap, dark=True)
