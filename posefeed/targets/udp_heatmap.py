"""UDP Gaussian heatmaps (MMPose ``UDPHeatmap``, ``heatmap_type='gaussian'``)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from posefeed.targets._common import (
    Array,
    heatmap_argmax,
    mmpose_visibility,
    msra_patch,
    modulate_blur,
    size_pair,
    split_keypoints,
    to_backend,
)
from posefeed.targets.base import Codec
from posefeed.targets.gaussian_heatmap import encode_heatmap, heatmap_output_shapes


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


class UDPHeatmap(Codec):
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

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        sigma: float = 2.0,
        blur_kernel_size: int = 11,
        mmpose_decode_scale: bool = False,
        use_kernel: bool = True,
    ) -> None:
        self.input_size = size_pair(input_size, "input_size")
        self.heatmap_size = size_pair(heatmap_size, "heatmap_size")
        if min(self.heatmap_size) < 2:
            raise ValueError("UDP needs heatmap_size >= 2 on both axes")
        self.sigma = float(sigma)
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive; got {sigma!r}")
        self.blur_kernel_size = int(blur_kernel_size)
        self.mmpose_decode_scale = bool(mmpose_decode_scale)
        self.use_kernel = bool(use_kernel)
        self.scale_factor = ((np.asarray(self.input_size, dtype=np.float64) - 1)
                             / (np.asarray(self.heatmap_size) - 1)).astype(np.float32)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("heatmap", "keypoint_weight")

    def __repr__(self) -> str:
        return f"UDPHeatmap(input_size={self.input_size}, heatmap_size={self.heatmap_size}, sigma={self.sigma})"

    def instance_params(self, keypoints: Array) -> tuple[Any, dict[str, Array], Array]:
        """Per-instance drawing parameters, as :meth:`GaussianHeatmap.instance_params`."""
        xp, x, y, v = split_keypoints(keypoints)
        vis = mmpose_visibility(xp, v)
        draw = vis >= 0.5
        kx = x / xp.float32(self.scale_factor[0])
        ky = y / xp.float32(self.scale_factor[1])
        p, weight = msra_patch(xp, kx, ky, self.sigma, self.heatmap_size, draw, vis,
                               subpixel=True)
        return xp, p, weight

    def output_shapes(self, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
        return heatmap_output_shapes(self, batch_size, num_keypoints)

    def encode(self, keypoints: Array, out: Mapping[str, Array] | None = None) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` in input pixels -> ``heatmap (B, K, H, W)`` in [0, 1]
        and ``keypoint_weight (B, K)``, float32, same array module as the input (written
        into ``out``'s arrays when given)."""
        return encode_heatmap(self, keypoints, out, 2)

    def decode(self, heatmap: Any) -> tuple[Any, Any]:
        """``heatmap (..., K, H, W)`` (NumPy, CuPy or torch) -> ``keypoints (..., K, 2)`` in
        input pixels and ``scores (..., K)``; -1 where the map maximum is <= 0."""
        xp, (hm,), wrap = to_backend(heatmap)
        hm = hm.astype(xp.float32)
        col, row, score = heatmap_argmax(xp, hm)
        x, y = refine_dark_udp(xp, hm, col, row, self.blur_kernel_size)
        if self.mmpose_decode_scale:
            w, h = self.heatmap_size
            sx = self.input_size[0] / (w - 1)
            sy = self.input_size[1] / (h - 1)
        else:
            sx, sy = float(self.scale_factor[0]), float(self.scale_factor[1])
        kp = xp.stack([x * xp.float32(sx), y * xp.float32(sy)], axis=-1)
        kp = xp.where((score <= 0)[..., None], xp.float32(-1), kp).astype(xp.float32)
        return wrap(kp), wrap(score)
