"""MSRA Gaussian heatmaps (MMPose ``MSRAHeatmap``), with MMPose's decoders incl. DARK."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from posefeed.targets._common import (
    Array,
    as_keypoints,
    gather2d,
    heatmap_argmax,
    mmpose_visibility,
    msra_patch,
    patch_weight,
    modulate_blur,
    outer_product_maps,
    size_pair,
    split_keypoints,
    to_backend,
)
from posefeed.targets.base import Codec


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


def encode_heatmap(codec: Any, keypoints: Array, out: Any, kernel_mode: int) -> dict[str, Array]:
    """``encode`` of :class:`GaussianHeatmap` / ``UDPHeatmap``: the fused kernel on CuPy,
    else ``instance_params`` + :func:`windowed_gaussian_max`; into ``out`` when given."""
    xp, kp = as_keypoints(keypoints)
    dst = None if out is None else codec._check_out(xp, out, kp.shape[0], kp.shape[2])
    if codec.use_kernel and xp.__name__ == "cupy":
        from posefeed.targets import kernels  # noqa: PLC0415

        return kernels.gaussian_targets(codec, kp, mode=kernel_mode, out=dst)
    xp, p, weight = codec.instance_params(kp)
    hm = windowed_gaussian_max(xp, size=codec.heatmap_size, sigma=codec.sigma,
                               out=None if dst is None else dst["heatmap"], **p)
    if dst is None:
        return {"heatmap": hm, "keypoint_weight": weight}
    xp.copyto(dst["keypoint_weight"], weight)
    return dst


def heatmap_output_shapes(codec: Any, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
    w, h = codec.heatmap_size
    return {"heatmap": (int(batch_size), int(num_keypoints), h, w),
            "keypoint_weight": (int(batch_size), int(num_keypoints))}


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


class GaussianHeatmap(Codec):
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
        self.input_size = size_pair(input_size, "input_size")
        self.heatmap_size = size_pair(heatmap_size, "heatmap_size")
        self.sigma = float(sigma)
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive; got {sigma!r}")
        self.unbiased = bool(unbiased)
        self.blur_kernel_size = int(blur_kernel_size)
        self.use_kernel = bool(use_kernel)
        self.scale_factor = (np.asarray(self.input_size, dtype=np.float64)
                             / np.asarray(self.heatmap_size)).astype(np.float32)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("heatmap", "keypoint_weight")

    def __repr__(self) -> str:
        return (f"GaussianHeatmap(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
                f"sigma={self.sigma}, unbiased={self.unbiased})")

    # ------------------------------------------------------------------ encode
    def instance_params(self, keypoints: Array) -> tuple[Any, dict[str, Array], Array]:
        """Per-instance drawing parameters ``(B, N, K)``: ``cx, cy`` (float32 cells),
        ``x_lo, x_hi, y_lo, y_hi`` (int64 window), ``on`` (bool), and the weights."""
        xp, x, y, v = split_keypoints(keypoints)
        vis = mmpose_visibility(xp, v)
        draw = vis >= 0.5
        kx = x / xp.float32(self.scale_factor[0])
        ky = y / xp.float32(self.scale_factor[1])
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

    def output_shapes(self, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
        return heatmap_output_shapes(self, batch_size, num_keypoints)

    def encode(self, keypoints: Array, out: Mapping[str, Array] | None = None) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` in input pixels -> ``heatmap (B, K, H, W)`` in [0, 1]
        and ``keypoint_weight (B, K)``, float32, same array module as the input (written
        into ``out``'s arrays when given)."""
        return encode_heatmap(self, keypoints, out, 1 if self.unbiased else 0)

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
        xp, (hm,), wrap = to_backend(heatmap)
        hm = hm.astype(xp.float32)
        col, row, score = heatmap_argmax(xp, hm)
        use_dark = self.unbiased if dark is None else bool(dark)
        if use_dark:
            x, y = refine_dark(xp, hm, col, row, self.blur_kernel_size)
        else:
            x, y = refine_quarter(xp, hm, col, row)
        kp = xp.stack([x * xp.float32(self.scale_factor[0]),
                       y * xp.float32(self.scale_factor[1])], axis=-1)
        kp = xp.where((score <= 0)[..., None], xp.float32(-1), kp).astype(xp.float32)
        return wrap(kp), wrap(score)

    def decode_dark(self, heatmap: Any) -> tuple[Any, Any]:
        """``decode(heatmap, dark=True)``."""
        return self.decode(heatmap, dark=True)
