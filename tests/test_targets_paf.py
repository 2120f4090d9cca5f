"""PartAffinityField: hand-worked cells (a limb on the grid, a diagonal limb, the band's
edges exactly at ``width`` and at the limb's ends, zero-length limbs, hidden ends, two
animals on one cell), and a per-element loop written from DeepLabCut 3.0.2's
``PartAffinityFieldGenerator`` (tests/oracles.py) over random batches."""
from __future__ import annotations

import math

import numpy as np
import pytest

import posefeed.targets.paf
from helpers import both_cpu_kernels
from oracles import paf_loop
from posefeed.targets import PartAffinityField


kernel = both_cpu_kernels(posefeed.targets.paf)


def kp(*animals):
    """``kp([(x, y, v), ...], ...)`` -> (1, N, K, 3) float32."""
    return np.asarray(animals, dtype=np.float32)[None]


def test_grid_is_dlcs_truncated_grid():
    c = PartAffinityField([(0, 1)], stride=3, heatmap_size=(4, 2))
    assert c.grid_x.tolist() == [1, 4, 7, 10] and c.grid_y.tolist() == [1, 4]


def test_horizontal_limb_on_the_grid():
    # stride 4: cell centres 2, 6, 10, ...; limb (2, 6) -> (26, 6), width 5
    c = PartAffinityField([(0, 1)], stride=4, heatmap_size=(9, 5), width=5)
    paf = c.encode(kp([(2, 6, 2), (26, 6, 2)]))["paf"]
    assert paf.shape == (1, 2, 5, 9)
    want = np.zeros((5, 9), np.float32)
    want[1, :7] = 1.0          # gy = 6: on the limb, |c| = 0
    want[0, :7] = 1 - 4 / 5    # gy = 2 and 10: |c| = 4/5
    want[2, :7] = 1 - 4 / 5
    np.testing.assert_allclose(paf[0, 0], want, atol=1e-7, rtol=0)
    assert (paf[0, 1] == 0).all()  # u_y = 0


def test_diagonal_limb_hand_worked():
    # limb (2, 2) -> (30, 30): u = (1, 1)/sqrt(2); cell (gx, gy) = (10, 2) is 8/sqrt(2) px
    # across and 12/sqrt(2) px along
    c = PartAffinityField([(0, 1)], stride=4, heatmap_size=(9, 9), width=20)
    paf = c.encode(kp([(2, 2, 2), (30, 30, 2)]))["paf"][0]
    u = 1 / math.sqrt(2)
    t = 1 - 8 * u / 20
    assert paf[0, 0, 2] == pytest.approx(u * t, abs=1e-6)
    assert paf[1, 0, 2] == pytest.approx(u * t, abs=1e-6)
    # (gx, gy) = (2, 30): 28/sqrt(2) = 19.8 px across (inside), 32/sqrt(2) along (inside)
    assert paf[0, 7, 0] == pytest.approx(u * (1 - 28 * u / 20), abs=1e-6)
    # the ends themselves (along = the extent's min / max, included)
    assert paf[0, 0, 0] == pytest.approx(u, abs=1e-6)
    assert paf[0, 7, 7] == pytest.approx(u, abs=1e-6)
    # (gx, gy) = (30, 26): 4/sqrt(2) across, 56/sqrt(2) along (<= 60/sqrt(2), the end)
    assert paf[0, 6, 7] == pytest.approx(u * (1 - 4 * u / 20), abs=1e-6)
    # (gx, gy) = (34, 34) and (30, 34) are past the end: along = 68/sqrt(2), 64/sqrt(2)
    assert paf[0, 8, 8] == 0 and paf[0, 8, 7] == 0


def test_limb_end_exactly_on_a_cell_is_included():
    c = PartAffinityField([(0, 1)], stride=4, heatmap_size=(9, 3), width=3)
    on = c.encode(kp([(2, 6, 2), (26, 6, 2)]))["paf"][0, 0, 1]
    short = c.encode(kp([(2, 6, 2), (25.99, 6, 2)]))["paf"][0, 0, 1]
    assert on[6] == 1.0 and on[7] == 0.0
    assert short[5] == 1.0 and short[6] == 0.0


def test_band_edge_exactly_at_width_overwrites_with_zero():
    # animal 0 covers row gy = 2 with 1 - 4/5; animal 1's band (width 4 around gy = 6) has
    # its edge exactly on gy = 2 (|c| = 1): DLC writes 1 - 1 = 0 there, over animal 0
    c = PartAffinityField([(0, 1)], stride=4, heatmap_size=(9, 5), width=4)
    a0 = [(2, 2 + 4 / 5 * 4, 2), (26, 2 + 4 / 5 * 4, 2)]  # gy = 2 at 3.2 px: |c| = 0.8
    edge = [(2, 6, 2), (26, 6, 2)]
    beyond = [(2, 6.001, 2), (26, 6.001, 2)]
    only0 = c.encode(kp(a0))["paf"][0, 0, 0]
    assert only0[:7] == pytest.approx(np.full(7, 1 - 3.2 / 4), abs=1e-6)
    both = c.encode(kp(a0, edge))["paf"][0, 0, 0]
    assert (both[:7] == 0).all() and (both[7:] == 0).all()
    kept = c.encode(kp(a0, beyond))["paf"][0, 0, 0]
    np.testing.assert_array_equal(kept, only0)


