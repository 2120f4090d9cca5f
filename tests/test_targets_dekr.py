"""DEKR: hand-worked cells (a keypoint on a cell, the window's edge, the centre's wider
Gaussian, offsets and their weights on the centre's square), the conflict rules (two
animals of different areas on one cell, ties, DeepLabCut's shared area map), ``v = -1``
masking in DeepLabCut's order, default areas, and a per-element loop written from
DeepLabCut 3.0.2's ``DEKRGenerator`` (tests/oracles.py) over random and crowded batches."""
from __future__ import annotations

import math

import numpy as np
import pytest

import posefeed.targets.dekr
from helpers import both_cpu_kernels
from oracles import dekr_centers, dekr_loop
from posefeed.targets import DEKR
from posefeed.targets.dekr import keypoint_areas

SIG = 17 / 2 / 4  # keypoint sigma at stride 4, cells


kernel = both_cpu_kernels(posefeed.targets.dekr)


def kp(*animals):
    return np.asarray(animals, dtype=np.float32)[None]


def test_keypoint_on_a_cell_and_the_window_edge():
    # stride 4: x = 14 -> x_s = (14 - 2) / 4 = 3; window [floor(3 - 3σ - 1), ceil(3 + 3σ + 2))
    # = [-5, 12) -> columns 0 .. 11 (3σ = 6.375)
    c = DEKR(1, stride=4, heatmap_size=(16, 16))
    out = c.encode(kp([(14, 14, 2)]), area=np.array([[100.0]]))
    hm, wt = out["heatmap"][0, 0], out["heatmap_weight"][0, 0]
    assert hm[3, 3] == 1.0
    assert hm[3, 4] == pytest.approx(math.exp(-1 / (2 * SIG ** 2)), rel=1e-6)
    assert hm[5, 1] == pytest.approx(math.exp(-(4 + 4) / (2 * SIG ** 2)), rel=1e-6)
    assert hm[3, 11] == pytest.approx(math.exp(-64 / (2 * SIG ** 2)), rel=1e-5)
    assert hm[3, 12] == 0.0 and hm[12, 3] == 0.0  # outside the window: 0, not the Gaussian
    assert (wt[:12, :12] == 1).all() and (wt[12:] == np.float32(0.1)).all() and (wt[:, 12:] == np.float32(0.1)).all()


def test_center_heatmap_and_offsets():
    # two keypoints; centre = their mean (22, 14) -> int 22, 14; c_s = (5, 3); r = 17/4
    c = DEKR(2, stride=4, heatmap_size=(16, 16))
    out = c.encode(kp([(14, 14, 2), (30, 14, 2)]), area=np.array([[64.0]]))
    hm = out["heatmap"][0]
    assert hm.shape == (3, 16, 16)
    csig = 17 / 4
    assert hm[2, 3, 5] == 1.0
    assert hm[2, 3, 7] == pytest.approx(math.exp(-4 / (2 * csig ** 2)), rel=1e-6)
    off, ow = out["offset"][0], out["offset_weight"][0]
    # square: [int(5 - 4.25), int(5 + 4.25)) x [int(3 - 4.25), int(3 + 4.25)) = [0, 9) x [0, 7)
    inside = np.zeros((16, 16), bool)
    inside[0:7, 0:9] = True
    for ch in range(4):
        assert (ow[ch][inside] == np.float32(1 / 8)).all() and (ow[ch][~inside] == 0).all()
    # keypoint 0 at x_s = y_s = 3: offset (i - 3, j - 3); keypoint 1 at x_s = 7
    assert off[0, 2, 8] == 5 and off[1, 2, 8] == -1
    assert off[2, 2, 8] == 1 and off[3, 2, 8] == -1
    assert (off[:, ~inside] == 0).all()


