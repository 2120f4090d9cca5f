"""What `GaussianHeatmap` and `UDPHeatmap` share: the outputs (``heatmap (B, K, H, W)``,
``keypoint_weight (B, K)``), ``encode`` (the fused CUDA kernel on CuPy, else per-instance
windows from ``instance_params`` drawn by `windowed_gaussian_max`) and the end of
``decode`` (argmax, a codec-specific refinement in cells, cells * stride in input pixels).

A subclass sets `kernel_mode`, implements ``instance_params`` (where each instance's
Gaussian goes) and its ``decode`` (which refinement, which stride), calling `_decode`.
"""
from __future__ import annotations

from abc import abstractmethod
from enum import IntEnum
from typing import Any, Callable, Mapping

import numpy as np

from posefeed.targets import kernels
from posefeed.targets._common import (Array, as_keypoints, heatmap_argmax, mmpose_visibility,
                                      outer_product_maps, size_pair, split_keypoints, to_backend)
from posefeed.targets.base import Codec


class GaussianMode(IntEnum):
    """How a Gaussian heatmap codec places its patch (the ``mode`` of the fused CUDA kernel
    in `posefeed.targets.kernels`, hence integers)."""

    MSRA = 0        # integer centre int(k/s + 0.5), (2R+1)-cell patch (MMPose MSRAHeatmap)
    UNBIASED = 1    # float centre k/s over the full map (DARK's unbiased encoding)
    UDP = 2         # (2R+1)-cell patch around int(k/s + 0.5), float centre (MMPose UDPHeatmap)


def windowed_gaussian_max(
    xp: Any,
    cx: Array, cy: Array,
    x_lo: Array, x_hi: Array, y_lo: Array, y_hi: Array,
    on: Array, size: tuple[int, int], sigma: float, out: Array | None = None,
) -> Array:
    """Max over instances of Gaussian patches, separably.

    Per instance ``(B, N, K)``: centre ``(cx, cy)`` in heatmap cells (float), a window of
    columns ``[x_lo, x_hi)`` and rows ``[y_lo, y_hi)`` (ints; the map is drawn only there)
    and a flag ``on``. Value at ``(i, j)``: ``exp(-((j-cx)^2 + (i-cy)^2) / (2 sigma^2))``,
    computed as ``exp(-(j-cx)^2/(2s^2)) * exp(-(i-cy)^2/(2s^2))`` (equal within 2 float32
    ulps). Returns ``(B, K, H, W)`` float32, written into ``out`` when given (the product
    goes straight into it for ``N = 1``; ``N > 1`` takes the max of an ``N``-times temporary).
    """
    w, h = size
    c = xp.float32(1.0 / (2.0 * sigma * sigma))
    j = xp.arange(w, dtype=xp.float32)
    i = xp.arange(h, dtype=xp.float32)
    dx = j - cx[..., None].astype(xp.float32)
    dy = i - cy[..., None].astype(xp.float32)
    ji = xp.arange(w)
    ii = xp.arange(h)
    inx = on[..., None] & (ji >= x_lo[..., None]) & (ji < x_hi[..., None])
    iny = on[..., None] & (ii >= y_lo[..., None]) & (ii < y_hi[..., None])
    ex = xp.where(inx, xp.exp(-(dx * dx) * c), xp.float32(0)).astype(xp.float32)
    ey = xp.where(iny, xp.exp(-(dy * dy) * c), xp.float32(0)).astype(xp.float32)
    if ex.shape[1] == 1:
        return outer_product_maps(xp, ey[:, 0], ex[:, 0], out=out)
    return xp.max(ey[..., :, None] * ex[..., None, :], axis=1, out=out)


