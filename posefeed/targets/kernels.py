"""Fused CuPy kernels for the heatmap codecs: **one launch per batch**, reading the raw
``(B, N, K, 3)`` keypoints and writing every output (maps and weights) in that launch.
One thread per output cell ``(b, k, i, j)`` loops over the (few) instances; exp is evaluated
only inside each Gaussian's support (its patch for MSRA / UDP; where the float32 result is
non-zero for the full-map unbiased and DeepLabCut Gaussians). Each thread repeats the
per-instance parameter arithmetic of the vectorised path (NaN masking, visibility, centre,
patch, weight rule) with the same float32 / float64 steps, so both paths agree to float32
rounding of exp.

Nothing here touches CuPy at import time: kernels are compiled on first use (cached per
process by ``functools.lru_cache``; CuPy also caches binaries on disk). The codecs call these
automatically for CuPy input unless built with ``use_kernel=False``, which selects the
vectorised CuPy path. The two are tested equal to 1e-6 under ``@pytest.mark.gpu``, and
``tests/test_targets_kernels_host.py`` compiles these sources for the host with g++
(emulating the launch) and checks them against the NumPy path on CPU-only machines.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

_THREADS = 256

# shared device helpers: posefeed's keypoint cleaning (split_keypoints + mmpose_visibility)
_COMMON = r"""
struct PfKp { float x, y, v; };

__device__ __forceinline__ PfKp pf_load(const float* __restrict__ kp, long long q) {
    PfKp p;
    p.x = kp[3 * q];
    p.y = kp[3 * q + 1];
    p.v = kp[3 * q + 2];
    if (isnan(p.v)) p.v = 0.0f;
    if (!(isfinite(p.x) && isfinite(p.y))) {  // missing: never drawn, -1 kept
        p.x = 0.0f;
        p.y = 0.0f;
        p.v = fminf(p.v, 0.0f);
    }
    return p;
}

// the output cell (b, k, i, j) of a flat index into a (B, K, H, W) map stack
struct PfCell { int b, k, i, j; };

