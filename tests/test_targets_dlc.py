"""DLCHeatmap: hand-worked values at chosen cells (sub-pixel, odd and fractional strides),
the truncated grid, visibility rules, overlapping individuals (DLC's last-writer rule), the
exact distance threshold, and a loop reference that follows DeepLabCut 3.x's
``HeatmapGenerator.forward`` / ``update`` (batch x keypoint x individual over the full map)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posefeed.targets import DLCHeatmap

from helpers import kp
from oracles import dlc_loop

STD = 2 * 17 / 3


def assert_matches_loop(c, keypoints):
    out = c.encode(keypoints)
    ref = dlc_loop(c, keypoints)
    assert list(out) == list(c.output_names)
    for name in c.output_names:
        assert out[name].dtype == np.float32 and out[name].shape == ref[name].shape, name
        np.testing.assert_allclose(out[name], ref[name], atol=1e-6, rtol=0, err_msg=name)
    return out


def test_grid_is_truncated():
    assert DLCHeatmap(stride=8, heatmap_size=(4, 3)).grid_x.tolist() == [4, 12, 20, 28]
    assert DLCHeatmap(stride=3, heatmap_size=(4, 3)).grid_x.tolist() == [1, 4, 7, 10]
    assert DLCHeatmap(stride=2.5, heatmap_size=(5, 3)).grid_x.tolist() == [1, 3, 6, 8, 11]
    assert DLCHeatmap(stride=2.5, heatmap_size=(5, 3)).grid_y.tolist() == [1, 3, 6]


def test_hand_worked_gaussian_stride8():
    c = DLCHeatmap(stride=8, heatmap_size=(8, 6))
    out = c.encode(kp((20.5, 13.25, 2)))
    # cell (row 1, col 2): gx = 20, gy = 12 -> d2 = 0.25 + 1.5625
    assert out["heatmap"][0, 0, 1, 2] == pytest.approx(math.exp(-1.8125 / (2 * STD ** 2)), abs=1e-7)
    # cell (row 4, col 7): gx = 60, gy = 36 -> d2 = 39.5^2 + 22.75^2 (beyond t: still drawn)
    d2 = 39.5 ** 2 + 22.75 ** 2
    assert out["heatmap"][0, 0, 4, 7] == pytest.approx(math.exp(-d2 / (2 * STD ** 2)), abs=1e-7)
    assert out["locref"][0, 0, 1, 2] == pytest.approx(0.5 / 7.2801, abs=1e-7)
    assert out["locref"][0, 1, 1, 2] == pytest.approx(1.25 / 7.2801, abs=1e-7)
    # gaussian mode: locref written everywhere, weighted only inside d2 <= 17^2
    assert out["locref"][0, 0, 4, 7] == pytest.approx(-39.5 / 7.2801, abs=1e-6)
    assert out["locref_weight"][0, 0, 4, 7] == 0 and out["locref_weight"][0, 1, 4, 7] == 0
    assert out["locref_weight"][0, 0, 1, 2] == 1 and out["locref_weight"][0, 1, 1, 2] == 1
    # (row 2, col 3): gx = 28, gy = 20 -> d2 = 56.25 + 45.5625 <= 289
    assert out["locref_weight"][0, 0, 2, 3] == 1
    # (row 0, col 4): gx = 36, gy = 4 -> d2 = 240.25 + 85.5625 > 289
    assert out["locref_weight"][0, 0, 0, 4] == 0
    assert out["heatmap_weight"].min() == 1


def test_hand_worked_odd_stride():
    c = DLCHeatmap(stride=3, heatmap_size=(20, 20))
    out = c.encode(kp((7.8, 4.3, 2)))
    # col 2: gx = int(7.5) = 7 (not 7.5); row 1: gy = int(4.5) = 4
    assert out["heatmap"][0, 0, 1, 2] == pytest.approx(math.exp(-(0.8 ** 2 + 0.3 ** 2) / (2 * STD ** 2)), abs=1e-7)
    assert out["locref"][0, 0, 1, 2] == pytest.approx(0.8 / 7.2801, abs=1e-6)
    assert out["locref"][0, 1, 1, 2] == pytest.approx(0.3 / 7.2801, abs=1e-6)
    assert_matches_loop(c, kp((7.8, 4.3, 2), (0.0, 0.0, 2), (59.0, 59.9, 1)))


def test_plateau_exact_threshold():
    c = DLCHeatmap(stride=1, heatmap_size=(64, 64), mode="plateau")  # gx = int(j + 0.5) = j
    out = c.encode(kp((20.0, 30.0, 2)))
    hm, lw = out["heatmap"][0, 0], out["locref_weight"][0, 0]
    assert hm[45, 28] == 1 and lw[45, 28] == 1       # dx 8, dy 15: d2 = 289 = t^2
    assert hm[45, 29] == 0 and lw[45, 29] == 0       # 81 + 225 = 306
    assert hm[30, 37] == 1 and hm[30, 38] == 0       # d = 17 / 18
    assert hm[13, 20] == 1 and hm[12, 20] == 0
    assert out["locref"][0, 0, 45, 28] == pytest.approx(-8 / 7.2801, abs=1e-6)
    assert out["locref"][0, 1, 45, 28] == pytest.approx(-15 / 7.2801, abs=1e-6)
    assert out["locref"][0, 0, 45, 29] == 0          # plateau: nothing outside the disk
    assert int(hm.sum()) == sum(1 for i in range(64) for j in range(64) if (i - 30) ** 2 + (j - 20) ** 2 <= 289)


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
def test_visibility_rules(mode):
    c = DLCHeatmap(stride=4, heatmap_size=(16, 16), mode=mode)
    k = np.zeros((1, 2, 4, 3), np.float32)
    k[0, 0] = [(30, 30, 2), (30, 30, 0), (30, 30, -1), (30, 30, 1)]
    k[0, 1] = [(10, 10, 0), (10, 10, 0), (10, 10, 2), (np.nan, np.nan, 0)]
    out = assert_matches_loop(c, k)
    w = out["heatmap_weight"][0, :, 0, 0]
    np.testing.assert_array_equal(w, [1, 1, 0, 1])   # -1 anywhere -> 0 on the whole map
    assert out["heatmap"][0, 0].max() == pytest.approx(1.0, abs=1e-3)
    assert not out["heatmap"][0, 1].any() and not out["locref_weight"][0, 2:4].any()
    assert out["heatmap"][0, 2].max() > 0            # drawn even though its weight is 0
    assert out["heatmap"][0, 3].max() > 0            # v = 1 draws
    for a in out.values():
        assert np.isfinite(a).all()
    strict = DLCHeatmap(stride=4, heatmap_size=(16, 16), mode=mode, zero_weight_unlabeled=True)
    out2 = assert_matches_loop(strict, k)
    np.testing.assert_array_equal(out2["heatmap_weight"][0, :, 0, 0], [0, 0, 0, 0])


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
def test_two_overlapping_individuals(mode):
    c = DLCHeatmap(stride=2, heatmap_size=(32, 32), mode=mode)
    k = np.zeros((1, 3, 1, 3), np.float32)
    k[0, 0, 0] = (20.0, 20.0, 2)
    k[0, 1, 0] = (30.0, 24.0, 2)
    k[0, 2, 0] = (0.0, 0.0, 0)        # padding row
    out = assert_matches_loop(c, k)
    # cell (row 11, col 12): gx = 25, gy = 23 - inside both disks -> the last individual wins
    lx, ly = out["locref"][0, 0, 11, 12], out["locref"][0, 1, 11, 12]
    assert lx == pytest.approx((30 - 25) / 7.2801, abs=1e-6) and ly == pytest.approx((24 - 23) / 7.2801, abs=1e-6)
    # cell (row 9, col 5): gx = 11, gy = 19 - only inside the first disk
    # gaussian: the last visible individual writes the whole map; plateau: the first's disk
    expect = (30 - 11) if mode == "gaussian" else (20 - 11)
    assert out["locref"][0, 0, 9, 5] == pytest.approx(expect / 7.2801, abs=1e-6)
    assert out["locref_weight"][0, 0, 9, 5] == 1
    if mode == "gaussian":
        d1 = (25 - 20) ** 2 + (23 - 20) ** 2
        d2 = (25 - 30) ** 2 + (23 - 24) ** 2
        assert out["heatmap"][0, 0, 11, 12] == pytest.approx(math.exp(-min(d1, d2) / (2 * STD ** 2)), abs=1e-7)


@pytest.mark.parametrize("stride, size", [(8, (8, 8)), (2, (33, 17)), (3, (21, 15)), (2.5, (13, 9)), (1, (40, 30))])
@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
def test_matches_dlc_loop_random(stride, size, mode):
    rng = np.random.default_rng(7)
    c = DLCHeatmap(stride=stride, heatmap_size=size, mode=mode)
    w, h = size[0] * stride, size[1] * stride
    k = np.empty((2, 3, 5, 3), np.float32)
    k[..., 0] = rng.uniform(-0.3 * w, 1.3 * w, (2, 3, 5))
    k[..., 1] = rng.uniform(-0.3 * h, 1.3 * h, (2, 3, 5))
    k[..., 2] = rng.choice([-1, 0, 1, 2], (2, 3, 5), p=[0.1, 0.2, 0.2, 0.5])
    k[0, 0, 0] = (0, 0, 2)                     # on the first grid row/column edge
    k[0, 1, 0] = (w - 1, h - 1, 2)             # last pixel
    k[1, 0, 1] = (w - 0.5, -0.5, 2)            # image corner (pixel-centre convention)
    assert_matches_loop(c, k)


def test_without_locref():
    c = DLCHeatmap(stride=4, heatmap_size=(10, 10), locref=False)
    out = c.encode(kp((12.0, 12.0, 2)))
    assert list(out) == ["heatmap", "heatmap_weight"] == list(c.output_names)
    dec, score = c.decode(out["heatmap"])
    # grid 2, 6, 10, 14: 12 is 2 px from cells 2 and 3, argmax takes the first (gx = 10)
    np.testing.assert_array_equal(dec[0, 0], [10.0, 10.0])
    assert score[0, 0] == pytest.approx(math.exp(-8 / (2 * STD ** 2)), abs=1e-6)


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
@pytest.mark.parametrize("stride, size", [(8, (32, 24)), (3, (30, 30)), (2, (64, 48))])
def test_round_trip_with_locref(mode, stride, size):
    """encode -> decode with locref. The argmax cell (nearest grid point for the Gaussian,
    the first cell of the disk for the plateau) carries locref = fl32((x - gx)/std), and
    decode returns gx + locref*std: the error is float32 rounding, |x - gx| * 2^-23 + ulp(x)
    <= 17 * 1.2e-7 + 3e-5 px for keypoints inside the map, far below the asserted 0.01 px."""
    rng = np.random.default_rng(8)
    c = DLCHeatmap(stride=stride, heatmap_size=size, mode=mode)
    w, h = size[0] * stride, size[1] * stride
    k = np.empty((3, 1, 9, 3), np.float32)
    k[..., 0] = rng.uniform(-0.5, w - 0.5, (3, 1, 9))
    k[..., 1] = rng.uniform(-0.5, h - 0.5, (3, 1, 9))
    k[..., 2] = 2
    out = c.encode(k)
    dec, score = c.decode(out["heatmap"], out["locref"])
    assert dec.shape == (3, 9, 2) and score.shape == (3, 9)
    assert np.abs(dec - k[:, 0, :, :2]).max() < 0.01


def test_decode_dlc_grid_option():
    c = DLCHeatmap(stride=3, heatmap_size=(10, 10), locref=False)
    hm = np.zeros((1, 1, 10, 10), np.float32)
    hm[0, 0, 2, 4] = 1
    assert c.decode(hm)[0][0, 0].tolist() == [13.0, 7.0]                 # int(4*3 + 1.5) = 13
    assert c.decode(hm, dlc_grid=True)[0][0, 0].tolist() == [13.5, 7.5]  # DLC predictor


def test_decode_torch():
    torch = pytest.importorskip("torch")
    c = DLCHeatmap(stride=4, heatmap_size=(12, 12))
    out = c.encode(kp((21.3, 17.7, 2)))
    dec, score = c.decode(torch.from_numpy(out["heatmap"]), torch.from_numpy(out["locref"]))
    assert isinstance(dec, torch.Tensor) and isinstance(score, torch.Tensor)
    assert dec.dtype == torch.float32
    np.testing.assert_allclose(dec.numpy()[0, 0], [21.3, 17.7], atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 2), n=st.integers(1, 3), k=st.integers(1, 3),
    w=st.integers(1, 24), h=st.integers(1, 24),
    stride=st.sampled_from([1, 2, 3, 4, 2.5, 8]),
    thresh=st.sampled_from([3, 8, 17]),
    mode=st.sampled_from(["gaussian", "plateau"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties(b, n, k, w, h, stride, thresh, mode, seed):
    rng = np.random.default_rng(seed)
    c = DLCHeatmap(stride=stride, heatmap_size=(w, h), mode=mode, pos_dist_thresh=thresh)
    kps = np.empty((b, n, k, 3), np.float32)
    kps[..., 0] = rng.uniform(-2 * thresh, w * stride + 2 * thresh, (b, n, k))
    kps[..., 1] = rng.uniform(-2 * thresh, h * stride + 2 * thresh, (b, n, k))
    kps[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k))
    kps[rng.random((b, n, k)) < 0.1, :2] = np.nan
    out = assert_matches_loop(c, kps)
    assert out["heatmap"].shape == (b, k, h, w) and out["locref"].shape == (b, 2 * k, h, w)
    assert out["heatmap"].min() >= 0 and out["heatmap"].max() <= 1
    for name in ("heatmap_weight", "locref_weight"):
        assert set(np.unique(out[name])) <= {0.0, 1.0}