class GaussianHeatmapBase(Codec):
    """A Gaussian heatmap codec (see the module docstring).

    Args:
        input_size: network input ``(w, h)`` in pixels.
        heatmap_size: heatmap ``(W, H)`` in cells (each >= `min_heatmap_size`).
        sigma: Gaussian standard deviation in heatmap cells (> 0).
        blur_kernel_size: DARK modulation kernel size (odd).
        use_kernel: on CuPy input, use the fused CUDA kernel (``False`` forces the
            vectorised CuPy path).
    """

    #: the smallest heatmap side the codec's stride formula allows
    min_heatmap_size: int = 1
    #: input pixels per heatmap cell ``(x, y)``, float32; set by the subclass
    scale_factor: np.ndarray

    def __init__(self, input_size: tuple[int, int], heatmap_size: tuple[int, int],
                 sigma: float, blur_kernel_size: int, use_kernel: bool) -> None:
        self.input_size = size_pair(input_size, "input_size")
        self.heatmap_size = size_pair(heatmap_size, "heatmap_size")
        if min(self.heatmap_size) < self.min_heatmap_size:
            raise ValueError(f"{type(self).__name__} needs heatmap_size >= "
                             f"{self.min_heatmap_size} on both axes")
        self.sigma = float(sigma)
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive; got {sigma!r}")
        self.blur_kernel_size = int(blur_kernel_size)
        self.use_kernel = bool(use_kernel)

    @property
    @abstractmethod
    def kernel_mode(self) -> GaussianMode:
        """Where the patch goes (selects the fused kernel's branch)."""

    @abstractmethod
    def instance_params(self, keypoints: Array) -> tuple[Any, dict[str, Array], Array]:
        """Per-instance drawing parameters ``(B, N, K)``: ``cx, cy`` (float32 cells),
        ``x_lo, x_hi, y_lo, y_hi`` (int64 window), ``on`` (bool), and the weights."""

    def _cells(self, keypoints: Array) -> tuple[Any, Array, Array, Array, Array]:
        """``(xp, kx, ky, draw, vis)``, each ``(B, N, K)``: the keypoints in heatmap cells
        (float32 pixels / ``scale_factor``, the subclass's stride), MMPose's visibility
        ``vis = clip(v, 0, 1)`` and ``draw = vis >= 0.5``."""
        xp, x, y, v = split_keypoints(keypoints)
        vis = mmpose_visibility(xp, v)
        kx = x / xp.float32(self.scale_factor[0])
        ky = y / xp.float32(self.scale_factor[1])
        return xp, kx, ky, vis >= 0.5, vis

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("heatmap", "keypoint_weight")

    def output_shapes(self, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
        w, h = self.heatmap_size
        return {"heatmap": (int(batch_size), int(num_keypoints), h, w),
                "keypoint_weight": (int(batch_size), int(num_keypoints))}

    def encode(self, keypoints: Array, out: Mapping[str, Array] | None = None) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` in input pixels -> ``heatmap (B, K, H, W)`` in [0, 1]
        and ``keypoint_weight (B, K)``, float32, same array module as the input (written
        into ``out``'s arrays when given)."""
        xp, kp = as_keypoints(keypoints)
        dst = None if out is None else self._check_out(xp, out, kp.shape[0], kp.shape[2])
        if self.use_kernel and xp.__name__ == "cupy":
            return kernels.gaussian_targets(self, kp, mode=self.kernel_mode, out=dst)
        xp, p, weight = self.instance_params(kp)
        hm = windowed_gaussian_max(xp, size=self.heatmap_size, sigma=self.sigma,
                                   out=None if dst is None else dst["heatmap"], **p)
        if dst is None:
            return {"heatmap": hm, "keypoint_weight": weight}
        xp.copyto(dst["keypoint_weight"], weight)
        return dst

    def _decode(self, heatmap: Any,
                refine: Callable[[Any, Array, Array, Array], tuple[Array, Array]],
                stride: tuple[float, float] | np.ndarray) -> tuple[Any, Any]:
        """``heatmap (..., K, H, W)`` (NumPy, CuPy or torch) -> ``keypoints (..., K, 2)`` in
        input pixels and ``scores (..., K)`` (the map maxima), same kind as the input:
        argmax, ``refine(xp, hm, col, row) -> (x, y)`` in cells, times ``stride`` (input
        pixels per cell, per axis); -1 where the map maximum is <= 0 (as MMPose)."""
        xp, (hm,), wrap = to_backend(heatmap)
        hm = hm.astype(xp.float32)
        col, row, score = heatmap_argmax(xp, hm)
        x, y = refine(xp, hm, col, row)
        kp = xp.stack([x * xp.float32(stride[0]), y * xp.float32(stride[1])], axis=-1)
        kp = xp.where((score <= 0)[..., None], xp.float32(-1), kp).astype(xp.float32)
        return wrap(kp), wrap(score)