def test_two_animals_of_different_areas_on_one_cell():
    # both animals' squares cover the same cells: the smaller area keeps its offsets,
    # whichever comes first; equal areas: the later one
    a = [(14, 14, 2), (18, 14, 2)]
    b = [(22, 18, 2), (26, 18, 2)]
    c = DEKR(2, stride=4, heatmap_size=(16, 16))
    x_a0, x_b0 = (14 - 2) / 4, (22 - 2) / 4
    cell = (3, 4)  # (row, col): inside both squares
    for areas, owner, w_area in (([400, 100], x_b0, 100), ([100, 400], x_a0, 100), ([100, 100], x_b0, 100),
                                 ([64, 64], x_b0, 64)):
        out = c.encode(kp(a, b), area=np.array([areas], np.float32))
        assert out["offset"][0, 0][cell] == pytest.approx(cell[1] - owner)
        assert out["offset_weight"][0, 0][cell] == pytest.approx(1 / math.sqrt(w_area))
    # swapped order: the smaller (now first) still wins
    out = c.encode(kp(b, a), area=np.array([[100, 400]], np.float32))
    assert out["offset"][0, 0][3, 4] == pytest.approx(4 - x_b0)


def test_shared_area_map_lets_a_larger_animal_overwrite():
    # DeepLabCut keeps one area per cell for all keypoints: animal 0 (area 100) sets only
    # keypoint 1; animal 1 (area 400) brings keypoint 0 (unset: written, area map -> 400),
    # then keypoint 1 is no longer protected (400 < 400 is false) and is overwritten
    a0 = [(30, 30, 0), (14, 14, 2)]
    a1 = [(22, 14, 2), (18, 18, 2)]
    c = DEKR(2, stride=4, heatmap_size=(16, 16))
    out = c.encode(kp(a0, a1), area=np.array([[100, 400]], np.float32))
    cell = (2, 3)
    assert out["offset"][0, 2][cell] == pytest.approx(3 - (18 - 2) / 4)  # animal 1's keypoint 1
    assert out["offset_weight"][0, 2][cell] == pytest.approx(1 / 20)
    # without keypoint 0 on animal 1, animal 0 keeps keypoint 1
    a1[0] = (22, 14, 0)
    out = c.encode(kp(a0, a1), area=np.array([[100, 400]], np.float32))
    assert out["offset"][0, 2][cell] == pytest.approx(3 - (14 - 2) / 4)
    assert out["offset_weight"][0, 2][cell] == pytest.approx(1 / 10)


