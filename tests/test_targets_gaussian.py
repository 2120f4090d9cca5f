"""GaussianHeatmap (MSRA) codec: hand-worked values at chosen cells (incl. an odd stride and
a non-integer 3-sigma radius), the weight rules one by one, MMPose's per-instance patch loop
written here as the reference, decoders (0.25 shift, DARK) and property tests."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posefeed.targets import GaussianHeatmap

from helpers import kp
from oracles import mmpose_loop


def g2(dx, dy, sigma):
    return math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))


def test_shapes():
    c = GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64))
    out = c.encode(np.zeros((2, 3, 17, 3), np.float32))
    assert list(out) == ["heatmap", "keypoint_weight"]
    assert out["heatmap"].shape == (2, 17, 64, 48) and out["heatmap"].dtype == np.float32
    assert out["keypoint_weight"].shape == (2, 17) and out["keypoint_weight"].dtype == np.float32


def test_hand_worked_stride4():
    c = GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)
    # (41, 62) px / 4 = (10.25, 15.5) cells -> mu = trunc(+0.5) = (10, 16)
    hm = c.encode(kp((41.0, 62.0, 2)))["heatmap"][0, 0]
    assert hm[16, 10] == pytest.approx(1.0)
    assert hm[17, 12] == pytest.approx(g2(2, 1, 2), abs=1e-6)
    assert hm[16, 16] == pytest.approx(g2(6, 0, 2), abs=1e-7)   # |dx| = 6 = 3 sigma: inside
    assert hm[16, 17] == 0.0                                     # outside the 13x13 patch
    assert hm[22, 16] == pytest.approx(g2(6, 6, 2), abs=1e-8)   # patch corner
    assert hm[9, 10] == 0.0
    assert np.count_nonzero(hm) == 13 * 13


def test_hand_worked_odd_stride_and_subpixel():
    c = GaussianHeatmap(input_size=(150, 150), heatmap_size=(50, 50), sigma=2.0)
    # stride 3: (7.4, 8.6) / 3 = (2.467, 2.867) -> mu = (2, 3)
    hm = c.encode(kp((7.4, 8.6, 2)))["heatmap"][0, 0]
    assert hm[3, 2] == pytest.approx(1.0)
    assert hm[4, 0] == pytest.approx(g2(2, 1, 2), abs=1e-6)
    assert hm.shape == (50, 50)
    # patch clipped at the left/top border: columns 0..8, rows 0..9
    assert np.count_nonzero(hm) == 9 * 10


def test_non_integer_radius_matches_mmpose_patch_placement():
    """sigma = 1.5: R = 4.5, patch length 10, peak at left + 5; MMPose computes
    left = int(mu - 4.5) with truncation toward zero, so near the left border the peak
    moves: mu = 2 -> left = int(-2.5) = -2 -> peak at column 3 (an MMPose quirk we keep)."""
    c = GaussianHeatmap(input_size=(64, 64), heatmap_size=(64, 64), sigma=1.5)
    hm = c.encode(kp((2.0, 20.0, 2), ))["heatmap"][0, 0]
    # rows: mu = 20 -> top = int(15.5) = 15, peak row 20; columns: peak at 3
    assert hm[20, 3] == pytest.approx(1.0)
    assert hm[20, 2] == pytest.approx(g2(1, 0, 1.5), abs=1e-6)
    # right = int(2 + 4.5 + 1) = 7 -> columns [0, 7): column 6 is in, column 7 is outside
    assert hm[20, 6] == pytest.approx(g2(3, 0, 1.5), abs=1e-6) and hm[20, 7] == 0
    hm_r = c.encode(kp((30.0, 20.0, 2)))["heatmap"][0, 0]        # interior: left 25, right 35
    assert hm_r[20, 30] == pytest.approx(1.0) and hm_r[20, 25] == pytest.approx(g2(5, 0, 1.5), abs=1e-6)
    assert hm_r[20, 34] == pytest.approx(g2(4, 0, 1.5), abs=1e-6) and hm_r[20, 35] == 0


@pytest.mark.parametrize(
    "x, weight, nonzero_col",
    [
        (53.0 * 4, 1.0, 47),     # mu = 53, left = 47 < 48: one column drawn
        (53.5 * 4, 0.0, None),   # mu = 54, left = 48 >= W: off
        (-7.4 * 4, 1.0, 0),      # k = -7.4 -> int(-6.9) = -6, right = 1: column 0 drawn
        (-7.5 * 4, 1.0, None),   # k = -7.5 -> int(-7.0) = -7, right = 0: nothing drawn, but
                                 # MMPose tests right < 0, so the weight stays 1
        (-8.5 * 4, 0.0, None),   # k = -8.5 -> mu = -8, right = -1 < 0: off
    ],
)
def test_patch_fully_off_rule(x, weight, nonzero_col):
    c = GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)
    out = c.encode(kp((x, 100.0, 2)))
    assert out["keypoint_weight"][0, 0] == weight
    hm = out["heatmap"][0, 0]
    if nonzero_col is None:
        assert not hm.any()
    else:
        cols = np.nonzero(hm.any(axis=0))[0]
        assert cols.tolist() == [nonzero_col]
    if x == -7.4 * 4:  # peak column -6: column 0 holds exp(-36/8) on the peak row 25
        assert hm[25, 0] == pytest.approx(g2(6, 0, 2), abs=1e-7)


@pytest.mark.parametrize("v, weight", [(2, 1.0), (1, 1.0), (0, 0.0), (-1, 0.0)])
def test_visibility(v, weight):
    out = GaussianHeatmap().encode(kp((40.0, 40.0, v)))
    assert out["keypoint_weight"][0, 0] == weight
    assert bool(out["heatmap"].any()) == (weight > 0)


def test_nan_and_two_instances():
    c = GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64))
    k = np.zeros((1, 3, 1, 3), np.float32)
    k[0, 0, 0] = (40.0, 40.0, 2)
    k[0, 1, 0] = (52.0, 40.0, 2)          # 3 cells to the right
    k[0, 2, 0] = (np.nan, np.nan, 0)
    out = c.encode(k)
    hm = out["heatmap"][0, 0]
    assert np.isfinite(hm).all()
    assert hm[10, 10] == pytest.approx(1.0) and hm[10, 13] == pytest.approx(1.0)
    assert hm[10, 11] == pytest.approx(g2(1, 0, 2), abs=1e-6)           # max(g(1), g(2))
    assert hm[10, 16] == pytest.approx(g2(3, 0, 2), abs=1e-6)           # only the second
    assert out["keypoint_weight"][0, 0] == 1.0


def test_unbiased_full_map_float_centre():
    c = GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0, unbiased=True)
    out = c.encode(kp((41.0, 62.0, 2)))            # (10.25, 15.5) cells
    hm = out["heatmap"][0, 0]
    assert hm[15, 10] == pytest.approx(g2(0.25, 0.5, 2), abs=1e-6)
    assert hm[0, 47] == pytest.approx(g2(47 - 10.25, 15.5, 2), abs=1e-12)
    assert hm[16, 30] == pytest.approx(g2(19.75, 0.5, 2), abs=1e-9)      # beyond 3 sigma: still drawn
    # weight rule: mu - 6 >= 48 off; mu = 53.9 cells in (53.9 - 6 < 48)
    assert c.encode(kp((54.0 * 4, 60.0, 2)))["keypoint_weight"][0, 0] == 0
    assert c.encode(kp((53.9 * 4, 60.0, 2)))["keypoint_weight"][0, 0] == 1
    assert c.encode(kp((-6.9 * 4, 60.0, 2)))["keypoint_weight"][0, 0] == 1   # -6.9 + 7 >= 0
    assert c.encode(kp((-7.1 * 4, 60.0, 2)))["keypoint_weight"][0, 0] == 0


@pytest.mark.parametrize("sigma, sizes", [(2.0, ((192, 256), (48, 64))), (1.5, ((99, 70), (33, 35))),
                                          (3.0, ((288, 384), (72, 96)))])
def test_matches_mmpose_loop(sigma, sizes):
    rng = np.random.default_rng(3)
    c = GaussianHeatmap(input_size=sizes[0], heatmap_size=sizes[1], sigma=sigma)
    w, h = sizes[0]
    k = np.empty((3, 2, 6, 3), np.float32)
    k[..., 0] = rng.uniform(-0.2 * w, 1.2 * w, (3, 2, 6))
    k[..., 1] = rng.uniform(-0.2 * h, 1.2 * h, (3, 2, 6))
    k[..., 2] = rng.choice([-1, 0, 1, 2], (3, 2, 6), p=[0.1, 0.1, 0.2, 0.6])
    out = c.encode(k)
    ref_hm, ref_wt = mmpose_loop(c, k)
    np.testing.assert_allclose(out["heatmap"], ref_hm, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(out["keypoint_weight"], ref_wt)


def test_decode_quarter_shift_hand_made():
    c = GaussianHeatmap(input_size=(40, 40), heatmap_size=(10, 10))
    hm = np.zeros((1, 3, 10, 10), np.float32)
    hm[0, 0, 7, 5] = 1.0
    hm[0, 0, 7, 6] = 0.5      # right neighbour larger -> +0.25 in x
    hm[0, 0, 6, 5] = 0.3      # upper neighbour larger -> -0.25 in y
    hm[0, 1, 4, 1] = 1.0      # x = 1: MMPose's guard is 1 < x, so no x shift
    hm[0, 1, 4, 2] = 0.5
    dec, score = c.decode(hm)
    np.testing.assert_allclose(dec[0, 0], [5.25 * 4, 6.75 * 4])
    np.testing.assert_allclose(dec[0, 1], [1 * 4, 4 * 4])
    np.testing.assert_array_equal(dec[0, 2], [-1, -1])
    np.testing.assert_allclose(score[0], [1.0, 1.0, 0.0])


def test_round_trip_msra():
    """encode -> decode (0.25 shift). The patch is symmetric about its integer peak
    mu = floor(k/s + 0.5) for interior keypoints, so both neighbours are equal, no shift is
    applied, and decode returns mu * s: |error| <= 0.5 cell = 0.5 * s px per axis."""
    rng = np.random.default_rng(4)
    c = GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64))
    k = np.empty((2, 1, 17, 3), np.float32)
    k[..., 0] = rng.uniform(12, 180, (2, 1, 17))
    k[..., 1] = rng.uniform(12, 244, (2, 1, 17))
    k[..., 2] = 2
    dec, score = c.decode(c.encode(k)["heatmap"])
    assert np.abs(dec - k[:, 0, :, :2]).max() <= 0.5 * 4 + 1e-4
    np.testing.assert_allclose(score, 1.0)


def test_round_trip_unbiased_dark():
    """unbiased encode -> DARK decode. For a keypoint >= 3 sigma + 5 cells from every
    border, the blurred map is a sampled Gaussian convolved with cv2's 11-tap kernel
    (sigma_b = 2): its log is a quadratic up to the kernel's truncation, so one Newton step
    lands within a small fraction of a cell. Measured max 3.3e-4 cell over this set; the
    bound asserted is 0.01 cell = 0.04 px (stride 4), 30x the measured error."""
    rng = np.random.default_rng(5)
    c = GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64), unbiased=True)
    k = np.empty((4, 1, 17, 3), np.float32)
    k[..., 0] = rng.uniform(11 * 4, 37 * 4, (4, 1, 17))
    k[..., 1] = rng.uniform(11 * 4, 53 * 4, (4, 1, 17))
    k[..., 2] = 2
    dec, _ = c.decode(c.encode(k)["heatmap"])           # dark is the default when unbiased
    assert np.abs(dec - k[:, 0, :, :2]).max() <= 0.04
    dec_q, _ = c.decode(c.encode(k)["heatmap"], dark=False)
    assert np.abs(dec_q - k[:, 0, :, :2]).max() <= (0.5 + 0.25) * 4 + 1e-4


def test_dark_matches_mmpose_formula_at_one_point():
    """DARK's Newton step by hand on a known map: the log of a 2-D Gaussian
    exp(-((x-a)^2+(y-b)^2)/(2 s^2)) is quadratic, its Hessian is -I/s^2 and the Newton step
    from any cell lands exactly on (a, b). With blur kernel size 1 (no modulation) the
    decoder must recover (a, b) to float32 precision."""
    c = GaussianHeatmap(input_size=(32, 32), heatmap_size=(32, 32), blur_kernel_size=1)
    yy, xx = np.mgrid[:32, :32].astype(np.float64)
    a, b = 13.3, 17.8
    hm = np.exp(-((xx - a) ** 2 + (yy - b) ** 2) / (2 * 2.0 ** 2)).astype(np.float32)[None, None]
    dec, score = c.decode(hm, dark=True)
    np.testing.assert_allclose(dec[0, 0], [a, b], atol=2e-4)
    assert score[0, 0] == pytest.approx(hm.max())


def test_decode_torch():
    torch = pytest.importorskip("torch")
    c = GaussianHeatmap()
    hm = torch.from_numpy(c.encode(kp((41.0, 62.0, 2)))["heatmap"])
    for dark in (False, True):
        dec, score = c.decode(hm, dark=dark)
        assert isinstance(dec, torch.Tensor) and isinstance(score, torch.Tensor)
        assert tuple(dec.shape) == (1, 1, 2) and dec.dtype == torch.float32
    dec, _ = c.decode(hm)
    assert dec[0, 0].tolist() == [40.0, 64.0]


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 2), n=st.integers(1, 3), k=st.integers(1, 4),
    hw=st.integers(4, 40), hh=st.integers(4, 40),
    stride=st.sampled_from([1, 2, 3, 4, 5]),
    sigma=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    unbiased=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties(b, n, k, hw, hh, stride, sigma, unbiased, seed):
    rng = np.random.default_rng(seed)
    w, h = hw * stride, hh * stride
    kps = np.empty((b, n, k, 3), np.float32)
    kps[..., 0] = rng.uniform(-0.5 * w, 1.5 * w, (b, n, k))
    kps[..., 1] = rng.uniform(-0.5 * h, 1.5 * h, (b, n, k))
    kps[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k))
    kps[rng.random((b, n, k)) < 0.1, :2] = np.nan
    c = GaussianHeatmap(input_size=(w, h), heatmap_size=(hw, hh), sigma=sigma, unbiased=unbiased)
    out = c.encode(kps)
    hm, wt = out["heatmap"], out["keypoint_weight"]
    assert hm.shape == (b, k, hh, hw) and wt.shape == (b, k)
    assert hm.dtype == np.float32 and wt.dtype == np.float32
    assert np.isfinite(hm).all() and hm.min() >= 0 and hm.max() <= 1
    assert set(np.unique(wt)) <= {0.0, 1.0}
    assert not hm[wt == 0].any()
    if not unbiased:
        ref_hm, ref_wt = mmpose_loop(c, kps)
        np.testing.assert_allclose(hm, ref_hm, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(wt, ref_wt)


def test_keypoints_on_the_image_border():
    c = GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)
    out = c.encode(kp((0.0, 0.0, 2), (191.0, 255.0, 2), (-0.5, 255.5, 2)))
    hm = out["heatmap"][0]
    # (0, 0): mu = (0, 0), patch clipped to 7x7
    assert hm[0, 0, 0] == pytest.approx(1.0) and np.count_nonzero(hm[0]) == 7 * 7
    # (191, 255) / 4 = (47.75, 63.75) -> mu = (48, 64): peak just outside, corner = g(1, 1)
    assert hm[1, 63, 47] == pytest.approx(g2(1, 1, 2), abs=1e-6) and np.count_nonzero(hm[1]) == 6 * 6
    # (-0.5, 255.5) / 4 = (-0.125, 63.875): mu = (int(0.375), int(64.375)) = (0, 64)
    assert hm[2, 63, 0] == pytest.approx(g2(0, 1, 2), abs=1e-6)
    np.testing.assert_array_equal(out["keypoint_weight"], [[1, 1, 1]])
