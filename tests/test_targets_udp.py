"""UDPHeatmap: hand-worked values (float centre inside the integer patch), the weight rule,
MMPose's ``generate_udp_gaussian_heatmaps`` loop written here as the reference, the UDP
DARK decoder and round trips."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posefeed.targets import UDPHeatmap

from helpers import kp
from oracles import mmpose_udp_loop


def g2(dx, dy, sigma=2.0):
    return math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))


def test_scale_factor_and_hand_values():
    c = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64))
    np.testing.assert_allclose(c.scale_factor, [191 / 47, 255 / 63], rtol=1e-7)
    # x = 191/47 * 10.3 -> 10.3 cells; y = 255/63 * 20.6 -> 20.6 cells (float centre)
    x, y = 191 / 47 * 10.3, 255 / 63 * 20.6
    hm = c.encode(kp((x, y, 2)))["heatmap"][0, 0]
    assert hm[21, 10] == pytest.approx(g2(0.3, 0.4), abs=2e-6)
    assert hm[20, 12] == pytest.approx(g2(1.7, 0.6), abs=2e-6)
    # patch: mu = (int(10.8), int(21.1)) = (10, 21); columns 4..16, rows 15..27
    assert hm[21, 16] == pytest.approx(g2(5.7, 0.4), abs=2e-6) and hm[21, 17] == 0
    assert hm[21, 4] == pytest.approx(g2(6.3, 0.4), abs=2e-6) and hm[21, 3] == 0
    assert hm[15, 10] > 0 and hm[14, 10] == 0 and hm[27, 10] > 0 and hm[28, 10] == 0


def test_corner_keypoints_map_to_corner_cells():
    """UDP aligns the first/last pixel centres with the first/last cells."""
    c = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64))
    hm = c.encode(kp((0.0, 0.0, 2), (191.0, 255.0, 2)))["heatmap"][0]
    assert hm[0, 0, 0] == pytest.approx(1.0) and hm[1, 63, 47] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("x, weight, drawn", [(53.0, 1.0, True), (53.5, 0.0, False), (-7.4, 1.0, True),
                                             (-7.5, 1.0, False), (-8.5, 0.0, False)])
def test_weight_rule(x, weight, drawn):
    # cells == pixels. mu = int(x + 0.5): 53 -> left 47 < 48 in; 53.5 -> mu 54, left 48 off;
    # -7.4 -> int(-6.9) = -6, right = 1 in; -7.5 -> int(-7.0) = -7, right = 0: nothing drawn
    # but MMPose tests right < 0, so the weight stays 1; -8.5 -> mu -8, right -1: off
    c = UDPHeatmap(input_size=(48, 64), heatmap_size=(48, 64))
    out = c.encode(kp((x, 30.0, 2)))
    assert out["keypoint_weight"][0, 0] == weight
    assert bool(out["heatmap"].any()) == drawn


@pytest.mark.parametrize("v, weight", [(2, 1.0), (1, 1.0), (0, 0.0), (-1, 0.0)])
def test_visibility(v, weight):
    out = UDPHeatmap().encode(kp((50.0, 50.0, v), (np.nan, np.nan, 0)))
    assert out["keypoint_weight"][0, 0] == weight and out["keypoint_weight"][0, 1] == 0
    assert np.isfinite(out["heatmap"]).all()


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 2), n=st.integers(1, 3), k=st.integers(1, 4),
    hw=st.integers(2, 40), hh=st.integers(2, 40), stride=st.sampled_from([1, 2, 3, 4]),
    sigma=st.sampled_from([1.0, 1.5, 2.0, 3.0]), seed=st.integers(0, 2**31 - 1),
)
def test_matches_mmpose_loop(b, n, k, hw, hh, stride, sigma, seed):
    rng = np.random.default_rng(seed)
    w, h = hw * stride, hh * stride
    c = UDPHeatmap(input_size=(w, h), heatmap_size=(hw, hh), sigma=sigma)
    kps = np.empty((b, n, k, 3), np.float32)
    kps[..., 0] = rng.uniform(-0.5 * w, 1.5 * w, (b, n, k))
    kps[..., 1] = rng.uniform(-0.5 * h, 1.5 * h, (b, n, k))
    kps[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k))
    out = c.encode(kps)
    ref_hm, ref_wt = mmpose_udp_loop(c, kps)
    assert out["heatmap"].dtype == np.float32 and out["heatmap"].shape == (b, k, hh, hw)
    np.testing.assert_allclose(out["heatmap"], ref_hm, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(out["keypoint_weight"], ref_wt)
    assert out["heatmap"].min() >= 0 and out["heatmap"].max() <= 1


def test_round_trip_interior():
    """encode -> decode (UDP DARK). Away from the borders (>= 3 sigma + 5 cells) the patch
    is the full 13x13 float-centred Gaussian; blurring keeps its log close to a quadratic
    (errors from the 3-sigma patch edge and the 1e-3 clip only), and one Newton step lands
    within 1e-3 cell of the centre. Measured max 1.5e-4 px at stride ~4; asserted 0.01 px."""
    rng = np.random.default_rng(11)
    c = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64))
    k = np.empty((4, 1, 17, 3), np.float32)
    k[..., 0] = rng.uniform(11 * 4.07, 36 * 4.07, (4, 1, 17))
    k[..., 1] = rng.uniform(11 * 4.05, 52 * 4.05, (4, 1, 17))
    k[..., 2] = 2
    dec, score = c.decode(c.encode(k)["heatmap"])
    assert np.abs(dec - k[:, 0, :, :2]).max() < 0.01
    assert (score > 0.9).all()


def test_mmpose_decode_scale_and_empty_maps():
    c = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64), mmpose_decode_scale=True)
    hm = np.zeros((1, 2, 64, 48), np.float32)
    hm[0, 0, 10, 20] = 1.0      # a single spike: symmetric neighbourhood, offset 0
    dec, score = c.decode(hm)
    np.testing.assert_allclose(dec[0, 0], [20 * 192 / 47, 10 * 256 / 63], rtol=1e-6)
    np.testing.assert_array_equal(dec[0, 1], [-1, -1])
    assert score[0, 1] == 0


def test_decode_torch():
    torch = pytest.importorskip("torch")
    c = UDPHeatmap()
    hm = torch.from_numpy(c.encode(kp((100.0, 120.0, 2)))["heatmap"])
    dec, score = c.decode(hm)
    assert isinstance(dec, torch.Tensor) and isinstance(score, torch.Tensor)
    np.testing.assert_allclose(dec.numpy()[0, 0], [100.0, 120.0], atol=0.01)
