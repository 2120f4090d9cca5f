"""The DeepLabCut-contract layer of the multi-animal generators (``posefeed.integrations.
dlc_multi``; no DeepLabCut needed): DeepLabCut's ``forward(stride, outputs, labels)`` in,
DeepLabCut's nested dict out, values equal to the per-element loops written from DeepLabCut's
rules (tests/oracles.py). Parity with the real generators: tests_integrations/."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from oracles import dekr_centers, dekr_loop, paf_loop
from posefeed.integrations.dlc_multi import DEKRTargets, PAFTargets


def labels(seed, b=2, n=3, k=5, size=(64, 48)):
    rng = np.random.default_rng(seed)
    kp = np.empty((b, n, k, 3), np.float32)
    kp[..., :2] = rng.uniform(0, 1, (b, n, k, 2)) * np.asarray(size, np.float32)
    kp[..., 2] = rng.choice([-1, 0, 2], (b, n, k), p=[0.1, 0.2, 0.7])
    return kp


def test_paf_targets_dict_and_values():
    graph = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 4]]
    gen = PAFTargets(graph, width=6.0)
    kp = labels(0)
    outputs = {"heatmap": torch.zeros(2, 5, 12, 16), "paf": torch.zeros(2, 10, 12, 16)}
    out = gen(4, outputs, {"keypoints": torch.from_numpy(kp)})
    assert set(out) == {"paf"} and set(out["paf"]) == {"target"}
    t = out["paf"]["target"]
    assert t.dtype == torch.float32 and t.shape == (2, 10, 12, 16)
    np.testing.assert_array_equal(t.numpy(), paf_loop(kp, graph, 4, (16, 12), 6.0))


def test_dekr_targets_dict_and_values():
    gen = DEKRTargets(num_joints=5, pos_dist_thresh=17, bg_weight=0.1)
    kp = dekr_centers(labels(1))
    area = np.array([[100, 400, 100], [64, 64, 900]], np.float32)
    outputs = {"heatmap": torch.zeros(2, 6, 12, 16), "offset": torch.zeros(2, 10, 12, 16)}
    out = gen(4, outputs, {"keypoints": torch.from_numpy(kp), "area": torch.from_numpy(area)})
    assert {h: set(d) for h, d in out.items()} == {"heatmap": {"target", "weights"},
                                                 "offset": {"target", "weights"}}
    ref = dekr_loop(kp, area, 4, (16, 12))
    got = {"heatmap": out["heatmap"]["target"], "heatmap_weight": out["heatmap"]["weights"],
           "offset": out["offset"]["target"], "offset_weight": out["offset"]["weights"]}
    for name, want in ref.items():
        assert got[name].dtype == torch.float32
        np.testing.assert_allclose(got[name].numpy(), want, atol=1e-6, rtol=0, err_msg=name)
    with pytest.raises(ValueError, match="6 keypoints per animal"):
        gen(4, outputs, {"keypoints": torch.from_numpy(kp[:, :, :5]), "area": torch.from_numpy(area)})


def test_reused_buffers_hold_each_calls_targets_only():
    # the default keeps one set of arrays per shape and clears only the previous call's
    # cells: consecutive different batches must each equal the oracle, and the tensors
    # share memory between calls; reuse_buffers=False gives new tensors with the same values
    graph = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 4]]
    kept, fresh = PAFTargets(graph, width=6.0), PAFTargets(graph, width=6.0, reuse_buffers=False)
    outputs = {"heatmap": torch.zeros(2, 5, 12, 16), "paf": torch.zeros(2, 10, 12, 16)}
    seen = []
    for seed in (3, 4, 5):
        kp = labels(seed)
        want = paf_loop(kp, graph, 4, (16, 12), 6.0)
        t = kept(4, outputs, {"keypoints": torch.from_numpy(kp)})["paf"]["target"]
        np.testing.assert_array_equal(t.numpy(), want)
        np.testing.assert_array_equal(fresh(4, outputs, {"keypoints": torch.from_numpy(kp)})["paf"]["target"].numpy(),
                                      want)
        seen.append(t)
    assert seen[0].data_ptr() == seen[2].data_ptr()
    dk, df = DEKRTargets(5, 17), DEKRTargets(5, 17, reuse_buffers=False)
    outputs = {"heatmap": torch.zeros(2, 6, 12, 16), "offset": torch.zeros(2, 10, 12, 16)}
    for seed, area in ((6, [[100, 400, 100], [64, 64, 900]]), (7, [[900, 25, 100], [400, 64, 9]])):
        kp = dekr_centers(labels(seed))
        a = np.asarray(area, np.float32)
        lab = {"keypoints": torch.from_numpy(kp), "area": torch.from_numpy(a)}
        ref = dekr_loop(kp, a, 4, (16, 12))
        for gen in (dk, df):
            out = gen(4, outputs, lab)
            got = {"heatmap": out["heatmap"]["target"], "heatmap_weight": out["heatmap"]["weights"],
                   "offset": out["offset"]["target"], "offset_weight": out["offset"]["weights"]}
            for name, want in ref.items():
                np.testing.assert_allclose(got[name].numpy(), want, atol=1e-6, rtol=0, err_msg=name)
