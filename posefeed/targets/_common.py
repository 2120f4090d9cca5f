"""Helpers shared by the codecs: keypoint validation / NaN masking, the NumPy-CuPy-torch
conversion used by every decoder, and small vectorised decode utilities."""
from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Callable

import numpy as np

from posefeed.targets._backend import array_module, cupy_or_none

Array = Any  # numpy.ndarray or cupy.ndarray


# ----------------------------------------------------------------------------- encode side
#: the visibility values a codec accepts: DLC's -1 (ignore), 0 (missing), 1 (labelled,
#: occluded), 2 (visible); NaN (a DLC missing value) is accepted too and counts as 0
VISIBILITY_VALUES = (-1.0, 0.0, 1.0, 2.0)


def as_keypoints(keypoints: Array) -> tuple[ModuleType, Array]:
    """Validate ``keypoints (B, N, K, 3)`` -> ``(xp, float32 array)``; ``N = 0`` becomes one
    all-missing instance (which draws nothing). A ``v`` outside `VISIBILITY_VALUES` (and not
    NaN) raises ``ValueError`` naming the first such entry."""
    xp = array_module(keypoints)
    kp = xp.asarray(keypoints, dtype=xp.float32)
    if kp.ndim != 4 or kp.shape[-1] != 3:
        raise ValueError(f"keypoints must be (B, N, K, 3) (x, y, v); got shape {tuple(kp.shape)}")
    v = kp[..., 2]
    ok = xp.isnan(v)
    for value in VISIBILITY_VALUES:
        ok |= v == xp.float32(value)
    if not bool(ok.all()):
        where = tuple(int(i) for i in xp.argwhere(~ok)[0])
        raise ValueError(f"keypoints[{where[0]}, {where[1]}, {where[2]}] has visibility "
                         f"v = {float(v[where]):g}; v must be -1 (ignore), 0 (missing), "
                         "1 (labelled, occluded) or 2 (visible)")
    if kp.shape[1] == 0:
        kp = xp.zeros((kp.shape[0], 1, kp.shape[2], 3), dtype=xp.float32)
    return xp, kp


def split_keypoints(keypoints: Array) -> tuple[ModuleType, Array, Array, Array]:
    """``keypoints (B, N, K, 3)`` -> ``(xp, x, y, v)``, each ``(B, N, K)`` float32.

    Non-finite coordinates (DeepLabCut stores missing keypoints as NaN) are replaced by 0
    and their visibility is lowered to ``min(v, 0)``, so a NaN can never reach an output and
    a NaN keypoint never draws (``v = -1``, DLC's "ignore", is kept).
    """
    xp, kp = as_keypoints(keypoints)
    return (xp, *clean_keypoints(xp, kp))


def clean_keypoints(xp: ModuleType, kp: Array) -> tuple[Array, Array, Array]:
    """`split_keypoints` of keypoints `as_keypoints` already validated: ``(x, y, v)``."""
    x, y, v = kp[..., 0], kp[..., 1], kp[..., 2]
    finite = xp.isfinite(x) & xp.isfinite(y)
    v = xp.where(xp.isnan(v), xp.float32(0), v)
    v = xp.where(finite, v, xp.minimum(v, xp.float32(0)))
    x = xp.where(finite, x, xp.float32(0))
    y = xp.where(finite, y, xp.float32(0))
    return x, y, v


def mmpose_visibility(xp: ModuleType, v: Array) -> Array:
    """COCO ``v`` (0/1/2, DLC's -1) -> MMPose's ``keypoints_visible = min(1, v)``, clipped
    to [0, 1]; MMPose draws a keypoint when this is >= 0.5."""
    return xp.clip(v, 0, 1).astype(xp.float32)


def msra_patch(xp: ModuleType, kx: Array, ky: Array, sigma: float,
               heatmap_size: tuple[int, int], draw: Array, vis: Array,
               subpixel: bool = False) -> tuple[dict[str, Array], Array]:
    """MMPose's 3-sigma patch around the rounded centre ``mu = int(k + 0.5)`` (cells).

    Returns the drawing parameters ``(B, N, K)``: window ``x_lo, x_hi, y_lo, y_hi`` (int64,
    ``[mu - 3 sigma, mu + 3 sigma + 1)`` truncated), Gaussian centre ``cx, cy`` (float32: the
    window's centre cell, plus the sub-pixel remainder ``k - mu`` for UDP), ``on`` (drawn and
    not off the map, by MMPose's test), and the keypoint weight ``(B, K)`` (0 where a drawn
    keypoint's patch misses the map; max over instances).
    """
    w, h = heatmap_size
    r = 3.0 * sigma
    big = 2.0 ** 40  # keep absurd coordinates inside int64 (they are off the map anyway)
    kx64 = xp.clip(kx.astype(xp.float64), -big, big)
    ky64 = xp.clip(ky.astype(xp.float64), -big, big)
    mux, muy = xp.trunc(kx64 + 0.5), xp.trunc(ky64 + 0.5)
    left, top = xp.trunc(mux - r), xp.trunc(muy - r)
    right, bottom = xp.trunc(mux + r + 1), xp.trunc(muy + r + 1)
    off = (left >= w) | (top >= h) | (right < 0) | (bottom < 0)  # MMPose's test
    c0 = math.floor((2 * r + 1) / 2)  # MMPose: x0 = gaussian_size // 2
    cx, cy = left + c0, top + c0
    if subpixel:
        cx, cy = cx + (kx64 - mux), cy + (ky64 - muy)
    p = dict(cx=cx.astype(xp.float32), cy=cy.astype(xp.float32),
             x_lo=left.astype(xp.int64), x_hi=right.astype(xp.int64),
             y_lo=top.astype(xp.int64), y_hi=bottom.astype(xp.int64), on=draw & ~off)
    return p, patch_weight(xp, draw & off, vis)