def test_zero_offset_counts_as_unset():
    # DeepLabCut tests "already set" as offset != 0: a keypoint exactly on a cell writes
    # (0, 0) there, which the next instance overwrites whatever its area. Stride 2, t = 4
    # (radius 2 cells), centres (5, 5) -> c_s = 2: both squares are cells [0, 4)^2.
    # Animal 0 (area 4): keypoint (5, 5) -> x_s = y_s = 2, offset (0, 0) at cell (2, 2);
    # animal 1 (area 100): keypoint (7.3, 6.1) -> (3.15, 2.55)
    c = DEKR(1, stride=2, heatmap_size=(8, 8), pos_dist_thresh=4, centers_given=True)
    x = kp([(5, 5, 2), (5, 5, 2)], [(7.3, 6.1, 2), (5, 5, 2)])
    out = c.encode(x, area=np.array([[4.0, 100.0]], np.float32))
    off, ow = out["offset"][0], out["offset_weight"][0]
    assert off[0, 2, 2] == np.float32(2) - np.float32(3.15) and off[1, 2, 2] == np.float32(2) - np.float32(2.55)
    assert ow[0, 2, 2] == ow[1, 2, 2] == np.float32(0.1)  # 1 / sqrt(100)
    # elsewhere the smaller animal 0 keeps its (non-zero) offsets: (i - 2, j - 2), 1/sqrt(4)
    assert off[0, 1, 3] == 1 and off[1, 1, 3] == -1 and ow[0, 1, 3] == ow[1, 1, 3] == 0.5
    inside = np.ones((4, 4), bool)
    inside[2, 2] = False
    assert (ow[:, :4, :4][:, inside] == 0.5).all() and (ow[:, 4:] == 0).all() and (ow[:, :, 4:] == 0).all()
    # two keypoints: animal 1's first write at a cell (keypoint 0, over a (0, 0)) sets the
    # cell's area to 100, so its keypoint 1 is no longer protected there either (100 < 100
    # is false); at cell (3, 3) animal 0's keypoint 1 is (0, 0): animal 1 skips keypoint 0
    # (set, area 4 < 100) and writes keypoint 1
    c = DEKR(2, stride=2, heatmap_size=(8, 8), pos_dist_thresh=4, centers_given=True)
    x = kp([(5, 5, 2), (7, 7, 2), (5, 5, 2)], [(7.3, 6.1, 2), (3, 3, 2), (5, 5, 2)])
    area = np.array([[4.0, 100.0]], np.float32)
    out = c.encode(x, area=area)
    off, ow = out["offset"][0], out["offset_weight"][0]
    f = np.float32
    assert (off[:, 2, 2] == [f(2) - f(3.15), f(2) - f(2.55), 1, 1]).all()  # animal 1: (2 - x_s, 2 - y_s)
    assert (ow[:, 2, 2] == f(0.1)).all()
    assert (off[:, 3, 3] == [1, 1, 2, 2]).all()  # animal 0's keypoint 0, animal 1's keypoint 1
    assert (ow[:, 3, 3] == [0.5, 0.5, f(0.1), f(0.1)]).all()
    assert (off[:, 1, 1] == [-1, -1, -2, -2]).all() and (ow[:, 1, 1] == 0.5).all()  # animal 0's
    ref = dekr_loop(x, area, 2, (8, 8), pos_dist_thresh=4)
    for name in ("offset", "offset_weight"):
        np.testing.assert_array_equal(out[name], ref[name])


def test_ignored_keypoint_masks_the_map_in_dlcs_order():
    c = DEKR(1, stride=4, heatmap_size=(24, 24))
    seen = [(14, 14, 2)]
    ignored = [(40, 40, -1)]
    area = np.array([[100, 100]], np.float32)
    # ignored after the visible one: the whole map is 0
    wt = c.encode(kp(seen, ignored), area=area)["heatmap_weight"][0, 0]
    assert (wt == 0).all()
    # ignored before: 0 except the later animal's window (1)
    wt = c.encode(kp(ignored, seen), area=area)["heatmap_weight"][0, 0]
    assert (wt[:12, :12] == 1).all() and wt[12, 12] == 0 and wt[0, 12] == 0
    # the centre map is not masked (the centre has v = 2): its window is [-11, 18)
    wc = c.encode(kp(ignored, seen), area=area)["heatmap_weight"][0, 1]
    assert (wc[:18, :18] == 1).all() and wc[18, 0] == np.float32(0.1) and wc[0, 18] == np.float32(0.1)


def test_off_map_keypoints_draw_nothing():
    c = DEKR(1, stride=4, heatmap_size=(8, 8))
    for x, y in [(1.9, 10), (10, 1.9), (34, 10), (10, 34)]:  # x_s < 0 or >= 8
        out = c.encode(kp([(x, y, 2)]), area=np.array([[100.0]]))
        assert (out["heatmap"][0, 0] == 0).all() and (out["heatmap_weight"][0, 0] == np.float32(0.1)).all()
        assert (out["offset"] == 0).all() and (out["offset_weight"] == 0).all()


def test_default_area_is_the_keypoints_box():
    pts = np.array([[[(10, 20, 2), (40, 25, 2), (99, 99, 0)], [(5, 5, 2), (5, 5, 2), (0, 0, 0)]]], np.float32)
    area = keypoint_areas(np, pts[..., 0], pts[..., 1], pts[..., 2])
    np.testing.assert_array_equal(area, [[30 * 5, 1]])
    c = DEKR(3, stride=4, heatmap_size=(16, 16))
    np.testing.assert_array_equal(c.encode(pts)["offset_weight"], c.encode(pts, area=area)["offset_weight"])


