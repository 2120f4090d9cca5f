"""SimCC codec: hand-worked label values, the weight rules one by one, a per-element loop
reference written here (MMPose's ``SimCCLabel._generate_gaussian`` semantics), round trips
and property tests."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posefeed.targets import SimCC

from helpers import kp
from oracles import simcc_loop


def g(d, sigma):
    return math.exp(-(d * d) / (2 * sigma * sigma))


def test_shapes_and_sizes():
    c = SimCC()
    assert c.label_size == (384, 512)
    out = c.encode(np.zeros((3, 2, 17, 3), np.float32))
    assert list(out) == list(c.output_names) == ["x_labels", "y_labels", "keypoint_weight"]
    assert out["x_labels"].shape == (3, 17, 384) and out["y_labels"].shape == (3, 17, 512)
    assert out["keypoint_weight"].shape == (3, 17)
    assert all(a.dtype == np.float32 for a in out.values())


def test_hand_worked_values_and_half_even_rounding():
    c = SimCC(input_size=(192, 256), sigma=(4.9, 5.66), split_ratio=2.0)
    # x: 10.3*2 = 20.6 -> bin 21; y: 20.25*2 = 40.5 -> 40 (half to even, not 41)
    # second keypoint: y = 20.75*2 = 41.5 -> 42 (half to even)
    out = c.encode(kp((10.3, 20.25, 2), (3.0, 20.75, 1)))
    lx, ly = out["x_labels"][0], out["y_labels"][0]
    assert lx[0, 21] == pytest.approx(1.0)
    assert lx[0, 25] == pytest.approx(g(4, 4.9), abs=1e-6)
    assert lx[0, 0] == pytest.approx(g(21, 4.9), abs=1e-6)
    assert ly[0, 40] == pytest.approx(1.0)
    assert ly[0, 41] == pytest.approx(g(1, 5.66), abs=1e-6)
    assert ly[0, 511] == pytest.approx(g(471, 5.66), abs=1e-7)
    assert int(np.argmax(ly[1])) == 42
    assert lx[1, 6] == pytest.approx(1.0) and lx[1, 9] == pytest.approx(g(3, 4.9), abs=1e-6)
    np.testing.assert_array_equal(out["keypoint_weight"], [[1.0, 1.0]])


def test_normalize_divides_by_sigma_sqrt_2pi():
    c = SimCC(sigma=(4.9, 5.66), normalize=True)
    out = c.encode(kp((50.0, 60.0, 2)))
    assert out["x_labels"][0, 0, 100] == pytest.approx(1 / (4.9 * math.sqrt(2 * math.pi)), rel=1e-6)
    assert out["y_labels"][0, 0, 120] == pytest.approx(1 / (5.66 * math.sqrt(2 * math.pi)), rel=1e-6)


@pytest.mark.parametrize(
    "x, y, weight",
    [
        # Wx = 384, 3*sigma_x = 14.7: mu - 14.7 >= 384 <=> mu >= 398.7
        (199.0, 10.0, 1.0),   # mu_x = 398: in (only the tail is on the label)
        (199.5, 10.0, 0.0),   # mu_x = 399: off
        # mu + 14.7 + 1 < 0 <=> mu < -15.7
        (-7.5, 10.0, 1.0),    # mu_x = -15: in
        (-8.0, 10.0, 0.0),    # mu_x = -16: off
        # Wy = 512, 3*sigma_y = 16.98: mu_y >= 528.98 off
        (10.0, 264.0, 1.0),   # mu_y = 528 -> 528 - 16.98 = 511.02 < 512: in
    ],
)
def test_three_sigma_weight_rule(x, y, weight):
    c = SimCC()
    out = c.encode(kp((x, y, 2)))
    assert out["keypoint_weight"][0, 0] == weight
    if weight == 0:
        assert not out["x_labels"].any() and not out["y_labels"].any()
    else:
        assert out["x_labels"].max() > 0


def test_y_axis_off_the_label():
    c = SimCC()
    out = c.encode(kp((10.0, 264.5, 2)))  # mu_y = 529 -> 512.02 >= 512
    assert out["keypoint_weight"][0, 0] == 0 and not out["y_labels"].any()


@pytest.mark.parametrize("v, weight", [(2, 1.0), (1, 1.0), (0, 0.0), (-1, 0.0)])
def test_visibility(v, weight):
    out = SimCC().encode(kp((30.0, 40.0, v)))
    assert out["keypoint_weight"][0, 0] == weight
    assert bool(out["x_labels"].any()) == (weight > 0)


def test_nan_keypoints_are_masked():
    out = SimCC().encode(kp((np.nan, np.nan, 0), (np.nan, 5.0, 2), (30.0, 40.0, 2)))
    for a in out.values():
        assert np.isfinite(a).all()
    np.testing.assert_array_equal(out["keypoint_weight"], [[0.0, 0.0, 1.0]])


def test_two_instances_merge_by_max():
    c = SimCC()
    two = np.asarray([[[[20.0, 30.0, 2]], [[24.0, 60.0, 2]]]], np.float32)  # (1, 2, 1, 3)
    out = c.encode(two)
    lx = out["x_labels"][0, 0]
    # bins 40 and 48; between them at 44 both give g(4); at 40 the first gives 1
    assert lx[40] == pytest.approx(1.0) and lx[48] == pytest.approx(1.0)
    assert lx[44] == pytest.approx(g(4, 4.9), abs=1e-6)
    assert lx[46] == pytest.approx(max(g(6, 4.9), g(2, 4.9)), abs=1e-6)
    assert out["keypoint_weight"][0, 0] == 1.0
    # one visible, one missing: weight 1
    two[0, 1, 0, 2] = 0
    assert c.encode(two)["keypoint_weight"][0, 0] == 1.0


def test_matches_loop_reference_random():
    rng = np.random.default_rng(1)
    c = SimCC(input_size=(48, 64), sigma=(2.5, 3.0), split_ratio=2.0)
    k = rng.uniform(-20, 80, (3, 2, 5, 3)).astype(np.float32)
    k[..., 2] = rng.choice([-1, 0, 1, 2], (3, 2, 5))
    # exact .25 multiples exercise the half-even rule
    k[0, 0, :, :2] = np.round(k[0, 0, :, :2] * 4) / 4
    out = c.encode(k)
    tx, ty, wt = simcc_loop(c, k)
    np.testing.assert_allclose(out["x_labels"], tx, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out["y_labels"], ty, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(out["keypoint_weight"], wt)


def test_round_trip_within_quarter_pixel():
    """encode -> decode. The label peaks (value 1, strictly decreasing away) at
    mu = rint(x r), so argmax = mu whenever 0 <= mu < Wx, and decode returns mu / r:
    |x - rint(x r)/r| <= 1/(2r) = 0.25 px at r = 2 (equality at exact .25 / .75 px)."""
    rng = np.random.default_rng(2)
    c = SimCC()
    k = np.empty((4, 1, 17, 3), np.float32)
    k[..., 0] = rng.uniform(-0.25, 191.74, (4, 1, 17))
    k[..., 1] = rng.uniform(-0.25, 255.74, (4, 1, 17))
    k[..., 2] = 2
    out = c.encode(k)
    dec, score = c.decode(out["x_labels"], out["y_labels"])
    assert dec.shape == (4, 17, 2) and score.shape == (4, 17)
    assert np.abs(dec - k[:, 0, :, :2]).max() <= 0.25
    np.testing.assert_allclose(score, 1.0)


def test_decode_scores_and_missing():
    c = SimCC(input_size=(8, 8), split_ratio=2.0)
    x = np.zeros((1, 2, 16), np.float32)
    y = np.zeros((1, 2, 16), np.float32)
    x[0, 0, 5], y[0, 0, 9] = 0.8, 0.6
    dec, score = c.decode(x, y)
    np.testing.assert_allclose(dec[0, 0], [2.5, 4.5])
    assert score[0, 0] == pytest.approx(0.6)          # min of the two maxima
    np.testing.assert_array_equal(dec[0, 1], [-1, -1])  # score 0 -> -1
    assert score[0, 1] == 0


def test_decode_torch_returns_torch():
    torch = pytest.importorskip("torch")
    c = SimCC()
    out = c.encode(kp((10.0, 20.0, 2)))
    tx = torch.from_numpy(out["x_labels"]).requires_grad_(True)
    dec, score = c.decode(tx, torch.from_numpy(out["y_labels"]))
    assert isinstance(dec, torch.Tensor) and isinstance(score, torch.Tensor)
    assert dec.dtype == torch.float32 and tuple(dec.shape) == (1, 1, 2)
    assert dec[0, 0].tolist() == [10.0, 20.0]
    dec16, _ = c.decode(tx.detach().to(torch.bfloat16), torch.from_numpy(out["y_labels"]).to(torch.bfloat16))
    assert dec16[0, 0].tolist() == [10.0, 20.0]


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3), n=st.integers(1, 3), k=st.integers(1, 4),
    w=st.integers(4, 64), h=st.integers(4, 64),
    sx=st.floats(0.5, 8), sy=st.floats(0.5, 8),
    r=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties(b, n, k, w, h, sx, sy, r, seed):
    rng = np.random.default_rng(seed)
    kps = np.empty((b, n, k, 3), np.float32)
    kps[..., 0] = rng.uniform(-w, 2 * w, (b, n, k))
    kps[..., 1] = rng.uniform(-h, 2 * h, (b, n, k))
    kps[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k))
    kps[rng.random((b, n, k)) < 0.1, :2] = np.nan
    c = SimCC(input_size=(w, h), sigma=(sx, sy), split_ratio=r)
    out = c.encode(kps)
    wx, wy = c.label_size
    assert out["x_labels"].shape == (b, k, wx) and out["y_labels"].shape == (b, k, wy)
    assert out["keypoint_weight"].shape == (b, k)
    for a in out.values():
        assert a.dtype == np.float32 and np.isfinite(a).all()
        assert a.min() >= 0 and a.max() <= 1
    wt = out["keypoint_weight"]
    assert set(np.unique(wt)) <= {0.0, 1.0}
    dead = wt == 0
    assert not out["x_labels"][dead].any() and not out["y_labels"][dead].any()
    nothing = (kps[..., 2] <= 0).all(axis=1)
    assert (wt[nothing] == 0).all()


def test_keypoints_on_the_image_border():
    """Image edges in the pixel-centre convention: x = -0.5 and x = w - 0.5."""
    c = SimCC(input_size=(192, 256), sigma=(4.9, 5.66))
    out = c.encode(kp((-0.5, 0.0, 2), (191.5, 255.5, 2), (191.75, 0.0, 2)))
    lx, ly = out["x_labels"][0], out["y_labels"][0]
    # -0.5*2 = -1 -> bin -1 (off the label, weight 1): bin 0 holds g(1)
    assert lx[0, 0] == pytest.approx(g(1, 4.9), abs=1e-6) and ly[0, 0] == pytest.approx(1.0)
    # 191.5*2 = 383 (last bin); 255.5*2 = 511 (last bin)
    assert lx[1, 383] == pytest.approx(1.0) and ly[1, 511] == pytest.approx(1.0)
    # 191.75*2 = 383.5 -> 384 (half to even): one bin past the end, still weight 1
    assert lx[2, 383] == pytest.approx(g(1, 4.9), abs=1e-6)
    np.testing.assert_array_equal(out["keypoint_weight"], [[1, 1, 1]])
    dec, _ = c.decode(out["x_labels"], out["y_labels"])
    np.testing.assert_array_equal(dec[0], [[0.0, 0.0], [191.5, 255.5], [191.5, 0.0]])
