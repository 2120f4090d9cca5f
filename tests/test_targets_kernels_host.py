"""The fused CUDA kernels' C++ source, compiled for the host with g++ (CUDA built-ins
emulated: a launch runs every (block, thread) pair in turn, so the grid-stride loop and the
index arithmetic are exercised) and compared with the vectorised NumPy path (1e-6).
This checks the kernels' logic on machines without a GPU; ``test_targets_gpu.py`` checks
the real launches under CUDA. Skipped when no C++ compiler is found."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from posefeed.targets import DLCHeatmap, GaussianHeatmap, UDPHeatmap, kernels

CXX = shutil.which("g++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler")

PRELUDE = r"""
#include <cmath>
struct posefeed_dim3 { unsigned x; };
static posefeed_dim3 blockIdx, blockDim, threadIdx, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
using std::exp; using std::isfinite; using std::isnan; using std::trunc;
"""

LAUNCHERS = r"""
extern "C" void launch_gaussian(const float* kp, float* out, float* weight, int B, int N, int K,
    int H, int W, float sfx, float sfy, double radius, double c0, float inv2s2, int mode,
    unsigned grid, unsigned block) {
    gridDim.x = grid; blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {
        blockIdx.x = b; threadIdx.x = t;
        gaussian_targets(kp, out, weight, B, N, K, H, W, sfx, sfy, radius, c0, inv2s2, mode);
    }
}
extern "C" void launch_dlc(const float* kp, const long long* gx, const long long* gy, float* hm,
    float* hw, float* loc, float* lw, int B, int N, int K, int H, int W, double inv2s2, double t2,
    double scale, int plateau, int with_locref, int zero_weight_unlabeled, unsigned grid,
    unsigned block) {
    gridDim.x = grid; blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {
        blockIdx.x = b; threadIdx.x = t;
        dlc_targets(kp, gx, gy, hm, hw, loc, lw, B, N, K, H, W, inv2s2, t2, scale, plateau,
                    with_locref, zero_weight_unlabeled);
    }
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("kernels")
    src = d / "kernels.cpp"
    body = kernels._COMMON + kernels._GAUSSIAN_TARGETS + kernels._DLC_TARGETS
    src.write_text(PRELUDE + body + LAUNCHERS)
    so = d / "kernels.so"
    subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    return ctypes.CDLL(str(so))


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    assert a.flags.c_contiguous
    return ctypes.c_void_p(a.ctypes.data)


def random_keypoints(b, n, k, w, h, seed):
    rng = np.random.default_rng(seed)
    kps = np.empty((b, n, k, 3), np.float32)
    kps[..., 0] = rng.uniform(-0.2 * w, 1.2 * w, (b, n, k))
    kps[..., 1] = rng.uniform(-0.2 * h, 1.2 * h, (b, n, k))
    kps[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k), p=[0.1, 0.1, 0.2, 0.6])
    kps[0, 0, 0] = (np.nan, np.nan, 0)
    return kps


@pytest.mark.parametrize("make, mode", [
    (lambda: GaussianHeatmap(input_size=(64, 48), heatmap_size=(16, 12)), 0),
    (lambda: GaussianHeatmap(input_size=(64, 48), heatmap_size=(16, 12), unbiased=True), 1),
    (lambda: GaussianHeatmap(input_size=(45, 33), heatmap_size=(15, 11), sigma=1.5), 0),
    (lambda: UDPHeatmap(input_size=(64, 48), heatmap_size=(16, 12)), 2),
    (lambda: UDPHeatmap(input_size=(45, 33), heatmap_size=(15, 11), sigma=1.5), 2),
])
@pytest.mark.parametrize("n", [1, 3])
def test_gaussian_kernel(lib, make, mode, n):
    codec = make()
    kps = random_keypoints(3, n, 5, *codec.input_size, seed=n)
    b, n_, k = kps.shape[:3]
    w, h = codec.heatmap_size
    out = np.full((b, k, h, w), -1.0, np.float32)
    weight = np.full((b, k), -1.0, np.float32)
    sfx, sfy, r, c0, inv2s2 = kernels.gaussian_args(codec, mode)
    lib.launch_gaussian(ptr(kps), ptr(out), ptr(weight), b, n_, k, h, w, ctypes.c_float(sfx),
                        ctypes.c_float(sfy), ctypes.c_double(r), ctypes.c_double(c0),
                        ctypes.c_float(inv2s2), mode, 7, 32)  # 224 threads < cells: grid-stride
    ref = codec.encode(kps)
    np.testing.assert_allclose(out, ref["heatmap"], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(weight, ref["keypoint_weight"])


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
@pytest.mark.parametrize("stride, size, n, locref, strict", [(2, (24, 20), 1, True, False),
                                                             (3, (17, 13), 3, True, True),
                                                             (2.5, (15, 11), 2, False, False)])
def test_dlc_kernel(lib, mode, stride, size, n, locref, strict):
    codec = DLCHeatmap(stride=stride, heatmap_size=size, mode=mode, locref=locref,
                       zero_weight_unlabeled=strict)
    kps = random_keypoints(2, n, 4, size[0] * stride, size[1] * stride, seed=int(stride * 10) + n)
    b, n_, k = kps.shape[:3]
    w, h = size
    hm = np.full((b, k, h, w), -1, np.float32)
    hw = np.full((b, k, h, w), -1, np.float32)
    loc = np.full((b, 2 * k, h, w), -1, np.float32)
    lw = np.full((b, 2 * k, h, w), -1, np.float32)
    lib.launch_dlc(ptr(kps), ptr(codec.grid_x), ptr(codec.grid_y), ptr(hm), ptr(hw), ptr(loc), ptr(lw),
                   b, n_, k, h, w, ctypes.c_double(1 / (2 * codec.std ** 2)),
                   ctypes.c_double(codec.pos_dist_thresh ** 2), ctypes.c_double(codec.locref_scale),
                   int(mode == "plateau"), int(locref), int(strict), 5, 64)
    ref = codec.encode(kps)
    got = {"heatmap": hm, "heatmap_weight": hw, "locref": loc, "locref_weight": lw}
    for name in codec.output_names:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-6, rtol=0, err_msg=name)
    if not locref:
        assert (loc == -1).all()  # untouched
