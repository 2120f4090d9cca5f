"""Fused CuPy kernels for the multi-animal codecs (``PartAffinityField``, ``DEKR``): one
launch per batch after a few vectorised per-limb / per-keypoint constants.

* ``paf_targets``: one thread per output cell ``(b, l, i, j)``; it walks the animals from the
  last to the first and writes the first band that covers the cell (= DeepLabCut's "the
  later animal overwrites"), with DeepLabCut's float64 per-cell expressions on the float32
  limb constants of :meth:`PartAffinityField.limbs`.
* ``dekr_targets``: one thread per ``(b, i, j)``: the ``K+1`` heatmaps (max over animals of
  each window's Gaussian) and weights, then DeepLabCut's offset loop itself (animal by
  animal, keypoint by keypoint, one area per cell), reading "already set" as DeepLabCut
  does: a non-zero offset (a keypoint exactly on the cell writes (0, 0): unset).

The float32 arithmetic uses round-to-nearest intrinsics (``__fadd_rn`` ...), which NVRTC
never contracts into FMAs, so each step rounds as NumPy's does; ``expf`` may differ from
NumPy's ``exp`` by an ulp. Compiled on first use (``functools.lru_cache``; CuPy caches
binaries on disk). ``tests/test_targets_kernels_multi_host.py`` compiles these sources for
the host with g++ and checks them against the NumPy path; ``tests/test_targets_gpu_multi.py``
(``gpu``) checks the real launches.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

_THREADS = 256

_PAF = r"""
extern "C" __global__ void paf_targets(
    const float* __restrict__ ux, const float* __restrict__ uy, const float* __restrict__ lo,
    const float* __restrict__ hi, const float* __restrict__ ortho, const int* __restrict__ on,
    float* __restrict__ out, int B, int N, int L, int H, int W, double s, double width) {
    const long long total = (long long)B * L * H * W;
    const long long hw = (long long)H * W;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int j = (int)(idx % W);
        long long t = idx / W;
        const int i = (int)(t % H);
        t /= H;
        const int l = (int)(t % L);
        const int b = (int)(t / L);
        // DeepLabCut's int grid: j * s + s / 2 in float64, truncated
        const double gx = (double)(long long)((double)j * s + s / 2.0);
        const double gy = (double)(long long)((double)i * s + s / 2.0);
        float vx = 0.0f, vy = 0.0f;
        for (int n = N - 1; n >= 0; --n) {  // the last animal that covers the cell wins
            const long long q = ((long long)b * N + n) * L + l;
            if (!on[q]) continue;
            const double ax = (double)ux[q], ay = (double)uy[q];
            // products of a float32 and an integer grid value are exact in float64
            const double along = ax * gx + ay * gy;
            const double across = fabs(((gy * ax - gx * ay) - (double)ortho[q]) / width);
            if (along >= (double)lo[q] && along <= (double)hi[q] && across <= 1.0) {
                const double r = 1.0 - across;
                vx = (float)(ax * r);
                vy = (float)(ay * r);
                break;
            }
        }
        const long long o = ((long long)b * 2 * L + 2 * l) * hw + (long long)i * W + j;
        out[o] = vx;
        out[o + hw] = vy;
    }
}
"""

_DEKR = r"""
extern "C" __global__ void dekr_targets(
    const float* __restrict__ xs, const float* __restrict__ ys, const int* __restrict__ drawn,
    const int* __restrict__ last_ign, const float* __restrict__ area,
    const int* __restrict__ sq, float* __restrict__ hm, float* __restrict__ hw_out,
    float* __restrict__ off, float* __restrict__ ow, int B, int N, int K1, int H, int W,
    float r3, float two_s2, float r3c, float two_s2c, float bg) {
    // xs, ys, drawn: (B, N, K1) (the centre last); last_ign: (B, K1); area: (B, N);
    // sq: (B, N, 4) the centre's square x0, x1, y0, y1; outputs: (B, K1, H, W) and (B, 2K, H, W)
    const int K = K1 - 1;
    const long long total = (long long)B * H * W;
    const long long hw = (long long)H * W;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int j = (int)(idx % W);
        const int i = (int)((idx / W) % H);
        const int b = (int)(idx / hw);
        const long long cell = (long long)i * W + j;
        for (int k = 0; k < K1; ++k) {
            const bool centre = k == K;
            const float rr = centre ? r3c : r3;
            const float ts = centre ? two_s2c : two_s2;
            float best = 0.0f;
            bool one = false;
            const int li = last_ign[(long long)b * K1 + k];
            for (int n = 0; n < N; ++n) {
                const long long q = ((long long)b * N + n) * K1 + k;
                if (!drawn[q]) continue;
                const float x0 = xs[q], y0 = ys[q];
                // DeepLabCut's window [floor(x - 3s - 1), ceil(x + 3s + 2)), both axes
                const int ulx = (int)floorf(__fsub_rn(__fsub_rn(x0, rr), 1.0f));
                const int uly = (int)floorf(__fsub_rn(__fsub_rn(y0, rr), 1.0f));
                const int brx = (int)ceilf(__fadd_rn(__fadd_rn(x0, rr), 2.0f));
                const int bry = (int)ceilf(__fadd_rn(__fadd_rn(y0, rr), 2.0f));
                if (j < ulx || j >= brx || i < uly || i >= bry) continue;
                const float dx = __fsub_rn((float)j, x0), dy = __fsub_rn((float)i, y0);
                const float d2 = __fadd_rn(__fmul_rn(dy, dy), __fmul_rn(dx, dx));
                const float g = expf(__fdiv_rn(-d2, ts));
                best = fmaxf(best, g);
                if (n > li) one = true;
            }
            const long long o = ((long long)b * K1 + k) * hw + cell;
            hm[o] = best;
            hw_out[o] = one ? 1.0f : (li >= 0 ? 0.0f : bg);
        }
        // offsets: DeepLabCut's loop for this cell (animal, then keypoint), one area per cell
        for (int k = 0; k < K; ++k) {
            const long long o = ((long long)b * 2 * K + 2 * k) * hw + cell;
            off[o] = 0.0f; off[o + hw] = 0.0f; ow[o] = 0.0f; ow[o + hw] = 0.0f;
        }
        float amap = 0.0f;
        for (int n = 0; n < N; ++n) {
            const int* r = sq + ((long long)b * N + n) * 4;
            if (j < r[0] || j >= r[1] || i < r[2] || i >= r[3]) continue;
            const float a = area[(long long)b * N + n];
            for (int k = 0; k < K; ++k) {
                const long long q = ((long long)b * N + n) * K1 + k;
                if (!drawn[q]) continue;
                const long long o = ((long long)b * 2 * K + 2 * k) * hw + cell;
                // DLC: "set" is a non-zero offset (a (0, 0) write counts as unset)
                if ((off[o] != 0.0f || off[o + hw] != 0.0f) && amap < a) continue;  // set by a smaller animal
                off[o] = __fsub_rn((float)j, xs[q]);
                off[o + hw] = __fsub_rn((float)i, ys[q]);
                const float wgt = __fdiv_rn(1.0f, sqrtf(a));
                ow[o] = wgt;
                ow[o + hw] = wgt;
                amap = a;
            }
        }
    }
}
"""

SOURCES = {"paf_targets": _PAF, "dekr_targets": _DEKR}


@functools.lru_cache(maxsize=None)
def _kernel(name: str) -> Any:
    import cupy as cp  # noqa: PLC0415 - CuPy only on GPU machines, imported on first launch

    return cp.RawKernel(SOURCES[name], name)


def _launch(total: int) -> tuple[tuple[int], tuple[int]]:
    blocks = max(1, min((total + _THREADS - 1) // _THREADS, 65535 * 16))
    return (blocks,), (_THREADS,)


def paf_args(codec: Any, keypoints: Any) -> tuple[Any, ...]:
    """The per-limb constants ``(ux, uy, lo, hi, ortho, on)`` the PAF kernel reads, each
    ``(B, N, L)`` contiguous (float32; ``on`` int32), same array module as the keypoints."""
    lm = codec.limbs(keypoints)
    from posefeed.targets._backend import array_module  # noqa: PLC0415 - tiny, avoids a cycle

    xp = array_module(lm["ux"])
    f = [xp.ascontiguousarray(lm[k], dtype=xp.float32) for k in ("ux", "uy", "lo", "hi", "ortho")]
    return (*f, xp.ascontiguousarray(lm["on"], dtype=xp.int32))


def paf_targets(codec: Any, keypoints: Any, out: Any = None) -> Any:
    """Fused ``PartAffinityField.encode`` of CuPy ``keypoints (B, N, K, 3)`` -> ``paf (B, 2L,
    H, W)`` (into ``out`` when given; every element is written)."""
    import cupy as cp  # noqa: PLC0415 - CuPy only on GPU machines

    b, n = keypoints.shape[:2]
    w, h = codec.heatmap_size
    L = codec.num_limbs
    if out is None:
        out = cp.empty((b, 2 * L, h, w), dtype=cp.float32)
    total = b * L * h * w
    if total:
        grid, block = _launch(total)
        _kernel("paf_targets")(grid, block, (*paf_args(codec, keypoints), out, np.int32(b), np.int32(n),
                                             np.int32(L), np.int32(h), np.int32(w),
                                             np.float64(codec.stride), np.float64(codec.width)))
    return out


def dekr_args(codec: Any, x: Any, y: Any, v: Any, area: Any) -> tuple[Any, ...]:
    """The kernel's per-keypoint inputs from ``x, y, v (B, N, K+1)`` (centre last) and
    ``area (B, N)``: ``xs, ys, drawn, last_ign, area, sq`` (see :data:`_DEKR`)."""
    from posefeed.targets._backend import array_module  # noqa: PLC0415 - tiny, avoids a cycle

    xp = array_module(x)
    b, n, k1 = x.shape
    w, h = codec.heatmap_size
    xs, ys = codec._scaled(xp, x, y)
    drawn = (v > 0) & ~((xs < 0) | (ys < 0) | (xs >= w) | (ys >= h))
    last_ign = xp.where(v == -1, xp.arange(n)[None, :, None], -1).max(axis=1)
    sq = codec._squares(xp, x, y)
    return (xp.ascontiguousarray(xs), xp.ascontiguousarray(ys), xp.ascontiguousarray(drawn, dtype=xp.int32),
            xp.ascontiguousarray(last_ign, dtype=xp.int32), xp.ascontiguousarray(area, dtype=xp.float32),
            xp.ascontiguousarray(sq, dtype=xp.int32))


def dekr_scalars(codec: Any) -> tuple[np.float32, ...]:
    """``(r3, two_s2, r3c, two_s2c, bg)`` float32, as the vectorised path rounds them."""
    f = np.float32
    return (f(3 * codec.sigma), f(2 * codec.sigma ** 2), f(3 * codec.center_sigma),
            f(2 * codec.center_sigma ** 2), f(codec.bg_weight))


def dekr_targets(codec: Any, x: Any, y: Any, v: Any, area: Any, out: dict | None = None) -> dict:
    """Fused ``DEKR.encode`` of CuPy ``x, y, v (B, N, K+1)`` (cleaned, centre last) and
    ``area (B, N)``: every output in one launch (into ``out``'s arrays when given)."""
    import cupy as cp  # noqa: PLC0415 - CuPy only on GPU machines

    b, n, k1 = x.shape
    w, h = codec.heatmap_size
    if out is None:
        out = {name: cp.empty(s, dtype=cp.float32) for name, s in codec.output_shapes(b, k1 - 1).items()}
    total = b * h * w
    if total:
        grid, block = _launch(total)
        _kernel("dekr_targets")(grid, block, (
            *dekr_args(codec, x, y, v, area), out["heatmap"], out["heatmap_weight"], out["offset"],
            out["offset_weight"], np.int32(b), np.int32(n), np.int32(k1), np.int32(h), np.int32(w),
            *dekr_scalars(codec)))
    return {name: out[name] for name in codec.output_names}
