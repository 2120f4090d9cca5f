"""UDP Gaussian heatmaps (MMPose ``UDPHeatmap``, ``heatmap_type='gaussian'``)."""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from posefeed.targets._common import Array, modulate_blur, msra_patch
from posefeed.targets._heatmap_base import GaussianHeatmapBase, GaussianMode


def refine_dark_udp(xp: Any, heatmaps: Array, col: Array, row: Array, ksize: int) -> tuple[Array, Array]:
    """MMPose ``refine_keypoints_dark_udp``, vectorised: blur (``modulate_blur``), clip to
    [1e-3, 50], log, edge-pad by 1, then one Newton step with unit-step central
    differences and ``H + eps*I`` (float32 eps) inverted. Returns float32 ``(x, y)`` cells.

    MMPose indexes the flattened padded stack, so a maximum at the map border reads the
    edge-replicated padding (same here); for a location of -1 (empty map) MMPose reads
    neighbouring maps — posefeed leaves those at -1 instead."""
    h, w = heatmaps.shape[-2:]
    hm = xp.log(xp.clip(modulate_blur(xp, heatmaps, ksize), 1e-3, 50.0)).astype(xp.float32)
    lead = hm.shape[:-2]
    pad = xp.pad(hm, [(0, 0)] * len(lead) + [(1, 1), (1, 1)], mode="edge")
    flat = pad.reshape(*lead, (h + 2) * (w + 2))
    base = (row + 1) * (w + 2) + (col + 1)

    def at(d: int) -> Array:
        idx = xp.clip(base + d, 0, (h + 2) * (w + 2) - 1)
        return xp.take_along_axis(flat, idx[..., None], axis=-1)[..., 0].astype(xp.float64)

    i_ = at(0)
    ix1, ix1_ = at(1), at(-1)
    iy1, iy1_ = at(w + 2), at(-(w + 2))
    ix1y1, ix1_y1_ = at(w + 3), at(-(w + 3))
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    eps = float(np.finfo(np.float32).eps)
    a, d = dxx + eps, dyy + eps
    det = a * d - dxy * dxy
    sdet = xp.where(det != 0, det, 1.0)
    ox = (d * dx - dxy * dy) / sdet
    oy = (-dxy * dx + a * dy) / sdet
    ok = (det != 0) & (col >= 0) & (row >= 0)
    x = col.astype(xp.float64) - xp.where(ok, ox, 0.0)
    y = row.astype(xp.float64) - xp.where(ok, oy, 0.0)
    return x.astype(xp.float32), y.astype(xp.float32)


class UDPHeatmap(GaussianHeatmapBase):
    r"""Unbiased Data Processing heatmaps (Huang et al. 2020; MMPose ``UDPHeatmap``).

    The scale is measured between the first and last pixel centres: ``s = (w - 1)/(W - 1)``
    per axis (float32), so keypoint ``k`` maps to ``k/s`` cells. MMPose's 'gaussian'
    encoding: ``mu = int(k/s + 0.5)`` (truncation), a ``(2R+1)``-cell patch around ``mu``
    (``R = 3 sigma``; columns ``[int(mu - R), int(mu + R + 1))``) holding a Gaussian with the
    *float* centre ``k/s``; weight 0 (nothing drawn) when the patch is off the map with
    MMPose's test ``left >= W or top >= H or right < 0 or bottom < 0`` (``right == 0``
    draws nothing but keeps weight 1, as in MMPose). Visibility, instance merging
    and weights as :class:`GaussianHeatmap`.

    Decoding: argmax, then UDP's DARK step (``refine_dark_udp``), then cells * scale.
    MMPose's decoder multiplies by ``w/(W-1)`` instead of ``(w-1)/(W-1)`` (so it does not
    invert its own encoder; 0.5% off); ``mmpose_decode_scale=True`` reproduces it.

    Args:
        input_size: network input ``(w, h)`` in pixels.
        heatmap_size: heatmap ``(W, H)`` in cells (each >= 2).
        sigma: Gaussian standard deviation in cells.
        blur_kernel_size: DARK modulation kernel size (odd).
        mmpose_decode_scale: see above.
        use_kernel: on CuPy input use the fused CUDA kernel.
    """

    name = "udp_heatmap"
    min_heatmap_size = 2        # the stride (w - 1) / (W - 1) needs two cells

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        sigma: float = 2.0,
        blur_kernel_size: int = 11,
        mmpose_decode_scale: bool = False,
        use_kernel: bool = True,
    ) -> None:
        super().__init__(input_size, heatmap_size, sigma, blur_kernel_size, use_kernel)
        self.mmpose_decode_scale = bool(mmpose_decode_scale)
        self.scale_factor = ((np.asarray(self.input_size, dtype=np.float64) - 1)
                             / (np.asarray(self.heatmap_size) - 1)).astype(np.float32)

    @property
    def kernel_mode(self) -> GaussianMode:
        return GaussianMode.UDP

    def __repr__(self) -> str:
        return f"UDPHeatmap(input_size={self.input_size}, heatmap_size={self.heatmap_size}, sigma={self.sigma})"

    def instance_params(self, keypoints: Array) -> tuple[Any, dict[str, Array], Array]:
        """Per-instance drawing parameters, as :meth:`GaussianHeatmap.instance_params`."""
        xp, kx, ky, draw, vis = self._cells(keypoints)
        p, weight = msra_patch(xp, kx, ky, self.sigma, self.heatmap_size, draw, vis,
                               subpixel=True)
        return xp, p, weight

    def decode(self, heatmap: Any) -> tuple[Any, Any]:
        """``heatmap (..., K, H, W)`` (NumPy, CuPy or torch) -> ``keypoints (..., K, 2)`` in
        input pixels and ``scores (..., K)``; -1 where the map maximum is <= 0."""
        if self.mmpose_decode_scale:
            w, h = self.heatmap_size
            stride = (self.input_size[0] / (w - 1), self.input_size[1] / (h - 1))
        else:
            stride = (float(self.scale_factor[0]), float(self.scale_factor[1]))
        return self._decode(heatmap, partial(refine_dark_udp, ksize=self.blur_kernel_size),
                            stride)
