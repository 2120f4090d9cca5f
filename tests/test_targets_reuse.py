"""``encode(keypoints, out=buffers)`` and ``codec.encoder()`` (kept buffers that rewrite only
what changed): every call must equal the independent loop references of each codec's tests,
whatever the buffers held before (NaN garbage, a previous batch, another batch shape), and
plain ``encode`` must keep returning fresh arrays."""
from __future__ import annotations

import numpy as np
import pytest

from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC, UDPHeatmap
from oracles import dlc_loop, mmpose_loop, mmpose_udp_loop, mmpose_unbiased_loop, simcc_loop


def random_batch(rng, b, n, k, w, h, p_vis=(0.1, 0.15, 0.15, 0.6)):
    """Keypoints over -10% .. 110% of a (w, h) input, v in {-1, 0, 1, 2}, a few NaN."""
    kp = np.empty((b, n, k, 3), np.float32)
    kp[..., 0] = rng.uniform(-0.1 * w, 1.1 * w, (b, n, k))
    kp[..., 1] = rng.uniform(-0.1 * h, 1.1 * h, (b, n, k))
    kp[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k), p=p_vis)
    nan = rng.random((b, n, k)) < 0.05
    kp[..., 0][nan] = np.nan
    return kp


def batch_sequence(seed, b, n, k, w, h):
    """Consecutive batches that stress the kept buffers: random ones, a repeat, nothing
    visible, everything ignored (v = -1), then random again."""
    rng = np.random.default_rng(seed)
    seq = [random_batch(rng, b, n, k, w, h) for _ in range(3)]
    seq.append(seq[-1].copy())
    empty = seq[0].copy()
    empty[..., 2] = 0
    seq.append(empty)
    ignored = seq[1].copy()
    ignored[..., 2] = -1
    seq.append(ignored)
    seq += [random_batch(rng, b, n, k, w, h) for _ in range(2)]
    return seq


def garbage_buffers(codec, b, k):
    return {name: np.full(shape, np.nan, np.float32) for name, shape in codec.output_shapes(b, k).items()}


def check(codec, got, ref):
    assert list(got) == list(codec.output_names)
    for name in codec.output_names:
        assert got[name].dtype == np.float32 and got[name].shape == ref[name].shape, name
        np.testing.assert_allclose(got[name], ref[name], atol=1e-6, rtol=0, err_msg=name)


# ----------------------------------------------------------------------------- DLC
@pytest.mark.parametrize("mode", ["gaussian", "plateau"])
@pytest.mark.parametrize("locref", [True, False])
@pytest.mark.parametrize("zero_weight_unlabeled", [False, True])
@pytest.mark.parametrize("n", [1, 3])
def test_dlc_out_and_encoder_match_loop(mode, locref, zero_weight_unlabeled, n):
    c = DLCHeatmap(stride=3, heatmap_size=(23, 17), mode=mode, locref=locref,
                   zero_weight_unlabeled=zero_weight_unlabeled)
    b, k = 2, 4
    bufs = garbage_buffers(c, b, k)
    enc = c.encoder()
    for kp in batch_sequence(7 + n, b, n, k, 69, 51):
        ref = dlc_loop(c, kp)
        got = c.encode(kp, out=bufs)
        for name in c.output_names:
            assert got[name] is bufs[name]
        check(c, got, ref)
        check(c, enc(kp), ref)
        check(c, c.encode(kp), ref)


def test_dlc_encoder_large_map_many_batches():
    """The benchmark's shape class (stride 2, K = 37) over several batches."""
    c = DLCHeatmap(stride=2, heatmap_size=(61, 45), zero_weight_unlabeled=True)
    enc = c.encoder()
    for kp in batch_sequence(3, 2, 1, 37, 122, 90):
        check(c, enc(kp), dlc_loop(c, kp))


def test_dlc_encoder_batch_shape_changes_and_eviction():
    c = DLCHeatmap(stride=4, heatmap_size=(16, 12))
    rng = np.random.default_rng(5)
    for max_shapes in (1, 4):
        enc = c.encoder(max_shapes=max_shapes)
        for b in (2, 3, 2, 1, 2, 3):
            kp = random_batch(rng, b, 2, 5, 64, 48)
            check(c, enc(kp), dlc_loop(c, kp))
        assert len(enc._sets) <= max_shapes


def test_encode_returns_fresh_arrays():
    rng = np.random.default_rng(0)
    for c in (DLCHeatmap(stride=4, heatmap_size=(16, 12)), DLCHeatmap(stride=4, heatmap_size=(16, 12), mode="plateau"),
              GaussianHeatmap(input_size=(48, 64), heatmap_size=(12, 16)), SimCC(input_size=(48, 64))):
        kp = random_batch(rng, 2, 1, 3, 48, 64)
        a, b = c.encode(kp), c.encode(kp)
        for name in c.output_names:
            assert not np.shares_memory(a[name], b[name]), name
            assert a[name].flags.writeable and a[name].flags.c_contiguous


def test_encoder_outputs_are_read_only_views_of_kept_buffers():
    c = DLCHeatmap(stride=4, heatmap_size=(16, 12))
    enc = c.encoder()
    kp = random_batch(np.random.default_rng(1), 2, 1, 3, 64, 48)
    out = enc(kp)
    bufs = enc.buffers(kp)
    for name in c.output_names:
        assert np.shares_memory(out[name], bufs[name])
        with pytest.raises(ValueError):
            out[name][0, 0, 0, 0] = 1.0