__device__ __forceinline__ PfCell pf_cell(long long idx, int K, int H, int W) {
    PfCell c;
    c.j = (int)(idx % W);
    long long t = idx / W;
    c.i = (int)(t % H);
    t /= H;
    c.k = (int)(t % K);
    c.b = (int)(t / K);
    return c;
}
"""

_GAUSSIAN_TARGETS = r"""
// mode 0: MSRA (integer centre, patch), 1: unbiased (float centre, full map),
// 2: UDP (float centre inside the integer patch)
extern "C" __global__ void gaussian_targets(
    const float* __restrict__ kp, float* __restrict__ out, float* __restrict__ weight,
    const int B, const int N, const int K, const int H, const int W,
    const float sfx, const float sfy, const double radius, const double c0,
    const float inv2s2, const int mode)
{
    const double big = 1099511627776.0;  // 2^40
    const long long total = (long long)B * K * H * W;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const PfCell c = pf_cell(idx, K, H, W);
        const int b = c.b, k = c.k, i = c.i, j = c.j;
        float best = 0.0f, wmax = 0.0f;
        for (int n = 0; n < N; ++n) {
            const PfKp p = pf_load(kp, ((long long)b * N + n) * K + k);
            const float vis = fminf(fmaxf(p.v, 0.0f), 1.0f);
            const bool draw = vis >= 0.5f;
            const float kx = p.x / sfx, ky = p.y / sfy;
            bool off;
            double lo_x = 0.0, hi_x = W, lo_y = 0.0, hi_y = H;
            float cx, cy;
            if (mode == 1) {
                const double fx = kx, fy = ky;
                off = (fx - radius >= W) || (fy - radius >= H) || (fx + radius + 1 < 0) || (fy + radius + 1 < 0);
                cx = kx;
                cy = ky;
            } else {
                const double kx64 = fmin(fmax((double)kx, -big), big);
                const double ky64 = fmin(fmax((double)ky, -big), big);
                const double mux = trunc(kx64 + 0.5), muy = trunc(ky64 + 0.5);
                lo_x = trunc(mux - radius);
                hi_x = trunc(mux + radius + 1);
                lo_y = trunc(muy - radius);
                hi_y = trunc(muy + radius + 1);
                off = (lo_x >= W) || (lo_y >= H) || (hi_x < 0) || (hi_y < 0);
                if (mode == 0) {
                    cx = (float)(lo_x + c0);
                    cy = (float)(lo_y + c0);
                } else {
                    cx = (float)(lo_x + c0 + (kx64 - mux));
                    cy = (float)(lo_y + c0 + (ky64 - muy));
                }
            }
            wmax = fmaxf(wmax, (draw && off) ? 0.0f : vis);
            if (!draw || off) continue;
            if (j < lo_x || j >= hi_x || i < lo_y || i >= hi_y) continue;
            const float dx = (float)j - cx, dy = (float)i - cy;
            const float z = (dx * dx + dy * dy) * inv2s2;
            if (z < 104.0f) best = fmaxf(best, expf(-z));  // float32 exp(-z) is 0 beyond
        }
        out[idx] = best;
        if (i == 0 && j == 0) weight[(long long)b * K + k] = wmax;
    }
}
"""

_DLC_TARGETS = r"""
extern "C" __global__ void dlc_targets(
    const float* __restrict__ kp, const long long* __restrict__ gx, const long long* __restrict__ gy,
    float* __restrict__ hm, float* __restrict__ hw, float* __restrict__ loc, float* __restrict__ lw,
    const int B, const int N, const int K, const int H, const int W,
    const double inv2s2, const double t2, const double scale,
    const int plateau, const int with_locref, const int zero_weight_unlabeled)
{
    const long long plane = (long long)H * W;
    const long long total = (long long)B * K * plane;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const PfCell c = pf_cell(idx, K, H, W);
        const int b = c.b, k = c.k, i = c.i, j = c.j;
        const double gxj = (double)gx[j];
        const double gyi = (double)gy[i];
        float h = 0.0f, lx = 0.0f, ly = 0.0f, wt = 1.0f;
        bool inside_any = false;
        for (int n = 0; n < N; ++n) {
            const PfKp p = pf_load(kp, ((long long)b * N + n) * K + k);
            if (p.v == -1.0f || (zero_weight_unlabeled && p.v == 0.0f)) wt = 0.0f;
            if (!(p.v > 0.0f)) continue;
            const double px = (double)p.x, py = (double)p.y;
            const double dx = gxj - px, dy = gyi - py;
            const double d2 = dy * dy + dx * dx;
            const bool inside = d2 <= t2;
            inside_any = inside_any || inside;
            if (plateau) {
                if (inside) {  // each individual writes inside its own disk; the last wins
                    h = 1.0f;
                    lx = (float)((px - gxj) * scale);
                    ly = (float)((py - gyi) * scale);
                }
            } else {
                // FP32 exp (FP64 exp runs at 1/64 rate on non-H100 GPUs): within 2 ulp of
                // the float32-rounded FP64 value, inside the codecs' 1e-6 parity
                const float z = (float)(d2 * inv2s2);
                if (z < 104.0f) h = fmaxf(h, expf(-z));  // float32 exp(-z) is 0 beyond
                lx = (float)((px - gxj) * scale);  // the last visible individual, whole map
                ly = (float)((py - gyi) * scale);
            }
        }
        const long long bk = (long long)b * K + k;
        const long long off = i * (long long)W + j;
        hm[bk * plane + off] = h;
        hw[bk * plane + off] = wt;
        if (with_locref) {
            const long long cxo = ((long long)b * 2 * K + 2 * k) * plane + off;
            loc[cxo] = lx;
            loc[cxo + plane] = ly;
            const float m = inside_any ? 1.0f : 0.0f;
            lw[cxo] = m;
            lw[cxo + plane] = m;
        }
    }
}
"""

SOURCES = {"gaussian_targets": _COMMON + _GAUSSIAN_TARGETS, "dlc_targets": _COMMON + _DLC_TARGETS}


@functools.lru_cache(maxsize=None)
def _kernel(name: str) -> Any:
    import cupy as cp  # noqa: PLC0415 - optional GPU extra, only for CuPy input

    return cp.RawKernel(SOURCES[name], name)


def device_grids(codec: Any) -> tuple[Any, Any]:
    """``codec.grid_x`` / ``grid_y`` as int64 CuPy arrays on the current device, uploaded once
    per device and kept on the codec (they were uploaded on every call)."""
    import cupy as cp  # noqa: PLC0415 - optional GPU extra, only for CuPy input

    cache = codec.__dict__.setdefault("_device_grids", {})
    key = (cp.cuda.runtime.getDevice(), id(codec.grid_x), id(codec.grid_y))
    got = cache.get(key)
    if got is None:
        got = (cp.asarray(codec.grid_x, dtype=cp.int64), cp.asarray(codec.grid_y, dtype=cp.int64))
        cache[key] = got
    return got


def _launch(total: int) -> tuple[tuple[int], tuple[int]]:
    blocks = max(1, min((total + _THREADS - 1) // _THREADS, 65535 * 16))
    return (blocks,), (_THREADS,)


def gaussian_args(codec: Any, mode: int) -> tuple[float, float, float, float, float]:
    """``(sfx, sfy, radius, c0, inv2s2)`` for :data:`_GAUSSIAN_TARGETS` (host scalars)."""
    r = 3.0 * codec.sigma
    return (float(codec.scale_factor[0]), float(codec.scale_factor[1]), r,
            float(math.floor((2 * r + 1) / 2)), 1.0 / (2.0 * codec.sigma * codec.sigma))


def gaussian_targets(codec: Any, keypoints: Any, mode: int, out: dict | None = None) -> dict[str, Any]:
    """Fused ``GaussianHeatmap`` (mode 0 MSRA, 1 unbiased) / ``UDPHeatmap`` (mode 2)
    encode of CuPy ``keypoints (B, N, K, 3)``: ``heatmap`` and ``keypoint_weight`` (written
    into ``out``'s arrays when given)."""
    import cupy as cp  # noqa: PLC0415 - optional GPU extra, only for CuPy input

    kp = cp.ascontiguousarray(keypoints, dtype=cp.float32)
    b, n, k = kp.shape[:3]
    w, h = codec.heatmap_size
    if out is None:
        out = {"heatmap": cp.empty((b, k, h, w), dtype=cp.float32),
               "keypoint_weight": cp.empty((b, k), dtype=cp.float32)}
    hm, weight = out["heatmap"], out["keypoint_weight"]
    total = b * k * h * w
    if total == 0:   # else the kernel's (0, 0) cell of each map writes its weight
        weight.fill(0)
    if total:
        sfx, sfy, r, c0, inv2s2 = gaussian_args(codec, mode)
        grid, block = _launch(total)
        _kernel("gaussian_targets")(grid, block, (
            kp, hm, weight, np.int32(b), np.int32(n), np.int32(k), np.int32(h), np.int32(w),
            np.float32(sfx), np.float32(sfy), np.float64(r), np.float64(c0), np.float32(inv2s2),
            np.int32(mode)))
    return {"heatmap": hm, "keypoint_weight": weight}


def dlc_targets(codec: Any, keypoints: Any, out: dict | None = None) -> dict[str, Any]:
    """Fused :meth:`posefeed.targets.dlc_heatmap.DLCHeatmap.encode` of CuPy
    ``keypoints (B, N, K, 3)``: all outputs in one launch (into ``out``'s arrays when
    given; every element is written)."""
    import cupy as cp  # noqa: PLC0415 - optional GPU extra, only for CuPy input

    kp = cp.ascontiguousarray(keypoints, dtype=cp.float32)
    b, n, k = kp.shape[:3]
    w, h = codec.heatmap_size
    if out is None:
        out = {name: cp.empty(shape, dtype=cp.float32)
               for name, shape in codec.output_shapes(b, k).items()}
    hm, hw = out["heatmap"], out["heatmap_weight"]
    if codec.locref:
        loc, lw = out["locref"], out["locref_weight"]
    else:
        loc = lw = cp.empty((1,), dtype=cp.float32)  # never written
    total = b * k * h * w
    if total:
        grid, block = _launch(total)
        _kernel("dlc_targets")(grid, block, (
            kp, *device_grids(codec), hm, hw, loc, lw,
            np.int32(b), np.int32(n), np.int32(k), np.int32(h), np.int32(w),
            np.float64(1.0 / (2.0 * codec.std * codec.std)),
            np.float64(codec.pos_dist_thresh * codec.pos_dist_thresh),
            np.float64(codec.locref_scale),
            np.int32(codec.mode == "plateau"), np.int32(codec.locref),
            np.int32(codec.zero_weight_unlabeled)))
    return {name: out[name] for name in codec.output_names}
