"""posefeed.integrations.dlc_heatmap (the logic of the DeepLabCut drop-in generators), without
DeepLabCut: against a loop written from DeepLabCut 3.0.2's rules (tests/oracles_dlc.py),
hand-worked values, kept-buffer reuse and errors, on both CPU paths (the ``make`` fixture: the
torch version, ``kernel="numpy"``, and the compiled numba kernel, skipped without numba; the
kernel's own edge cases are in test_integrations_dlc_kernel.py). Parity with the real
DeepLabCut generators is in tests_integrations/ (``make test-integrations``)."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracles_dlc import dlc_heatmap_loop
from posefeed.integrations.dlc_heatmap import DLCHeatmapTargets, dlc_grid


@pytest.fixture(params=["numpy", "numba"])
def make(request):
    """``DLCHeatmapTargets`` on one CPU path: the torch version or the compiled kernel."""
    if request.param == "numba":
        pytest.importorskip("numba")
    return functools.partial(DLCHeatmapTargets, kernel=request.param)


def call(gen, kp, stride, hw, ids=None, device="cpu"):
    c = gen.num_heatmaps
    outputs = {"heatmap": torch.zeros(kp.shape[0], c, *hw, device=device),
               "locref": torch.zeros(kp.shape[0], 2 * c, *hw, device=device)}
    labels = {"keypoints": torch.as_tensor(kp, device=device)}
    if ids is not None:
        labels["individual_ids"] = torch.as_tensor(ids, device=device)
    return gen(stride, outputs, labels)


def assert_matches(got, ref, atol=1e-6):
    assert set(got) == set(ref)
    for head in ref:
        assert set(got[head]) == {"target", "weights"}
        for key in ("target", "weights"):
            a, r = got[head][key].cpu().numpy(), ref[head][key]
            assert a.dtype == r.dtype, (head, key, a.dtype, r.dtype)
            assert a.shape == r.shape, (head, key)
            np.testing.assert_allclose(a.astype(np.float64), r, atol=atol, rtol=0, err_msg=f"{head}/{key}")


def random_keypoints(rng, b, n, k, stride, hw, vis=(-1, 0, 1, 2)):
    h, w = hw
    xy = rng.uniform(-25, [w * stride + 25, h * stride + 25], (b, n, k, 2))
    v = rng.choice(vis, (b, n, k, 1))
    return np.concatenate([xy, v], -1).astype(np.float32)


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
@pytest.mark.parametrize("stride", [2, 4, 8, 3])
@pytest.mark.parametrize("locref", [True, False])
@pytest.mark.parametrize("reuse", [True, False])
def test_keypoint_mode_matches_loop(mode, stride, locref, reuse, make):
    rng = np.random.default_rng(stride * 7 + locref)
    hw = (120 // stride, 160 // stride)
    gen = make(6, 17, mode=mode, generate_locref=locref, reuse_buffers=reuse)
    for _ in range(3):  # with kept buffers the later calls rewrite the first call's outputs
        kp = random_keypoints(rng, 2, 2, 6, stride, hw)
        kp[0, 1, :2, :2] = kp[0, 0, :2, :2] + 4.0   # overlapping individuals
        kp[0, :, 2, 2] = 2                          # both visible
        assert_matches(call(gen, kp, stride, hw),
                       dlc_heatmap_loop(kp, stride, hw, 6, mode, generate_locref=locref))


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
@pytest.mark.parametrize("gradient_masking", [False, True])
def test_individual_mode_matches_loop(mode, gradient_masking, make):
    rng = np.random.default_rng(1)
    hw = (30, 40)
    ids = np.array([[1, 0, -1], [2, 2, 0]])       # sample 1: two rows claim slot 2 (the last wins)
    gen = make(3, 17, mode=mode, heatmap_mode="INDIVIDUAL",
                            gradient_masking=gradient_masking, background_weight=0.25)
    for _ in range(2):
        kp = random_keypoints(rng, 2, 3, 5, 4, hw)
        assert_matches(call(gen, kp, 4, hw, ids),
                       dlc_heatmap_loop(kp, 4, hw, 3, mode, "individual", ids,
                                        gradient_masking=gradient_masking, background_weight=0.25))


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
def test_gradient_masking_and_weights_last_member_wins(mode, make):
    # keypoint 0: individual 0 has v=-1, individual 1 v=0 -> background weight (last member);
    # keypoint 1: v=0 then v=-1 -> 0; keypoint 2: v=0, v=2 -> background (a drawn member sets none)
    kp = np.array([[[[10, 10, -1], [20, 20, 0], [30, 30, 0]],
                    [[10, 10, 0], [20, 20, -1], [30, 30, 2]]]], np.float32)
    gen = make(3, 17, mode=mode, gradient_masking=True, background_weight=0.1)
    w = call(gen, kp, 4, (10, 10))["heatmap"]["weights"]
    assert w[0, :, 0, 0].tolist() == pytest.approx([0.1, 0.0, 0.1])
    assert (w == w[:, :, :1, :1]).all()         # one value per map
    w = call(make(3, 17, mode=mode), kp, 4, (10, 10))["heatmap"]["weights"]
    assert w[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0]   # without masking only v=-1 mutes


def test_hand_worked_gaussian_and_locref(make):
    # stride 4 -> centres 2, 6, 10, ...; keypoint (7, 3): cell (0, 1) centre (6, 2):
    # d^2 = 1 + 1 = 2, heatmap exp(-2 / (2 (34/3)^2)), locref ((7-6), (3-2)) / 7.2801
    kp = np.array([[[[7.0, 3.0, 2.0]]]], np.float32)
    out = call(make(1, 17), kp, 4, (8, 8))
    std = 2 * 17 / 3
    assert out["heatmap"]["target"][0, 0, 0, 1].item() == pytest.approx(math.exp(-2 / (2 * std ** 2)), abs=1e-7)
    assert out["locref"]["target"][0, 0, 0, 1].item() == pytest.approx(1 / 7.2801, abs=1e-7)
    assert out["locref"]["target"][0, 1, 0, 1].item() == pytest.approx(1 / 7.2801, abs=1e-7)
    # the whole locref map (Gaussian): x channel varies along W only, y along H only
    assert out["locref"]["target"][0, 0, 7, 7].item() == pytest.approx((7 - 30) / 7.2801, abs=1e-6)
    assert out["locref"]["target"][0, 1, 7, 7].item() == pytest.approx((3 - 30) / 7.2801, abs=1e-6)
    # mask: d^2 <= 289; cell (4, 4) centre (18, 18): 121 + 225 = 346 > 289 -> 0; (3, 4): 121+121 -> 1
    mask = out["locref"]["weights"]
    assert mask.dtype == torch.int64 and mask[0, :, 4, 4].tolist() == [0, 0] and mask[0, :, 3, 4].tolist() == [1, 1]


def test_threshold_is_inclusive_and_grid_truncated(make):
    # stride 3: centres trunc(1.5 + 3j) = 1, 4, 7, ...; keypoint (1, 1) with t = 6:
    # cell (0, 2) centre (7, 1): d^2 = 36 = t^2 -> inside; cell (0, 3) centre (10, 1): 81 -> outside
    assert dlc_grid(4, 3, torch.device("cpu")).tolist() == [1, 4, 7, 10]
    kp = np.array([[[[1.0, 1.0, 2.0]]]], np.float32)
    out = call(make(1, 6, mode="plateau"), kp, 3, (3, 5))
    assert out["heatmap"]["target"][0, 0, 0].tolist() == [1, 1, 1, 0, 0]
    assert out["locref"]["weights"][0, 0, 0].tolist() == [1, 1, 1, 0, 0]
    assert out["locref"]["target"][0, 0, 0, 3].item() == 0.0       # plateau: 0 outside the disk


def test_visibility_zero_draws_nothing_minus_one_mutes(make):
    kp = np.array([[[[10, 10, 0], [10, 10, -1], [10, 10, 1]]]], np.float32)
    out = call(make(3, 17), kp, 4, (6, 6))
    hm = out["heatmap"]
    assert hm["target"][0, 0].max() == 0 and hm["target"][0, 1].max() == 0 and hm["target"][0, 2].max() > 0.9
    assert hm["weights"][0, :, 0, 0].tolist() == [1.0, 0.0, 1.0]
    assert out["locref"]["weights"][0, :4].sum() == 0


def test_single_animal_three_dim_keypoints_and_extra_heatmaps(make):
    rng = np.random.default_rng(3)
    kp = random_keypoints(rng, 2, 1, 4, 8, (8, 10))
    ref = dlc_heatmap_loop(kp[:, 0], 8, (8, 10), 5)             # num_heatmaps > keypoints
    assert_matches(call(make(5, 17), kp[:, 0], 8, (8, 10)), ref)


def test_reuse_returns_kept_tensors_and_fresh_does_not(make):
    kp = np.array([[[[10, 10, 2]]]], np.float32)
    gen = make(1, 17)
    a, b = call(gen, kp, 4, (6, 6)), call(gen, kp, 4, (6, 6))
    assert a["heatmap"]["target"] is b["heatmap"]["target"]
    fresh = make(1, 17, reuse_buffers=False)
    a, b = call(fresh, kp, 4, (6, 6)), call(fresh, kp, 4, (6, 6))
    assert a["heatmap"]["target"] is not b["heatmap"]["target"]


def test_targets_follow_the_outputs_device_and_errors(make):
    gen = make(2, 17)
    kp = np.zeros((1, 1, 2, 3), np.float32)
    out = call(gen, kp, 4, (4, 4))
    assert out["heatmap"]["target"].device.type == "cpu"
    with pytest.raises(ValueError, match="num_heatmaps"):
        call(make(1, 17), kp, 4, (4, 4))
    with pytest.raises(KeyError, match="individual_ids"):
        make(1, 17, heatmap_mode="individual")(
            4, {"heatmap": torch.zeros(1, 1, 4, 4), "locref": torch.zeros(1, 2, 4, 4)},
            {"keypoints": torch.zeros(1, 1, 2, 3)})
    with pytest.raises(ValueError, match="heatmap_mode"):
        make(1, 17, heatmap_mode="bodypart")
    with pytest.raises(KeyError, match="locref"):
        gen(4, {"heatmap": torch.zeros(1, 2, 4, 4)}, {"keypoints": torch.zeros(1, 1, 2, 3)})


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
def test_cuda_matches_loop(mode):
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    rng = np.random.default_rng(5)
    kp = random_keypoints(rng, 4, 2, 7, 4, (40, 50))
    out = call(DLCHeatmapTargets(7, 17, mode=mode), kp, 4, (40, 50), device="cuda")
    assert out["heatmap"]["target"].device.type == "cuda" and out["locref"]["weights"].device.type == "cuda"
    assert_matches(out, dlc_heatmap_loop(kp, 4, (40, 50), 7, mode))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 3), k=st.integers(1, 4),
       stride=st.sampled_from([1, 2, 4, 8, 3, 2.5]), thresh=st.sampled_from([3.0, 8.5, 17.0]),
       mode=st.sampled_from(["gaussian", "plateau"]), gm=st.booleans())
def test_property_matches_loop(seed, n, k, stride, thresh, mode, gm, make):
    rng = np.random.default_rng(seed)
    hw = (int(rng.integers(1, 14)), int(rng.integers(1, 14)))
    gen = make(k, thresh, mode=mode, gradient_masking=gm)
    for _ in range(2):
        kp = random_keypoints(rng, 2, n, k, stride, hw)
        kp[..., :2] = np.round(kp[..., :2] * 2) / 2     # half-pixel coordinates hit the threshold exactly
        assert_matches(call(gen, kp, stride, hw),
                       dlc_heatmap_loop(kp, stride, hw, k, mode, pos_dist_thresh=thresh, gradient_masking=gm))


def test_gaussian_window_drops_only_values_below_the_bound(make):
    # the Gaussian is written only within R = sigma sqrt(2 ln(1/GAUSS_EPS)) px of each keypoint
    # (per axis, plus a cell): on maps much larger than the window every value left out is
    # < GAUSS_EPS, so is every difference (also where another member's window ends), values
    # >= GAUSS_EPS are exact, and the worst case (keypoints on a row of centres, swept over a
    # stride, so some centre lies just beyond the window) comes near the bound
    from posefeed.integrations.dlc_heatmap import GAUSS_EPS
    rng = np.random.default_rng(11)
    for stride, hw, worst in ((2, (121, 161), 0.3), (4, (61, 81), 0.1), (3, (70, 90), 0.1)):
        sweep = np.zeros((2, 1, 21, 3), np.float32)
        sweep[:, 0, :, 0] = 100 + np.linspace(0, stride, 21)
        sweep[:, 0, :, 1] = (hw[0] // 2) * stride + stride // 2     # a row of centres: dy = 0
        sweep[..., 2] = 2
        rand = random_keypoints(rng, 2, 2, 21, stride, hw, vis=(2,))
        rand[1, 1, :, :2] = rand[1, 0, :, :2] + rng.normal(0, 20, (21, 2))   # overlapping windows
        for kp in (sweep, rand):
            ref = dlc_heatmap_loop(kp, stride, hw, 21)
            for reuse in (True, False):
                gen = make(21, 17, reuse_buffers=reuse)
                call(gen, random_keypoints(rng, 2, kp.shape[1], 21, stride, hw), stride, hw)  # to clear
                got = call(gen, kp, stride, hw)
                hm, rhm = got["heatmap"]["target"].numpy().astype(np.float64), ref["heatmap"]["target"]
                dropped = (hm == 0) & (rhm > 0)
                assert dropped.mean() > 0.2    # the window crops much of the map (the rest underflows)
                assert rhm[dropped].max() < GAUSS_EPS and np.abs(hm - rhm).max() < GAUSS_EPS
                if kp is sweep:
                    assert rhm[dropped].max() > worst * GAUSS_EPS
                big = hm >= GAUSS_EPS   # a dropped term (< GAUSS_EPS) cannot be the max there
                np.testing.assert_allclose(hm[big], rhm[big], rtol=1e-6, atol=0)
                assert_matches(got, ref)                    # and the other outputs to 1e-6


def test_nan_coordinates_follow_dlc(make):
    # DeepLabCut's real batches carry NaN coordinates with v <= 0 (nothing drawn); a visible
    # NaN keypoint makes DeepLabCut's whole heatmap and locref NaN (np.maximum, dx = NaN)
    rng = np.random.default_rng(2)
    hw = (40, 50)
    gen = make(4, 17)
    kp = random_keypoints(rng, 2, 2, 4, 4, hw)
    kp[0, 0, :2, :2] = np.nan
    kp[0, 0, :2, 2] = [0, -1]
    assert_matches(call(gen, kp, 4, hw), dlc_heatmap_loop(kp, 4, hw, 4))
    kp2 = kp.copy()
    kp2[1, 1, 3] = [np.nan, 20.0, 2.0]                 # visible NaN: the maps are written whole
    out = call(gen, kp2, 4, hw)
    assert np.isnan(out["heatmap"]["target"][1, 3].numpy()).all()
    assert_matches(out, dlc_heatmap_loop(kp2, 4, hw, 4))
    assert_matches(call(gen, kp, 4, hw), dlc_heatmap_loop(kp, 4, hw, 4))   # and cleared again


def test_window_runs_fallback_writes_the_same(monkeypatch):
    # should a torch version refuse in-place indexing of the overlapping runs view, the
    # cell-by-cell fallback does the same writes
    import posefeed.integrations.dlc_heatmap as mod

    class Refusing:
        def __init__(self, view):
            self.view = view

        def index_copy_(self, *a):
            raise RuntimeError("unsupported operation: more than one element of the written-to tensor")

        index_fill_ = index_copy_

        def index_select(self, *a):
            return self.view.index_select(*a)

    real = mod._runs
    monkeypatch.setattr(mod, "_runs", lambda flat, span: Refusing(real(flat, span)))
    rng = np.random.default_rng(4)
    hw = (60, 80)
    gen = DLCHeatmapTargets(3, 17, kernel="numpy")  # the torch version writes the runs
    for _ in range(2):
        kp = random_keypoints(rng, 2, 2, 3, 2, hw)
        assert_matches(call(gen, kp, 2, hw), dlc_heatmap_loop(kp, 2, hw, 3))


def test_without_numba_auto_runs_the_torch_version(monkeypatch):
    # kernel="auto" on a machine without numba: the torch version, same targets;
    # kernel="numba" there says how to install it
    from posefeed.targets import _numba, kernels_dlc_cpu

    monkeypatch.setattr(_numba, "numba_or_none", lambda: None)
    monkeypatch.setattr(kernels_dlc_cpu, "dlc_heatmap_targets", None)   # as without numba
    rng = np.random.default_rng(8)
    kp = random_keypoints(rng, 2, 2, 3, 4, (20, 30))
    assert_matches(call(DLCHeatmapTargets(3, 17), kp, 4, (20, 30)), dlc_heatmap_loop(kp, 4, (20, 30), 3))
    with pytest.raises(ImportError, match="posefeed\\[cpu\\]"):
        DLCHeatmapTargets(3, 17, kernel="numba")


def test_keypoint_shapes_other_than_dlcs_are_refused(make):
    gen = make(2, 17)
    outputs = {"heatmap": torch.zeros(1, 2, 4, 4), "locref": torch.zeros(1, 4, 4, 4)}
    with pytest.raises(ValueError, match=r"\(B, N, K, 3\) or \(B, K, 3\)"):
        gen(4, outputs, {"keypoints": torch.zeros(1, 1, 2, 2)})      # no visibility column
    with pytest.raises(ValueError, match="batch 2 but the outputs 1"):
        gen(4, outputs, {"keypoints": torch.zeros(2, 1, 2, 3)})
    single = gen(4, outputs, {"keypoints": torch.zeros(1, 2, 3)})    # (B, K, 3): one animal
    assert tuple(single["heatmap"]["target"].shape) == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="batch 2 but the outputs 1"):
        gen(4, outputs, {"keypoints": torch.zeros(2, 2, 3)})         # (B, K, 3), other batch


@pytest.mark.parametrize("t", [0, -3.0, float("nan"), float("inf")])
def test_a_threshold_that_is_not_a_positive_distance_is_refused(t, make):
    with pytest.raises(ValueError, match="pos_dist_thresh must be a finite number > 0"):
        make(2, t)


def test_visibility_is_the_last_column_as_in_deeplabcut(make):
    """Keypoints with extra columns (x, y, extra, v): DeepLabCut reads ``keypoint[-1]`` as
    the visibility; the oracle (the same rule) on the (x, y, v) columns."""
    rng = np.random.default_rng(3)
    kp = random_keypoints(rng, 2, 2, 3, 4, (12, 14))
    extra = np.concatenate([kp[..., :2], np.full(kp.shape[:-1] + (1,), -1, np.float32),
                            kp[..., 2:]], -1)                 # column 2 is -1 everywhere
    ref = dlc_heatmap_loop(kp, 4, (12, 14), 3, pos_dist_thresh=9)
    assert_matches(call(make(3, 9), extra, 4, (12, 14)), ref)
    assert ref["heatmap"]["target"].max() > 0.9               # something was drawn


def test_no_individuals_and_an_empty_batch(make):
    """N = 0 (individual mode) and B = 0: DeepLabCut's empty targets (no map drawn: heatmaps
    0, weights 1, locref 0 / 0), not a reduction error."""
    gen = make(3, 9, heatmap_mode="individual")
    got = call(gen, np.zeros((2, 0, 4, 3), np.float32), 4, (6, 7), ids=np.zeros((2, 0), np.int64))
    f32 = np.float32
    assert_matches(got, {"heatmap": {"target": np.zeros((2, 3, 6, 7), f32),
                                     "weights": np.ones((2, 3, 6, 7), f32)},
                         "locref": {"target": np.zeros((2, 6, 6, 7), f32),
                                    "weights": np.zeros((2, 6, 6, 7), np.int64)}})
    for mode in ("gaussian", "plateau"):
        got = call(make(3, 9, mode=mode), np.zeros((0, 2, 3, 3), np.float32), 4, (6, 7))
        assert tuple(got["heatmap"]["target"].shape) == (0, 3, 6, 7)
        assert tuple(got["locref"]["weights"].shape) == (0, 6, 6, 7)