def test_encoder_forget_after_external_writes():
    c = DLCHeatmap(stride=4, heatmap_size=(16, 12), mode="plateau")
    enc = c.encoder()
    rng = np.random.default_rng(2)
    kp1, kp2 = random_batch(rng, 2, 2, 3, 64, 48), random_batch(rng, 2, 2, 3, 64, 48)
    shared = enc.encode_shared(kp1)
    for a in shared.values():
        a.fill(7.0)  # someone wrote into the buffers ...
    enc.forget()  # ... and said so: the next call rewrites every element
    check(c, enc(kp2), dlc_loop(c, kp2))


def test_out_validation():
    c = DLCHeatmap(stride=4, heatmap_size=(16, 12))
    kp = random_batch(np.random.default_rng(3), 2, 1, 3, 64, 48)
    good = garbage_buffers(c, 2, 3)
    bad_cases = [
        {**good, "heatmap": np.zeros((2, 3, 12, 15), np.float32)},           # shape
        {**good, "locref": np.zeros((2, 6, 12, 16), np.float64)},            # dtype
        {**good, "heatmap_weight": np.zeros((2, 3, 16, 12), np.float32).transpose(0, 1, 3, 2)},  # layout
        {k: v for k, v in good.items() if k != "locref_weight"},             # missing
    ]
    for bad in bad_cases:
        with pytest.raises(ValueError):
            c.encode(kp, out=bad)
    ro = dict(good)
    ro["heatmap"] = good["heatmap"].view()
    ro["heatmap"].flags.writeable = False
    with pytest.raises(ValueError):
        c.encode(kp, out=ro)


# ----------------------------------------------------------------------------- MMPose codecs
@pytest.mark.parametrize("n", [1, 2])
def test_gaussian_out_and_encoder_match_mmpose_loop(n):
    c = GaussianHeatmap(input_size=(99, 70), heatmap_size=(33, 35), sigma=1.5)
    bufs = garbage_buffers(c, 3, 6)
    enc = c.encoder()
    for kp in batch_sequence(11 + n, 3, n, 6, 99, 70):
        kp = np.nan_to_num(kp, nan=-1e4)  # mmpose_loop masks NaN differently: keep them off the map
        hm, wt = mmpose_loop(c, kp)
        ref = {"heatmap": hm, "keypoint_weight": wt}
        got = c.encode(kp, out=bufs)
        assert got["heatmap"] is bufs["heatmap"] and got["keypoint_weight"] is bufs["keypoint_weight"]
        check(c, got, ref)
        check(c, enc(kp), ref)


@pytest.mark.parametrize("n", [1, 2])
def test_udp_out_and_encoder_match_mmpose_loop(n):
    c = UDPHeatmap(input_size=(48, 64), heatmap_size=(12, 16))
    bufs = garbage_buffers(c, 2, 5)
    enc = c.encoder()
    for kp in batch_sequence(21 + n, 2, n, 5, 48, 64):
        kp = np.nan_to_num(kp, nan=-1e4)
        hm, wt = mmpose_udp_loop(c, kp)
        ref = {"heatmap": hm, "keypoint_weight": wt}
        check(c, c.encode(kp, out=bufs), ref)
        check(c, enc(kp), ref)


@pytest.mark.parametrize("n", [1, 2])
def test_unbiased_gaussian_out_and_encoder_match_mmpose_loop(n):
    c = GaussianHeatmap(input_size=(48, 64), heatmap_size=(12, 16), unbiased=True)
    bufs = garbage_buffers(c, 2, 5)
    enc = c.encoder()
    for kp in batch_sequence(4 + n, 2, n, 5, 48, 64):
        kp = np.nan_to_num(kp, nan=-1e4)
        hm, wt = mmpose_unbiased_loop(c, kp)
        ref = {"heatmap": hm, "keypoint_weight": wt}
        check(c, c.encode(kp, out=bufs), ref)
        check(c, enc(kp), ref)


def test_unbiased_gaussian_out_matches_fresh():
    c = GaussianHeatmap(input_size=(48, 64), heatmap_size=(12, 16), unbiased=True)
    bufs = garbage_buffers(c, 2, 5)
    for kp in batch_sequence(4, 2, 2, 5, 48, 64):
        check(c, c.encode(kp, out=bufs), c.encode(kp))


@pytest.mark.parametrize("n", [1, 2])
def test_simcc_out_and_encoder_match_loop(n):
    c = SimCC(input_size=(48, 64), sigma=(2.5, 3.0), split_ratio=2.0)
    bufs = garbage_buffers(c, 3, 5)
    enc = c.encoder()
    for kp in batch_sequence(31 + n, 3, n, 5, 48, 64):
        kp = np.nan_to_num(kp, nan=-1e4)
        tx, ty, wt = simcc_loop(c, kp)
        ref = {"x_labels": tx, "y_labels": ty, "keypoint_weight": wt}
        got = c.encode(kp, out=bufs)
        for name in c.output_names:
            assert got[name] is bufs[name]
        check(c, got, ref)
        check(c, enc(kp), ref)
