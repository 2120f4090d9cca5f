"""CuPy paths of the multi-animal codecs (skipped without CUDA): the fused kernels
(posefeed/targets/kernels_multi.py) equal the vectorised CuPy path and the NumPy path, CuPy in
-> CuPy out, and ``encode(out=)`` writes every element."""
from __future__ import annotations

import numpy as np
import pytest

from posefeed.targets import DEKR, PartAffinityField

pytestmark = pytest.mark.gpu

GRAPH = [(i, i + 1) for i in range(11)] + [(0, 5), (1, 6), (2, 7), (3, 8), (4, 9), (5, 10), (6, 11), (0, 11),
                                           (2, 9)]


def crowd(seed, b=8, n=3, k=12, size=512.0):
    rng = np.random.default_rng(seed)
    x = np.empty((b, n, k, 3), np.float32)
    x[..., :2] = rng.uniform(0.3 * size, 0.7 * size, (b, 1, 1, 2)) + rng.normal(0, 60, (b, n, k, 2))
    x[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k), p=[0.05, 0.15, 0.2, 0.6])
    x[0, 0, 0, 0] = np.nan
    return x


@pytest.mark.parametrize("stride", [8, 2])
def test_paf_kernel_equals_vectorised(stride):
    cp = pytest.importorskip("cupy")
    size = (512 // stride, 512 // stride)
    fused = PartAffinityField(GRAPH, stride=stride, heatmap_size=size)
    vect = PartAffinityField(GRAPH, stride=stride, heatmap_size=size, use_kernel=False)
    kp = crowd(stride)
    a = fused.encode(cp.asarray(kp))["paf"]
    b = vect.encode(cp.asarray(kp))["paf"]
    c = vect.encode(kp)["paf"]
    assert isinstance(a, cp.ndarray) and a.dtype == cp.float32
    np.testing.assert_allclose(cp.asnumpy(a), cp.asnumpy(b), atol=1e-6, rtol=0)
    np.testing.assert_allclose(cp.asnumpy(a), c, atol=1e-6, rtol=0)
    buf = {"paf": cp.full(a.shape, cp.nan, dtype=cp.float32)}
    fused.encode(cp.asarray(kp), out=buf)
    np.testing.assert_allclose(cp.asnumpy(buf["paf"]), c, atol=1e-6, rtol=0)


@pytest.mark.parametrize("stride", [4, 2])
def test_dekr_kernel_equals_vectorised(stride):
    cp = pytest.importorskip("cupy")
    size = (512 // stride, 512 // stride)
    fused = DEKR(12, stride=stride, heatmap_size=size)
    vect = DEKR(12, stride=stride, heatmap_size=size, use_kernel=False)
    kp = crowd(stride)
    area = np.random.default_rng(stride).choice([900.0, 2500.0, 6400.0], (8, 3)).astype(np.float32)
    a = fused.encode(cp.asarray(kp), area=cp.asarray(area))
    b = vect.encode(cp.asarray(kp), area=cp.asarray(area))
    c = vect.encode(kp, area=area)
    for name in fused.output_names:
        assert isinstance(a[name], cp.ndarray) and a[name].dtype == cp.float32
        np.testing.assert_allclose(cp.asnumpy(a[name]), cp.asnumpy(b[name]), atol=1e-6, rtol=0, err_msg=name)
        np.testing.assert_allclose(cp.asnumpy(a[name]), c[name], atol=1e-6, rtol=0, err_msg=name)


@pytest.mark.parametrize("stride", [4, 2])
def test_dekr_zero_offsets_on_cell_centred_crowds(stride):
    # keypoints and centres exactly on cells: offsets of exactly (0, 0), which DeepLabCut's
    # "already set" test (offset != 0) counts as unset; both CuPy paths against the loop oracle
    cp = pytest.importorskip("cupy")
    from oracles import dekr_loop  # noqa: PLC0415

    rng = np.random.default_rng(stride)
    w, h, k, n = 9, 8, 3, 5
    fused = DEKR(k, stride=stride, heatmap_size=(w, h), pos_dist_thresh=9.0, centers_given=True)
    vect = DEKR(k, stride=stride, heatmap_size=(w, h), pos_dist_thresh=9.0, centers_given=True, use_kernel=False)
    for _ in range(4):
        kp = np.empty((2, n, k + 1, 3), np.float32)
        kp[..., :2] = (rng.integers(1, [w - 1, h - 1], (2, n, k + 1, 2)) * stride + stride / 2
                       + rng.choice([0, 0, 0.3], (2, n, k + 1, 2)))
        kp[..., 2] = 2
        area = rng.choice([1.0, 4.0, 16.0], (2, n)).astype(np.float32)
        ref = dekr_loop(kp, area, stride, (w, h), pos_dist_thresh=9.0)
        for c in (fused, vect):
            got = c.encode(cp.asarray(kp), area=cp.asarray(area))
            for name in ("offset", "offset_weight"):
                np.testing.assert_array_equal(cp.asnumpy(got[name]), ref[name], err_msg=name)
