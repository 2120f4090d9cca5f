"""The compiled CPU kernels of the multi-animal codecs (posefeed.targets.kernels_multi_cpu,
numba) against the vectorised array version (``kernel="numpy"``) and the per-element loops
written from DeepLabCut 3.0.2's generators (tests/oracles.py): crowded random batches with
NaN / -1 / 0 visibility, keypoints on grid values (band ends exactly on cells), far and
overflowing coordinates, kept buffers reused across calls with different instance counts,
caller buffers full of NaN, missing areas. (tests/test_targets_paf.py and
test_targets_dekr.py run all their hand-worked cases on both implementations too.)"""
from __future__ import annotations

import numpy as np
import pytest

from oracles import dekr_centers, dekr_loop, paf_loop
from posefeed.integrations.dlc_multi import DEKRTargets, PAFTargets
from posefeed.targets import DEKR, PartAffinityField
from posefeed.targets.dekr import keypoint_areas

pytest.importorskip("numba")

GRAPH = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4), (1, 3), (2, 2), (4, 0), (0, 1)]


def crowd(rng, b, n, k, w, h, spread, p_vis=(0.1, 0.1, 0.2, 0.6)):
    """``(b, n, k, 3)`` float32: animals around one spot per sample (they overlap), v drawn
    from (-1, 0, 1, 2) with ``p_vis``, one NaN coordinate."""
    x = np.empty((b, n, k, 3), np.float32)
    centre = rng.uniform([0.3 * w, 0.3 * h], [0.7 * w, 0.7 * h], (b, 1, 1, 2))
    x[..., :2] = centre + rng.normal(0, spread, (b, n, k, 2))
    x[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k), p=list(p_vis))
    if n and k:
        x[0, 0, 0, 0] = np.nan
    return x


@pytest.mark.parametrize("stride, size, n, width", [(2, (24, 20), 4, 20.0), (8, (12, 10), 3, 20.0),
                                                    (2.5, (17, 21), 5, 7.0), (1, (30, 26), 3, 3.0),
                                                    (3, (16, 12), 6, 12.0)])
def test_paf_kernel_equals_array_version_and_dlc_loop(stride, size, n, width):
    rng = np.random.default_rng(int(10 * stride) + n)
    fast = PartAffinityField(GRAPH, stride=stride, heatmap_size=size, width=width, kernel="numba")
    arr = PartAffinityField(GRAPH, stride=stride, heatmap_size=size, width=width, kernel="numpy")
    for spread in (4.0, 15.0):
        x = crowd(rng, 3, n, 5, size[0] * stride, size[1] * stride, spread)
        ref = paf_loop(x, GRAPH, stride, size, width)
        assert (ref != 0).sum() > 50
        got = fast.encode(x)["paf"]
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(got, arr.encode(x)["paf"])


def test_paf_kernel_on_grid_values_and_axis_aligned_limbs():
    # integer keypoints on DLC's grid values (stride 4: 2, 6, 10, ...) and on the lines
    # between, many limbs horizontal or vertical: band ends and edges fall exactly on cells
    rng = np.random.default_rng(7)
    c = PartAffinityField(GRAPH, stride=4, heatmap_size=(16, 14), width=8.0, kernel="numba")
    for _ in range(4):
        x = np.zeros((4, 3, 5, 3), np.float32)
        x[..., 0] = rng.integers(0, 17, (4, 3, 5)) * 4 + 2
        x[..., 1] = rng.integers(0, 15, (4, 3, 5)) * 4 + rng.choice([0, 2], (4, 3, 5))
        x[:, :, 1, 0] = x[:, :, 0, 0]  # limb (0, 1) vertical
        x[:, :, 2, 1] = x[:, :, 1, 1]  # limb (1, 2) horizontal
        x[..., 2] = 2
        np.testing.assert_array_equal(c.encode(x)["paf"], paf_loop(x, GRAPH, 4, (16, 14), 8.0))