def test_shapes_and_errors():
    c = DEKR(3, stride=4, heatmap_size=(10, 8))
    shapes = c.output_shapes(2, 3)
    assert shapes["heatmap"] == (2, 4, 8, 10) and shapes["offset"] == (2, 6, 8, 10)
    with pytest.raises(ValueError, match="needs 3 keypoints"):
        c.encode(np.zeros((1, 1, 4, 3), np.float32))
    assert DEKR(3, stride=4, heatmap_size=(10, 8), centers_given=True).encode(
        np.zeros((1, 1, 4, 3), np.float32))["heatmap"].shape == (1, 4, 8, 10)
    out = c.encode(np.zeros((2, 0, 3, 3), np.float32))
    assert (out["heatmap"] == 0).all() and (out["heatmap_weight"] == np.float32(0.1)).all()
    with pytest.raises(NotImplementedError):
        c.decode(out["heatmap"])


def random_batch(rng, b, n, k, w, h, spread):
    x = np.empty((b, n, k, 3), np.float32)
    centre = rng.uniform(0.2 * w, 0.8 * w, (b, n, 1, 2))
    x[..., :2] = centre + rng.normal(0, spread, (b, n, k, 2))
    x[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k), p=[0.05, 0.15, 0.2, 0.6])
    x[0, 0, 0, 0] = np.nan
    return x


def check(out, ref, atol=1e-6):
    for name, want in ref.items():
        assert out[name].dtype == np.float32 and out[name].shape == want.shape, name
        np.testing.assert_allclose(out[name], want, atol=atol, rtol=0, err_msg=name)


@pytest.mark.parametrize("stride, size, n, spread", [(4, (13, 11), 3, 8.0), (2, (17, 13), 4, 5.0),
                                                    (3, (11, 13), 2, 10.0), (2.5, (15, 15), 6, 3.0),
                                                    (8, (9, 8), 1, 12.0)])
def test_matches_dlc_loop(stride, size, n, spread):
    rng = np.random.default_rng(int(stride * 10) + n)
    k = 5
    c = DEKR(k, stride=stride, heatmap_size=size)
    for _ in range(3):
        x = random_batch(rng, 2, n, k, size[0] * stride, size[1] * stride, spread)
        area = rng.choice([64.0, 100.0, 400.0], (2, n)).astype(np.float32)  # ties included
        ref = dekr_loop(dekr_centers(x), area, stride, size)
        assert (ref["offset_weight"] > 0).sum() > 20
        check(c.encode(x, area=area), ref)
        # the same batch with its centres given (what DeepLabCut's generator receives)
        cg = DEKR(k, stride=stride, heatmap_size=size, centers_given=True)
        check(cg.encode(dekr_centers(x), area=area), ref)


def test_encoder_reuse_matches_loop():
    rng = np.random.default_rng(11)
    c = DEKR(4, stride=2, heatmap_size=(16, 12))
    enc = c.encoder()
    seq = [random_batch(rng, 2, 3, 4, 32, 24, 4.0) for _ in range(3)]
    empty = seq[0].copy()
    empty[..., 2] = 0
    ignored = seq[1].copy()
    ignored[..., 2] = -1
    for x in seq + [seq[-1], empty, ignored, seq[0]]:
        area = rng.choice([64.0, 100.0], (2, 3)).astype(np.float32)
        ref = dekr_loop(dekr_centers(x), area, 2, (16, 12))
        buf = {name: np.full(s, np.nan, np.float32) for name, s in c.output_shapes(2, 4).items()}
        got = c.encode(x, out=buf, area=area)
        assert got["offset"] is buf["offset"]
        check(buf, ref)
        # the kept-buffer encoder (no areas: the keypoints' boxes)
        clean = x.copy()
        bad = ~np.isfinite(clean[..., 0]) | ~np.isfinite(clean[..., 1])
        clean[..., 2][bad] = np.minimum(clean[..., 2][bad], 0)
        box = keypoint_areas(np, clean[..., 0], clean[..., 1], clean[..., 2])
        check(enc(x), dekr_loop(dekr_centers(x), box, 2, (16, 12)))