def test_two_animals_overlapping_later_overwrites():
    c = PartAffinityField([(0, 1)], stride=4, heatmap_size=(9, 9), width=6)
    horizontal = [(2, 18, 2), (34, 18, 2)]
    vertical = [(18, 2, 2), (18, 34, 2)]
    paf = c.encode(kp(horizontal, vertical))["paf"][0]
    # cell (gx, gy) = (18, 18), i.e. (row 4, col 4): both bands; animal 1 (vertical) wins
    assert paf[0, 4, 4] == 0.0 and paf[1, 4, 4] == 1.0
    # row 4 away from the vertical band: animal 0's value
    assert paf[0, 4, 0] == 1.0 and paf[1, 4, 0] == 0.0
    # swapped order: the horizontal animal now wins on the crossing
    paf = c.encode(kp(vertical, horizontal))["paf"][0]
    assert paf[0, 4, 4] == 1.0 and paf[1, 4, 4] == 0.0


def test_different_limbs_have_their_own_channels():
    c = PartAffinityField([(0, 1), (1, 2)], stride=4, heatmap_size=(9, 9), width=6)
    paf = c.encode(kp([(2, 18, 2), (34, 18, 2), (34, 34, 2)]))["paf"][0]
    assert paf[0, 4, 4] == 1.0 and paf[1, 4, 4] == 0.0  # limb 0: +x
    assert paf[2, 6, 8] == 0.0 and paf[3, 6, 8] == 1.0  # limb 1: +y, at (34, 26)
    assert (paf[2:, 4, :7] == 0).all()


@pytest.mark.parametrize("second", [(10, 10, 2), (10, 10, 0), (30, 10, -1), (np.nan, 10, 2)])
def test_zero_length_hidden_or_nan_end_draws_nothing(second):
    c = PartAffinityField([(0, 1)], stride=4, heatmap_size=(9, 9))
    paf = c.encode(kp([(10, 10, 2), second]))["paf"]
    assert (paf == 0).all()


def test_no_limbs_and_no_instances():
    c = PartAffinityField([], stride=4, heatmap_size=(5, 4))
    assert c.encode(np.zeros((2, 1, 3, 3), np.float32))["paf"].shape == (2, 0, 4, 5)
    c = PartAffinityField([(0, 1)], stride=4, heatmap_size=(5, 4))
    out = c.encode(np.zeros((2, 0, 3, 3), np.float32))["paf"]
    assert out.shape == (2, 2, 4, 5) and (out == 0).all()


def test_bad_graph_and_parameters():
    with pytest.raises(ValueError, match="graph uses keypoint 3"):
        PartAffinityField([(0, 3)], stride=4, heatmap_size=(5, 4)).encode(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=">= 0"):
        PartAffinityField([(0, -1)], stride=4, heatmap_size=(5, 4))
    with pytest.raises(ValueError, match="width"):
        PartAffinityField([(0, 1)], stride=4, heatmap_size=(5, 4), width=0)
    with pytest.raises(NotImplementedError):
        PartAffinityField([(0, 1)], stride=4, heatmap_size=(5, 4)).decode(np.zeros((1, 2, 4, 5)))


def random_batch(rng, b, n, k, w, h):
    x = np.empty((b, n, k, 3), np.float32)
    x[..., 0] = rng.uniform(-0.2 * w, 1.2 * w, (b, n, k))
    x[..., 1] = rng.uniform(-0.2 * h, 1.2 * h, (b, n, k))
    x[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k), p=[0.1, 0.1, 0.2, 0.6])
    x[0, 0, 0, 0] = np.nan
    return x


GRAPH = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4), (1, 3), (2, 2), (4, 0)]


@pytest.mark.parametrize("stride, size, n, width", [(2, (17, 13), 3, 20.0), (3, (15, 11), 2, 7.0),
                                                    (2.5, (13, 17), 4, 10.0), (8, (9, 8), 3, 20.0),
                                                    (1, (20, 16), 1, 3.0)])
def test_matches_dlc_loop(stride, size, n, width):
    rng = np.random.default_rng(int(stride * 10) + n)
    c = PartAffinityField(GRAPH, stride=stride, heatmap_size=size, width=width)
    keypoints = random_batch(rng, 2, n, 5, size[0] * stride, size[1] * stride)
    got = c.encode(keypoints)["paf"]
    ref = paf_loop(keypoints, GRAPH, stride, size, width)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert (ref != 0).sum() > 50  # the case draws something
    np.testing.assert_array_equal(got, ref)


def test_clustered_animals_match_dlc_loop():
    # three animals in one spot: many same-limb overlaps (the last-writer rule)
    rng = np.random.default_rng(5)
    x = np.empty((2, 3, 5, 3), np.float32)
    x[..., :2] = rng.normal(30, 8, (2, 3, 5, 2))
    x[..., 2] = 2
    c = PartAffinityField(GRAPH, stride=2, heatmap_size=(30, 30), width=6)
    np.testing.assert_array_equal(c.encode(x)["paf"], paf_loop(x, GRAPH, 2, (30, 30), 6))


def test_out_and_encoder_reuse():
    rng = np.random.default_rng(3)
    c = PartAffinityField(GRAPH, stride=2, heatmap_size=(16, 12), width=6)
    enc = c.encoder()
    batches = [random_batch(rng, 2, 3, 5, 32, 24) for _ in range(3)]
    empty = batches[0].copy()
    empty[..., 2] = 0
    for x in batches + [batches[-1], empty, batches[0]]:
        ref = paf_loop(x, GRAPH, 2, (16, 12), 6)
        np.testing.assert_array_equal(enc(x)["paf"], ref)
        buf = {"paf": np.full((2, 16, 12, 16), np.nan, np.float32)}
        got = c.encode(x, out=buf)
        assert got["paf"] is buf["paf"]
        np.testing.assert_array_equal(buf["paf"], ref)
    with pytest.raises(ValueError, match="shape"):
        c.encode(batches[0], out={"paf": np.zeros((2, 16, 12, 15), np.float32)})