def test_paf_kernel_far_and_overflowing_coordinates():
    c = PartAffinityField([(0, 1), (1, 2)], stride=4, heatmap_size=(10, 8), width=6.0, kernel="numba")
    x = np.array([[[(10, 10, 2), (30, 20, 2), (1e6, -3e5, 2)],      # limb 1 ends far off the map
                   [(12, 14, 2), (1e20, 12, 2), (20, 20, 2)]]],     # squares overflow float32
                 np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = paf_loop(x, [(0, 1), (1, 2)], 4, (10, 8), 6.0)
    np.testing.assert_array_equal(c.encode(x)["paf"], ref)


def test_paf_kernel_kept_buffers_across_instance_counts():
    rng = np.random.default_rng(3)
    size = (20, 16)
    c = PartAffinityField(GRAPH, stride=2, heatmap_size=size, width=6.0, kernel="numba")
    enc = c.encoder()
    for n in (3, 1, 5, 0, 5, 2, 2):
        x = crowd(rng, 2, n, 5, 40, 32, 6.0)
        ref = paf_loop(x, GRAPH, 2, size, 6.0)
        np.testing.assert_array_equal(enc(x)["paf"], ref)
        buf = {"paf": np.full((2, 2 * len(GRAPH), size[1], size[0]), np.nan, np.float32)}
        assert c.encode(x, out=buf)["paf"] is buf["paf"]
        np.testing.assert_array_equal(buf["paf"], ref)


def dekr_check(got, want, atol):
    for name, w in want.items():
        assert got[name].dtype == np.float32 and got[name].shape == w.shape, name
        assert ((got[name] != 0) == (w != 0)).all(), name  # the same cells written
        np.testing.assert_allclose(got[name], w, atol=atol, rtol=0, err_msg=name)


@pytest.mark.parametrize("stride, size, n, spread", [(4, (16, 14), 4, 6.0), (2, (24, 20), 5, 4.0),
                                                    (2.5, (18, 18), 6, 3.0), (8, (10, 9), 3, 10.0)])
def test_dekr_kernel_matches_array_version_and_dlc_loop(stride, size, n, spread):
    rng = np.random.default_rng(int(10 * stride) + n)
    k = 5
    fast = DEKR(k, stride=stride, heatmap_size=size, kernel="numba")
    arr = DEKR(k, stride=stride, heatmap_size=size, kernel="numpy")
    given = DEKR(k, stride=stride, heatmap_size=size, centers_given=True, kernel="numba")
    for _ in range(3):
        x = crowd(rng, 3, n, k, size[0] * stride, size[1] * stride, spread, p_vis=(0.05, 0.15, 0.2, 0.6))
        area = rng.choice([64.0, 100.0, 400.0], (3, n)).astype(np.float32)  # ties included
        ref = dekr_loop(dekr_centers(x), area, stride, size)
        assert (ref["offset_weight"] > 0).sum() > 20
        got = fast.encode(x, area=area)
        dekr_check(got, ref, 1e-6)  # the separable window: <= 3e-7 (DEKR._windows)
        # the same separable product; libm's expf vs NumPy's SIMD exp (a few ulp each; 2.4e-7
        # measured): 5e-7 leaves room for NumPy's other SIMD paths on other CPUs
        dekr_check(got, arr.encode(x, area=area), 5e-7)
        dekr_check(given.encode(dekr_centers(x), area=area), ref, 1e-6)


def cell_centred_crowd(rng, b, n, k, w, h, stride):
    """Animals with keypoints and centres mostly exactly on cells (``x_s`` integer: offsets
    of exactly (0, 0), which DeepLabCut counts as unset), a few 0.3 px off."""
    x = np.empty((b, n, k + 1, 3), np.float32)
    x[..., :2] = (rng.integers(1, [w - 1, h - 1], (b, n, k + 1, 2)) * stride + stride / 2
                  + rng.choice([0, 0, 0.3], (b, n, k + 1, 2)))
    x[..., 2] = rng.choice([0, 2], (b, n, k + 1), p=[0.1, 0.9])
    x[..., -1, 2] = 2
    return x


@pytest.mark.parametrize("stride, size, t", [(2, (8, 8), 5.0), (4, (10, 7), 9.0), (2, (11, 9), 9.0)])
def test_dekr_kernel_equals_array_version_on_cell_centred_crowds(stride, size, t):
    # DeepLabCut's "already set" is offset != 0: exact (0, 0) writes on cells several
    # instances cover, in both implementations and across kept buffers
    rng = np.random.default_rng(int(stride * t) + size[0])
    k = 3
    fast = DEKR(k, stride=stride, heatmap_size=size, pos_dist_thresh=t, centers_given=True, kernel="numba")
    arr = DEKR(k, stride=stride, heatmap_size=size, pos_dist_thresh=t, centers_given=True, kernel="numpy")
    encs = (fast.encoder(), arr.encoder())
    zeros = 0
    for n in (4, 2, 5, 3, 5):
        x = cell_centred_crowd(rng, 2, n, k, *size, stride)
        area = rng.choice([1.0, 4.0, 16.0], (2, n)).astype(np.float32)  # ties included
        ref = dekr_loop(x, area, stride, size, pos_dist_thresh=t)
        zeros += int(((ref["offset"][:, 0::2] == 0) & (ref["offset"][:, 1::2] == 0)
                      & (ref["offset_weight"][:, 0::2] > 0)).sum())
        for got in (fast.encode(x, area=area), arr.encode(x, area=area), *(e(x, area=area) for e in encs)):
            for name in ("offset", "offset_weight", "heatmap_weight"):
                np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
            np.testing.assert_allclose(got["heatmap"], ref["heatmap"], atol=5e-7, rtol=0)
    assert zeros > 2  # (0, 0) offsets left at the end: the case is exercised


def test_dekr_kernel_missing_areas_are_the_keypoints_box():
    rng = np.random.default_rng(5)
    c = DEKR(4, stride=2, heatmap_size=(20, 16), kernel="numba")
    x = crowd(rng, 2, 3, 4, 40, 32, 4.0)
    clean = x.copy()
    bad = ~np.isfinite(clean[..., 0]) | ~np.isfinite(clean[..., 1])
    clean[..., 2][bad] = np.minimum(clean[..., 2][bad], 0)
    box = keypoint_areas(np, clean[..., 0], clean[..., 1], clean[..., 2])
    ref = dekr_loop(dekr_centers(x), box, 2, (20, 16))
    dekr_check(c.encode(x), ref, 1e-6)
    part = np.where(rng.random((2, 3)) < 0.5, np.nan, box).astype(np.float32)  # some unknown
    dekr_check(c.encode(x, area=part), ref, 1e-6)


def test_dekr_kernel_kept_buffers_across_instance_counts_and_masks():
    rng = np.random.default_rng(11)
    size = (20, 16)
    c = DEKR(4, stride=2, heatmap_size=size, kernel="numba")
    enc = c.encoder()
    seq = []
    for n in (3, 1, 5, 0, 4, 4, 2):
        x = crowd(rng, 2, n, 4, 40, 32, 4.0, p_vis=(0.05, 0.15, 0.2, 0.6))
        seq.append(x)
    ignored = seq[1].copy()
    ignored[..., 2] = -1  # every map's base weight becomes 0, then back to bg_weight
    seq[3:3] = [ignored]
    for x in seq + [seq[0]]:
        n = x.shape[1]
        area = rng.choice([64.0, 100.0], (2, n)).astype(np.float32)
        ref = dekr_loop(dekr_centers(x), area, 2, size) if n else None
        got = enc(x, area=area)
        buf = {name: np.full(s, np.nan, np.float32) for name, s in c.output_shapes(2, 4).items()}
        c.encode(x, out=buf, area=area)
        if ref is None:  # no instances: every map empty, weights bg
            assert (got["heatmap"] == 0).all() and (got["heatmap_weight"] == np.float32(0.1)).all()
            assert (got["offset"] == 0).all() and (got["offset_weight"] == 0).all()
            ref = {name: np.asarray(a).copy() for name, a in got.items()}
        dekr_check(got, ref, 1e-6)
        dekr_check(buf, ref, 1e-6)


def test_kernel_choice_is_validated_and_passed_through():
    with pytest.raises(ValueError, match="kernel must be"):
        PartAffinityField([(0, 1)], stride=4, heatmap_size=(5, 4), kernel="fast")
    with pytest.raises(ValueError, match="kernel must be"):
        DEKR(2, stride=4, heatmap_size=(5, 4), kernel="fast")
    assert PAFTargets([(0, 1)], 20.0, kernel="numpy").codec(4.0, (5, 4))._cpu_kernel is False
    assert PAFTargets([(0, 1)], 20.0).codec(4.0, (5, 4))._cpu_kernel is True
    assert DEKRTargets(2, 17, kernel="numpy").codec(4.0, (5, 4))._cpu_kernel is False
    assert DEKRTargets(2, 17).codec(4.0, (5, 4))._cpu_kernel is True
