"""The compiled CPU kernel of the DeepLabCut drop-in heatmap generators
(``posefeed.targets.kernels_dlc_cpu``, run by ``DLCHeatmapTargets(kernel="numba")`` on CPU
tensors) against the loop written from DeepLabCut 3.0.2's rules (tests/oracles_dlc.py) and
against the torch version (``kernel="numpy"``): random batches through kept buffers, and the
edge cases (keypoints on and beyond the map border, NaN / inf coordinates, v -1 / 0, members
changing in number between calls, weight maps changing, maps narrower than a vector), plus the
streaming stores that write the Gaussian locref, at every alignment."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from oracles_dlc import dlc_heatmap_loop
from posefeed.integrations.dlc_heatmap import DLCHeatmapTargets

pytest.importorskip("numba")
from posefeed.targets import kernels_dlc_cpu  # noqa: E402  (after the skip: compiled with numba)


def call(gen, kp, stride, hw, ids=None):
    c = gen.num_heatmaps
    outputs = {"heatmap": torch.zeros(kp.shape[0], c, *hw), "locref": torch.zeros(kp.shape[0], 2 * c, *hw)}
    labels = {"keypoints": torch.as_tensor(kp)}
    if ids is not None:
        labels["individual_ids"] = torch.as_tensor(ids)
    return gen(stride, outputs, labels)


def check(got, ref, atol=1e-6):
    """``got`` (tensors) equals ``ref`` (the loop's arrays): dtypes, shapes, values to ``atol``
    (NaN where the loop has NaN, inf where it has inf)."""
    assert set(got) == set(ref)
    for head in ref:
        for key in ("target", "weights"):
            a, r = got[head][key].numpy(), ref[head][key]
            assert a.dtype == r.dtype and a.shape == r.shape, (head, key, a.dtype, r.dtype)
            np.testing.assert_allclose(a.astype(np.float64), r, atol=atol, rtol=0, err_msg=f"{head}/{key}")


def check_same(kern, torch_out):
    """The kernel's outputs and the torch version's: the same bits except the Gaussian
    heatmap (products of the per-axis exponentials in float64 vs float32: a few ulps)."""
    for head in torch_out:
        for key, t in torch_out[head].items():
            k = kern[head][key]
            assert k.dtype == t.dtype and k.shape == t.shape
            if head == "heatmap" and key == "target":
                torch.testing.assert_close(k, t, atol=1e-6, rtol=0, equal_nan=True)
            else:
                assert torch.equal(k.nan_to_num(7.0), t.nan_to_num(7.0)), (head, key)


def random_keypoints(rng, b, n, k, stride, hw, vis=(-1, 0, 1, 2), margin=40):
    h, w = hw
    xy = rng.uniform(-margin, [w * stride + margin, h * stride + margin], (b, n, k, 2))
    v = rng.choice(vis, (b, n, k, 1))
    return np.concatenate([xy, v], -1).astype(np.float32)


def pair(c, thresh=17, **kw):
    return (DLCHeatmapTargets(c, thresh, kernel="numba", **kw),
            DLCHeatmapTargets(c, thresh, kernel="numpy", **kw))


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
@pytest.mark.parametrize("stride", [2, 4, 8, 3])
@pytest.mark.parametrize("locref", [True, False])
@pytest.mark.parametrize("heatmap_mode,gm", [("keypoint", False), ("keypoint", True), ("individual", True)])
def test_random_batches_through_kept_buffers(mode, stride, locref, heatmap_mode, gm):
    rng = np.random.default_rng(100 * stride + 10 * locref + gm)
    hw = (240 // stride + 1, 320 // stride + 1)
    n, k = 3, 5
    c = k if heatmap_mode == "keypoint" else n
    kern, ref_gen = pair(c, mode=mode, heatmap_mode=heatmap_mode, gradient_masking=gm,
                         background_weight=0.3, generate_locref=locref)
    ids = np.array([[2, 0, 1], [0, -1, 1]])
    for _ in range(4):  # the later calls clear and rewrite the first ones' kept buffers
        kp = random_keypoints(rng, 2, n, k, stride, hw)
        kp[0, 1, :, :2] = kp[0, 0, :, :2] + rng.normal(0, 5, (k, 2))   # overlapping individuals
        kp[1, :, 0, 2] = 2
        got = call(kern, kp, stride, hw, ids)
        check(got, dlc_heatmap_loop(kp, stride, hw, c, mode, heatmap_mode, ids, gradient_masking=gm,
                                    background_weight=0.3, generate_locref=locref))
        check_same(got, call(ref_gen, kp, stride, hw, ids))


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
@pytest.mark.parametrize("stride", [2, 4, 8])
def test_border_and_outside_keypoints(mode, stride):
    # keypoints on the map's first / last centres, on the frame's corners, just beyond the
    # border (their disk or window reaches in) and far beyond it (nothing drawn, but the
    # Gaussian locref is still the whole map's offsets)
    hw = (200 // stride, 160 // stride)
    fh, fw = hw[0] * stride, hw[1] * stride
    pts = [(0, 0), (fw - 1, fh - 1), (fw, fh), (stride / 2, stride / 2), (-5, 30), (30, -16.5),
           (fw + 9, 40), (40, fh + 16), (-200, -200), (fw + 500, 30), (-0.01, fh / 2), (fw / 2, fh - 0.5)]
    kp = np.array([[[[x, y, 2.0] for x, y in pts]]], np.float32)
    kern, ref_gen = pair(len(pts), mode=mode)
    for sample in (kp, kp[:, :, ::-1].copy()):   # and again, reversed, through the kept buffers
        got = call(kern, sample, stride, hw)
        check(got, dlc_heatmap_loop(sample, stride, hw, len(pts), mode))
        check_same(got, call(ref_gen, sample, stride, hw))


def test_hand_worked_border_cell():
    # stride 8, map 4 x 4 (centres 4, 12, 20, 28); keypoint (-13, 4) beyond the left edge:
    # cell (0, 0) at d = 17 = t: inside (inclusive), cell (0, 1) d = 25: outside
    kp = np.array([[[[-13.0, 4.0, 2.0]]]], np.float32)
    out = call(DLCHeatmapTargets(1, 17, mode="plateau", kernel="numba"), kp, 8, (4, 4))
    assert out["heatmap"]["target"][0, 0].tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert out["locref"]["target"][0, 0, 0, 0].item() == pytest.approx(-17 / 7.2801, abs=1e-6)
    assert out["locref"]["target"][0, :, 0, 1].tolist() == [0.0, 0.0]
    out = call(DLCHeatmapTargets(1, 17, kernel="numba"), kp, 8, (4, 4))
    assert out["locref"]["target"][0, 0, 3, 3].item() == pytest.approx((-13 - 28) / 7.2801, abs=1e-6)
    assert out["locref"]["target"][0, 1, 3, 3].item() == pytest.approx((4 - 28) / 7.2801, abs=1e-6)
    assert out["locref"]["weights"][0, :, 0].tolist() == [[1, 0, 0, 0], [1, 0, 0, 0]]
    std = 2 * 17 / 3
    assert out["heatmap"]["target"][0, 0, 0, 1].item() == pytest.approx(np.exp(-625 / (2 * std ** 2)), rel=1e-6)


@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
def test_nan_inf_and_visibility_flags(mode):
    rng = np.random.default_rng(7)
    hw = (50, 60)
    kern, ref_gen = pair(4, mode=mode, gradient_masking=True, background_weight=0.25)
    kp = random_keypoints(rng, 2, 3, 4, 4, hw)
    kp[0, 0, 0] = [np.nan, np.nan, 0]      # DeepLabCut's hidden keypoints: NaN, v <= 0
    kp[0, 1, 0] = [np.nan, 5.0, -1]
    kp[0, 2, 0] = [30.0, 40.0, 2]
    kp[1, 0, 1] = [np.nan, 20.0, 2]        # visible NaN: DeepLabCut's Gaussian map is NaN
    kp[1, 1, 1] = [10.0, 10.0, 2]          # and stays NaN through later members
    kp[1, 2, 2] = [np.inf, 30.0, 2]        # inf: nothing inside, locref inf
    kp[1, 0, 3] = [-np.inf, np.inf, 1]
    kp[0, :, 3, 2] = [2, -1, 0]            # the last member setting a weight wins
    for sample in (kp, random_keypoints(rng, 2, 3, 4, 4, hw), kp):   # NaN maps cleared again
        got = call(kern, sample, 4, hw)
        check(got, dlc_heatmap_loop(sample, 4, hw, 4, mode, gradient_masking=True, background_weight=0.25))
        check_same(got, call(ref_gen, sample, 4, hw))
    if mode == "gaussian":
        assert torch.isnan(got["heatmap"]["target"][1, 1]).all()
    assert got["heatmap"]["weights"][0, 3, 0, 0].item() == pytest.approx(0.25)


def test_members_change_in_number_and_weights_change():
    # kept buffers of one (B, G, H, W) shape see 1, 3, then 2 individuals, and weight maps
    # flipping between 1, 0 and the background weight
    rng = np.random.default_rng(3)
    hw = (40, 52)
    kern, ref_gen = pair(6, gradient_masking=True, background_weight=0.5)
    kern_p, ref_p = pair(6, mode="plateau")
    for n in (1, 3, 2, 2, 1):
        kp = random_keypoints(rng, 2, n, 6, 4, hw)
        for g, r, mode in ((kern, ref_gen, "gaussian"), (kern_p, ref_p, "plateau")):
            gm = g.gradient_masking
            got = call(g, kp, 4, hw)
            check(got, dlc_heatmap_loop(kp, 4, hw, 6, mode, gradient_masking=gm, background_weight=0.5))
            check_same(got, call(r, kp, 4, hw))


@pytest.mark.parametrize("hw", [(1, 1), (3, 7), (5, 8), (4, 9), (2, 15), (3, 16), (6, 17), (9, 33)])
@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
def test_small_maps(hw, mode):
    # maps narrower than one 8-float store write the Gaussian locref with plain stores, the
    # others stream it from every alignment
    rng = np.random.default_rng(hw[0] * 40 + hw[1])
    kern, ref_gen = pair(3, 6.0, mode=mode)
    for _ in range(2):
        kp = random_keypoints(rng, 3, 2, 3, 4, hw, margin=8)
        got = call(kern, kp, 4, hw)
        check(got, dlc_heatmap_loop(kp, 4, hw, 3, mode, pos_dist_thresh=6.0))
        check_same(got, call(ref_gen, kp, 4, hw))


def test_new_tensors_and_alternating_shapes():
    rng = np.random.default_rng(9)
    kept = DLCHeatmapTargets(4, 17, kernel="numba", max_kept=2)
    fresh = DLCHeatmapTargets(4, 17, kernel="numba", reuse_buffers=False)
    shapes = [(2, (30, 40)), (3, (30, 40)), (2, (61, 81)), (2, (30, 40))]   # the third evicts the first
    for b, hw in shapes * 2:
        kp = random_keypoints(rng, b, 2, 4, 4, hw)
        ref = dlc_heatmap_loop(kp, 4, hw, 4)
        a = call(kept, kp, 4, hw)
        check(a, ref)
        f1, f2 = call(fresh, kp, 4, hw), call(fresh, kp, 4, hw)
        check(f1, ref)
        assert f1["heatmap"]["target"] is not f2["heatmap"]["target"]
        assert f1["locref"]["target"].data_ptr() != f2["locref"]["target"].data_ptr()


def test_the_kernel_runs_once_per_call_on_cpu(monkeypatch):
    calls = []
    real = kernels_dlc_cpu.dlc_heatmap_targets
    monkeypatch.setattr(kernels_dlc_cpu, "dlc_heatmap_targets", lambda *a: calls.append(1) or real(*a))
    kp = np.array([[[[10.0, 12.0, 2.0]]]], np.float32)
    call(DLCHeatmapTargets(1, 17, kernel="numba"), kp, 4, (8, 8))
    call(DLCHeatmapTargets(1, 17, kernel="auto"), kp, 4, (8, 8))
    assert len(calls) == 2
    call(DLCHeatmapTargets(1, 17, kernel="numpy"), kp, 4, (8, 8))
    assert len(calls) == 2


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
def test_individual_ids_errors_on_both_paths(kernel):
    gen = DLCHeatmapTargets(2, 17, heatmap_mode="individual", kernel=kernel)
    kp = np.zeros((1, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="individual_ids must be < N"):
        call(gen, kp, 4, (4, 4), ids=np.array([[0, 2]]))
    with pytest.raises(ValueError, match=r"individual_ids must be \(B, N\)"):
        call(gen, kp, 4, (4, 4), ids=np.array([[0, 1, 1]]))
    with pytest.raises(ValueError, match="keypoints must be"):
        call(gen, np.zeros((1, 2, 3, 2), np.float32), 4, (4, 4), ids=np.array([[0, 1]]))


@pytest.mark.parametrize("w", [8, 9, 13, 16, 17, 24, 31, 40])
def test_streaming_stores_at_every_alignment(w):
    # _stream_x / _stream_y write an (h, w) map at any float offset of an array (the 64-byte
    # line starts anywhere relative to the map) and touch nothing around it
    rng = np.random.default_rng(w)
    for h in (1, 2, 3, 7):
        row = rng.normal(size=w).astype(np.float32)
        col = rng.normal(size=h).astype(np.float32)
        dbl = np.concatenate([row, row])
        ycp = np.repeat(np.concatenate([col, [np.float32(99)]]), 8).astype(np.float32)
        for start in range(17):
            flat = np.full(h * w + 40, -3.0, np.float32)
            kernels_dlc_cpu._stream_x(flat, start, h, w, dbl)
            expect = np.full_like(flat, -3.0)
            expect[start:start + h * w] = np.tile(row, h)
            np.testing.assert_array_equal(flat, expect)
            flat[:] = -3.0
            kernels_dlc_cpu._stream_y(flat, start, h, w, ycp)
            expect[start:start + h * w] = np.repeat(col, w)
            np.testing.assert_array_equal(flat, expect)


def test_normal_store_stand_in_writes_the_same(monkeypatch):
    # a numba whose internals moved gets _copy8 instead of the non-temporal store: the
    # streaming loops (run here as plain Python) then write the same values
    monkeypatch.setattr(kernels_dlc_cpu, "_stream8", kernels_dlc_cpu._copy8_py)
    row = np.arange(11, dtype=np.float32)
    flat = np.zeros(3 * 11 + 9, np.float32)
    kernels_dlc_cpu._stream_x_py(flat, 5, 3, 11, np.concatenate([row, row]))
    np.testing.assert_array_equal(flat[5:38], np.tile(row, 3))
    assert not flat[:5].any() and not flat[38:].any()
    col = np.array([2.0, -1.0, 4.0], np.float32)
    kernels_dlc_cpu._stream_y_py(flat, 5, 3, 11, np.repeat(np.append(col, 0), 8).astype(np.float32))
    np.testing.assert_array_equal(flat[5:38], np.repeat(col, 11))
    assert kernels_dlc_cpu._no_fence_py() is None