def patch_weight(xp: ModuleType, missed: Array, vis: Array) -> Array:
    """Keypoint weight ``(B, K)``: the visibility, 0 where a drawn keypoint missed the map,
    merged over instances by max."""
    return xp.where(missed, xp.float32(0), vis).max(axis=1).astype(xp.float32)


def pair(value: float | tuple[float, float] | list[float], what: str) -> tuple[float, float]:
    """A scalar or an ``(x, y)`` pair -> ``(x, y)`` floats."""
    if isinstance(value, (int, float, np.floating, np.integer)):
        return float(value), float(value)
    vals = tuple(float(t) for t in value)
    if len(vals) != 2:
        raise ValueError(f"{what} must be a number or an (x, y) pair; got {value!r}")
    return vals  # type: ignore[return-value]


def dlc_cell_centres(heatmap_size: tuple[int, int], stride: float) -> tuple[np.ndarray, np.ndarray]:
    """DeepLabCut's grid: cell centres ``(gx (W,), gy (H,))`` int64, input pixels,
    ``int(j*stride + stride/2)`` (DLC assigns the float into an int64 ``np.mgrid``: truncated)."""
    w, h = heatmap_size
    s = float(stride)
    return (np.arange(w) * s + s / 2).astype(np.int64), (np.arange(h) * s + s / 2).astype(np.int64)