def test_bad_areas_are_refused():
    c = DEKR(2, stride=4, heatmap_size=(16, 16))
    x = kp([(14, 14, 2), (30, 14, 2)], [(200, 200, 2), (210, 200, 2)])  # animal 1 is off the map
    with pytest.raises(ValueError, match=r"area must be \(B, N\) = \(1, 2\)"):
        c.encode(x, area=np.ones((2, 1), np.float32))
    with pytest.raises(ValueError, match=r"area\[0, 0\] = 0"):
        c.encode(x, area=np.array([[0.0, 100.0]], np.float32))
    with pytest.raises(ValueError, match=r"area\[0, 0\] = inf"):
        c.encode(x, area=np.array([[np.inf, 100.0]], np.float32))
    # NaN: unknown, the instance's keypoint box instead (16 x 1 px, each side >= 1)
    unknown = c.encode(x, area=np.array([[np.nan, 100.0]], np.float32))
    boxed = c.encode(x, area=np.array([[16.0, 100.0]], np.float32))
    for name in boxed:
        np.testing.assert_array_equal(unknown[name], boxed[name])
    assert np.unique(boxed["offset_weight"][boxed["offset_weight"] > 0]).tolist() == [0.25]
    c.encode(x, area=np.array([[100.0, 0.0]], np.float32))  # nothing of animal 1 is drawn: fine
    # no instances: the area is still checked against (B, 0)
    with pytest.raises(ValueError, match=r"area must be \(B, N\) = \(2, 0\)"):
        c.encode(np.zeros((2, 0, 2, 3), np.float32), area=np.ones((2, 1), np.float32))
    assert (c.encode(np.zeros((2, 0, 2, 3), np.float32), area=np.ones((2, 0), np.float32))["offset"] == 0).all()



@pytest.mark.parametrize("stride,t", [(2, 17), (4, 17), (8, 17), (4, 5), (16, 30), (3, 2)])
def test_separable_gaussian_worst_case(stride, t):
    # the codec evaluates DLC's exp(-(dx² + dy²) / 2σ²) as exp(-dx²/2σ²) * exp(-dy²/2σ²)
    # (float32); its docstring bounds the difference by 3e-7 absolute. Worst case over 11 x 11
    # sub-pixel positions of a keypoint (one per sample) and of a centre (the wider sigma),
    # every cell of their windows, against DLC's loop (tests/oracles.py)
    frac = np.linspace(0, 1, 11, dtype=np.float32)
    fx, fy = (a.reshape(-1) for a in np.meshgrid(frac, frac))
    sigma_c = t / stride
    size = int(2 * (3 * sigma_c + 4)) + 8
    xs = (np.float32(size // 2) + fx).astype(np.float32)  # positions in cells
    ys = (np.float32(size // 2) + fy).astype(np.float32)
    to_px = lambda a: (a * np.float32(stride) + np.float32(stride / 2)).astype(np.float32)  # noqa: E731
    pts = np.zeros((fx.size, 2, 2, 3), np.float32)  # instance 0: keypoint only; 1: centre only
    pts[:, 0, 0] = np.stack([to_px(xs), to_px(ys), np.full(fx.size, 2, np.float32)], -1)
    pts[:, 1, 1] = np.stack([to_px(ys), to_px(xs), np.full(fx.size, 2, np.float32)], -1)
    area = np.ones((fx.size, 2), np.float32)
    c = DEKR(1, stride=stride, heatmap_size=(size, size), pos_dist_thresh=t, centers_given=True)
    got = c.encode(pts, area=area)["heatmap"]
    want = dekr_loop(pts, area, stride, (size, size), pos_dist_thresh=t)["heatmap"]
    assert ((got > 0) == (want > 0)).all()  # the same windows
    assert float(np.abs(got - want).max()) <= 3e-7
