"""The multi-animal fused kernels' CUDA C source (posefeed/targets/kernels_multi.py) compiled
for the host with g++ (CUDA built-ins emulated: a launch runs every (block, thread) pair in
turn, so the grid-stride loop and the index arithmetic are exercised) and compared with the
vectorised NumPy path and the loop oracles written from DeepLabCut's rules. This checks the
kernels' logic without a GPU; tests/test_targets_gpu_multi.py checks the real launches."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from oracles import dekr_centers, dekr_loop, paf_loop
from posefeed.targets import DEKR, PartAffinityField, kernels_multi
from posefeed.targets._common import split_keypoints
from posefeed.targets.dekr import add_centers

CXX = shutil.which("g++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler")

PRELUDE = r"""
#include <cmath>
struct posefeed_dim3 { unsigned x; };
static posefeed_dim3 blockIdx, blockDim, threadIdx, gridDim;
#define __global__
#define __restrict__
using std::fabs; using std::floor; using std::ceil;
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
"""

LAUNCHERS = r"""
extern "C" void launch_paf(const float* ux, const float* uy, const float* lo, const float* hi,
    const float* ortho, const int* on, float* out, int B, int N, int L, int H, int W, double s,
    double width, unsigned grid, unsigned block) {
    gridDim.x = grid; blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {
        blockIdx.x = b; threadIdx.x = t;
        paf_targets(ux, uy, lo, hi, ortho, on, out, B, N, L, H, W, s, width);
    }
}
extern "C" void launch_dekr(const float* xs, const float* ys, const int* drawn, const int* li,
    const float* area, const int* sq, float* hm, float* hw, float* off, float* ow, int B, int N,
    int K1, int H, int W, float r3, float t2, float r3c, float t2c, float bg, unsigned grid,
    unsigned block) {
    gridDim.x = grid; blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {
        blockIdx.x = b; threadIdx.x = t;
        dekr_targets(xs, ys, drawn, li, area, sq, hm, hw, off, ow, B, N, K1, H, W, r3, t2, r3c, t2c, bg);
    }
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("kernels_multi")
    src = d / "kernels_multi.cpp"
    src.write_text(PRELUDE + kernels_multi._PAF + kernels_multi._DEKR + LAUNCHERS)
    so = d / "kernels_multi.so"
    subprocess.run([CXX, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    return ctypes.CDLL(str(so))


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    assert a.flags.c_contiguous
    return ctypes.c_void_p(a.ctypes.data)


def crowd(seed, b, n, k, w, h, spread):
    rng = np.random.default_rng(seed)
    x = np.empty((b, n, k, 3), np.float32)
    x[..., :2] = rng.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.8 * h], (b, 1, 1, 2)) + rng.normal(0, spread, (b, n, k, 2))
    x[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k), p=[0.05, 0.15, 0.2, 0.6])
    x[0, 0, 0, 0] = np.nan
    return x


GRAPH = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4), (1, 3), (2, 2)]


@pytest.mark.parametrize("stride, size, n, width", [(2, (17, 13), 3, 20.0), (3, (15, 11), 2, 7.0),
                                                    (2.5, (13, 17), 4, 10.0)])
def test_paf_kernel(lib, stride, size, n, width):
    c = PartAffinityField(GRAPH, stride=stride, heatmap_size=size, width=width)
    kp = crowd(int(stride * 10) + n, 2, n, 5, size[0] * stride, size[1] * stride, 8.0)
    ux, uy, lo, hi, ortho, on = kernels_multi.paf_args(c, kp)
    w, h = size
    out = np.full((2, 2 * len(GRAPH), h, w), -1.0, np.float32)
    lib.launch_paf(ptr(ux), ptr(uy), ptr(lo), ptr(hi), ptr(ortho), ptr(on), ptr(out), 2, n, len(GRAPH), h, w,
                   ctypes.c_double(stride), ctypes.c_double(width), 5, 32)  # 160 threads < cells
    np.testing.assert_array_equal(out, c.encode(kp)["paf"])
    np.testing.assert_array_equal(out, paf_loop(kp, GRAPH, stride, size, width))


@pytest.mark.parametrize("stride, size, n, spread", [(4, (13, 11), 3, 8.0), (2, (17, 13), 4, 5.0),
                                                    (2.5, (15, 15), 5, 3.0)])
def test_dekr_kernel(lib, stride, size, n, spread):
    k = 5
    c = DEKR(k, stride=stride, heatmap_size=size)
    kp = crowd(int(stride * 10) + n, 2, n, k, size[0] * stride, size[1] * stride, spread)
    area = np.random.default_rng(n).choice([64.0, 100.0, 400.0], (2, n)).astype(np.float32)
    _, x, y, v = split_keypoints(kp)
    x, y, v = add_centers(np, x, y, v)
    args = kernels_multi.dekr_args(c, x, y, v, area)
    w, h = size
    out = {name: np.full(s, -1.0, np.float32) for name, s in c.output_shapes(2, k).items()}
    lib.launch_dekr(*(ptr(a) for a in args), ptr(out["heatmap"]), ptr(out["heatmap_weight"]),
                    ptr(out["offset"]), ptr(out["offset_weight"]), 2, n, k + 1, h, w,
                    *(ctypes.c_float(float(s)) for s in kernels_multi.dekr_scalars(c)), 3, 64)
    ref = c.encode(kp, area=area)
    loop = dekr_loop(dekr_centers(kp), area, stride, size)
    assert (loop["offset_weight"] > 0).sum() > 20
    for name in c.output_names:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-6, rtol=0, err_msg=name)
        np.testing.assert_allclose(out[name], loop[name], atol=1e-6, rtol=0, err_msg=name)


def test_dekr_kernel_zero_offsets_count_as_unset(lib):
    # keypoints and centres exactly on cells: offsets of exactly (0, 0), which DeepLabCut's
    # "already set" test (offset != 0) counts as unset; against the loop oracle, exactly
    rng = np.random.default_rng(7)
    stride, (w, h), k, n = 2, (9, 8), 3, 5
    c = DEKR(k, stride=stride, heatmap_size=(w, h), pos_dist_thresh=9.0, centers_given=True)
    kp = np.empty((2, n, k + 1, 3), np.float32)
    kp[..., :2] = rng.integers(1, [w - 1, h - 1], (2, n, k + 1, 2)) * stride + stride / 2
    kp[..., 2] = 2
    area = rng.choice([1.0, 4.0, 16.0], (2, n)).astype(np.float32)
    _, x, y, v = split_keypoints(kp)
    args = kernels_multi.dekr_args(c, x, y, v, area)
    out = {name: np.full(s, -1.0, np.float32) for name, s in c.output_shapes(2, k).items()}
    lib.launch_dekr(*(ptr(a) for a in args), ptr(out["heatmap"]), ptr(out["heatmap_weight"]),
                    ptr(out["offset"]), ptr(out["offset_weight"]), 2, n, k + 1, h, w,
                    *(ctypes.c_float(float(s)) for s in kernels_multi.dekr_scalars(c)), 3, 64)
    loop = dekr_loop(kp, area, stride, (w, h), pos_dist_thresh=9.0)
    for name in ("offset", "offset_weight"):
        np.testing.assert_array_equal(out[name], loop[name], err_msg=name)