def size_pair(value: tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    """A ``(width, height)`` pair of positive ints."""
    vals = tuple(int(t) for t in value)
    if len(vals) != 2 or min(vals) <= 0:
        raise ValueError(f"{what} must be a (width, height) pair of positive ints; got {value!r}")
    return vals  # type: ignore[return-value]


def _torch() -> ModuleType | None:
    """torch when installed (a posefeed dependency; absent only in stripped-down installs)."""
    try:
        import torch  # noqa: PLC0415 - only for torch inputs: NumPy/CuPy codecs never load it
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch


def broadcast_binary(xp: ModuleType, op: str, a: Array, b: Array, out: Array) -> Array:
    """``out[...] = a <op> b`` (``op`` "mul" or "add") with NumPy broadcasting, one float32
    result per element written once into ``out``.

    NumPy ``out`` arrays are written by torch's kernel through ``torch.from_numpy`` (no copy):
    for the outer-product and row / column broadcasts the codecs write, NumPy runs one
    short inner loop per output row while torch's vectorised kernel streams the whole map,
    1.5-3x faster on large maps (benchmarks/results/targets-cpu.md). Both compute the same
    IEEE float32 product / sum, so the values are identical. An ``out`` larger than the
    inputs' broadcast shape (which torch would not broadcast into) takes NumPy's ufunc. CuPy
    uses its own ufunc."""
    if xp is np:
        torch = _torch()
        if (torch is not None and out.dtype == np.float32 and out.flags.c_contiguous
                and out.flags.writeable and np.broadcast_shapes(a.shape, b.shape) == out.shape):
            ta, tb = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
            getattr(torch, op)(ta, tb, out=torch.from_numpy(out))
            return out
        return (np.multiply if op == "mul" else np.add)(a, b, out=out)
    return (xp.multiply if op == "mul" else xp.add)(a, b, out=out)


def outer_product_maps(xp: ModuleType, ey: Array, ex: Array, out: Array | None = None) -> Array:
    """``ey (..., H)``, ``ex (..., W)`` float32 -> ``out[..., i, j] = ey[..., i] * ex[..., j]``
    (each element one float32 product, written once into ``out`` when given; see
    :func:`broadcast_binary`)."""
    if out is None:
        out = xp.empty(ey.shape + ex.shape[-1:], dtype=xp.float32)
    return broadcast_binary(xp, "mul", ey[..., :, None], ex[..., None, :], out)


# ----------------------------------------------------------------------------- decode side
def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def to_backend(*arrays: Any) -> tuple[ModuleType, list[Array], Callable[[Array], Any]]:
    """Convert decoder inputs to NumPy / CuPy without copying.

    torch tensors go through DLPack (``numpy.from_dlpack`` on CPU, ``cupy.from_dlpack`` on
    CUDA); half / bfloat16 tensors are first cast to float32 (NumPy has no bfloat16).
    Returns ``(xp, arrays, wrap)`` where ``wrap`` turns a result back into the input's kind
    (a torch tensor on the input's device for torch inputs, else the array itself).
    ``None`` entries pass through unchanged.
    """
    first = next((a for a in arrays if a is not None), None)
    if first is not None and _is_torch(first):
        import torch  # noqa: PLC0415 - only for torch inputs (see _torch)

        out = []
        cuda = first.device.type == "cuda"
        for a in arrays:
            if a is None:
                out.append(None)
                continue
            t = a.detach()
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()
            if cuda:
                cp = cupy_or_none()
                if cp is None:
                    raise RuntimeError("decoding CUDA tensors needs CuPy (pip install cupy-cuda12x)")
                out.append(cp.from_dlpack(t.contiguous()))
            else:
                out.append(np.from_dlpack(t.cpu()))
        xp = array_module(out[arrays.index(first)])

        def wrap(r: Array) -> Any:
            if cuda:
                return torch.from_dlpack(r)
            return torch.from_numpy(np.ascontiguousarray(r))

        return xp, out, wrap
    xp = array_module(first)
    return xp, [None if a is None else xp.asarray(a) for a in arrays], lambda r: r


def heatmap_argmax(xp: ModuleType, heatmaps: Array) -> tuple[Array, Array, Array]:
    """``heatmaps (..., H, W)`` -> ``(col, row, value)`` of each map's maximum (first in
    row-major order on ties); ``col``/``row`` int64, ``value`` float32."""
    *lead, h, w = heatmaps.shape
    flat = heatmaps.reshape(*lead, h * w)
    idx = xp.argmax(flat, axis=-1)
    val = xp.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    return (idx % w).astype(xp.int64), (idx // w).astype(xp.int64), val.astype(xp.float32)


def gather2d(xp: ModuleType, maps: Array, row: Array, col: Array) -> Array:
    """``maps (..., H, W)`` sampled at integer ``row``/``col`` (shape ``...``), indices
    clamped into the map (callers mask the clamped cases themselves)."""
    *lead, h, w = maps.shape
    r = xp.clip(row, 0, h - 1)
    c = xp.clip(col, 0, w - 1)
    flat = maps.reshape(*lead, h * w)
    return xp.take_along_axis(flat, (r * w + c)[..., None], axis=-1)[..., 0]


def cv2_gaussian_kernel(ksize: int) -> np.ndarray:
    """The 1-D kernel ``cv2.getGaussianKernel(ksize, 0)`` returns (float64): OpenCV's fixed
    tables for ksize <= 9, else a Gaussian with sigma = 0.3*((ksize-1)/2 - 1) + 0.8,
    normalised to sum 1."""
    if ksize % 2 != 1 or ksize < 1:
        raise ValueError(f"blur kernel size must be odd and positive; got {ksize}")
    fixed = {
        1: [1.0],
        3: [0.25, 0.5, 0.25],
        5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
        7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
        # OpenCV 5 also tabulates ksize 9 (OpenCV 4.x computes it from sigma = 1.7)
        9: [0.015625, 0.05078125, 0.1171875, 0.19921875, 0.234375, 0.19921875, 0.1171875,
            0.05078125, 0.015625],
    }
    if ksize in fixed:
        return np.asarray(fixed[ksize], dtype=np.float64)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    i = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    g = np.exp(-(i * i) / (2 * sigma * sigma))
    return g / g.sum()


def modulate_blur(xp: ModuleType, heatmaps: Array, ksize: int) -> Array:
    """MMPose's ``gaussian_blur`` (DARK "distribution modulation"), vectorised over all
    leading axes: zero-pad by ``(ksize-1)/2``, separable Gaussian blur (cv2 kernel), then
    rescale each map so its maximum equals the original maximum (maps whose blurred maximum
    is 0 are left at 0). Returns float32 ``(..., H, W)``."""
    g = cv2_gaussian_kernel(ksize).astype(np.float32)
    border = (ksize - 1) // 2
    hm = xp.asarray(heatmaps, dtype=xp.float32)
    *lead, h, w = hm.shape
    pad = [(0, 0)] * len(lead)
    # blur along x (zero padded), then along y
    p = xp.pad(hm, pad + [(0, 0), (border, border)])
    bx = xp.zeros_like(hm)
    for i in range(ksize):  # loop over the kernel taps only (constant, <= ksize)
        bx += xp.float32(g[i]) * p[..., :, i : i + w]
    p = xp.pad(bx, pad + [(border, border), (0, 0)])
    b = xp.zeros_like(hm)
    for i in range(ksize):
        b += xp.float32(g[i]) * p[..., i : i + h, :]
    origin_max = hm.reshape(*lead, h * w).max(axis=-1)
    new_max = b.reshape(*lead, h * w).max(axis=-1)
    safe = xp.where(new_max != 0, new_max, xp.float32(1))
    factor = xp.where(new_max != 0, origin_max / safe, xp.float32(0))
    return (b * factor[..., None, None]).astype(xp.float32)
