"""Metrics against hand-computed cases (closed forms, worked COCO AP examples)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from posefeed.trainers.metrics import (COCO_SIGMAS, DEFAULT_SIGMA, default_sigmas,
                                       evaluate_keypoints, keypoint_rmse, mean_pose, oks, oks_ap,
                                       pck)


def _gt(points, v=None):
    points = np.asarray(points, dtype=np.float64)
    v = np.full(points.shape[:-1], 2.0) if v is None else np.asarray(v, dtype=np.float64)
    return np.concatenate([points, v[..., None]], axis=-1)


def test_rmse_is_mean_euclidean_over_labelled():
    gt = _gt([[[0, 0], [10, 10], [5, 5], [100, 100]]], v=[[2, 1, 2, 0]])
    # errors: 3-4-5 -> 5; 6-8-10 -> 10; 0; unlabelled keypoint ignored whatever the error
    pred = np.array([[[3, 4], [16, 18], [5, 5], [0, 0]]], dtype=np.float64)
    assert keypoint_rmse(pred, gt) == pytest.approx((5 + 10 + 0) / 3)
    scores = np.array([[0.9, 0.3, 0.6, 1.0]])
    # pcutoff 0.6 keeps keypoints 0 and 2 (>= cut-off): (5 + 0) / 2
    assert keypoint_rmse(pred, gt, scores, pcutoff=0.6) == pytest.approx(2.5)
    assert math.isnan(keypoint_rmse(pred, gt, scores, pcutoff=1.1))


def test_pck_uses_max_side_of_box():
    gt = _gt([[[0, 0], [0, 0], [0, 0]]])
    pred = np.array([[[3, 0], [0, 6], [12, 0]]], dtype=np.float64)
    boxes = np.array([[10, 10, 100, 50]])   # size = 100 -> 5 px and 10 px
    assert pck(pred, gt, boxes, 0.05) == pytest.approx(1 / 3)
    assert pck(pred, gt, boxes, 0.1) == pytest.approx(2 / 3)


def test_oks_closed_form():
    sigma, area = 0.1, 100.0
    # exp(-d^2 / (2 * area * (2 sigma)^2)) = 0.5  <=>  d^2 = 2 * 100 * 0.04 * ln 2
    d = math.sqrt(8 * math.log(2))
    gt = _gt([[[10, 20], [0, 0]]], v=[[2, 0]])
    pred = np.array([[[10 + d, 20], [50, 50]]])
    assert oks(pred, gt, [area], [sigma, sigma])[0] == pytest.approx(0.5)
    # two labelled keypoints: one exact (1.0) and one at 0.5 -> mean 0.75
    gt2 = _gt([[[10, 20], [0, 0]]])
    pred2 = np.array([[[10, 20], [0, d]]])
    assert oks(pred2, gt2, [area], [sigma, sigma])[0] == pytest.approx(0.75)


def test_default_sigmas():
    assert default_sigmas(17) == pytest.approx(COCO_SIGMAS)
    assert COCO_SIGMAS[0] == pytest.approx(0.026) and COCO_SIGMAS[-1] == pytest.approx(0.089)
    assert default_sigmas(4) == pytest.approx([DEFAULT_SIGMA] * 4)


def _instance_with_oks(target: float, sigma: float = 0.1, area: float = 100.0):
    """One-keypoint ground truth at the origin and a prediction whose OKS is ``target``."""
    d = math.sqrt(-2 * area * (2 * sigma) ** 2 * math.log(target))
    return np.array([[d, 0.0]]), _gt([[0.0, 0.0]])


def test_oks_ap_hand_computed():
    p_good, g_good = _instance_with_oks(1.0)
    p_mid, g_mid = _instance_with_oks(0.72)   # matches at 0.50..0.70 (5 thresholds), not above
    pred = np.stack([p_good, p_mid])
    gt = np.stack([g_good, g_mid])
    areas = [100.0, 100.0]
    sig = [0.1]
    # perfect one scored higher: unmatched thresholds give precision 1 up to recall 0.5
    # -> 51 of 101 recall points
    ap = oks_ap(pred, [0.9, 0.8], gt, areas, sigmas=sig)
    assert ap == pytest.approx((5 * 1.0 + 5 * 51 / 101) / 10)
    # perfect one scored lower: FP first, then TP -> precision envelope 0.5 up to recall 0.5
    ap = oks_ap(pred, [0.8, 0.9], gt, areas, sigmas=sig)
    assert ap == pytest.approx((5 * 1.0 + 5 * 0.5 * 51 / 101) / 10)
    # all perfect
    assert oks_ap(np.stack([p_good, p_good]), [0.1, 0.2], gt[[0, 0]], areas, sigmas=sig) == 1.0


def test_oks_ap_matching_within_an_image():
    # one image, two people; three detections: a duplicate of person A with a lower score
    # must be a false positive (A is taken), person B found exactly.
    gt = np.stack([_gt([[0.0, 0.0]]), _gt([[100.0, 0.0]])])
    pred = np.array([[[0.0, 0.0]], [[100.0, 0.0]], [[0.0, 0.0]]])
    ap = oks_ap(pred, [0.9, 0.8, 0.7], gt, [100.0, 100.0], image_ids=[0, 0, 0],
                gt_image_ids=[0, 0], sigmas=[0.1])
    # TP, TP, FP: recall reaches 1 with precision 1 -> AP 1 at every threshold
    assert ap == pytest.approx(1.0)
    # the duplicate scored highest: it takes A, then the real A detection (score 0.8)
    # finds A taken and B too far -> FP; B detection TP. Order: TP(A dup), FP, TP(B)
    pred2 = np.array([[[0.0, 0.0]], [[0.0, 0.0]], [[100.0, 0.0]]])
    ap2 = oks_ap(pred2, [0.9, 0.8, 0.7], gt, [100.0, 100.0], image_ids=[0, 0, 0],
                 gt_image_ids=[0, 0], sigmas=[0.1])
    # precision [1, 1/2, 2/3] -> envelope [1, 2/3, 2/3]; recall [.5, .5, 1]
    # recall points 0..0.5 (51) -> 1; 0.51..1.0 (50) -> 2/3
    assert ap2 == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)


def test_mean_pose_and_evaluate():
    kp = _gt([[[0, 0], [10, 0]], [[2, 2], [99, 99]]], v=[[2, 2], [2, 0]])
    assert mean_pose(kp) == pytest.approx(np.array([[1.0, 1.0], [10.0, 0.0]]))
    gt = _gt([[[0, 0], [10, 0]]])
    pred = np.array([[[3, 4], [10, 0]]], dtype=np.float64)
    m = evaluate_keypoints(pred, np.array([[0.9, 0.9]]), gt, np.array([[0, 0, 40, 20]]))
    assert m["rmse_px"] == pytest.approx(2.5)
    assert m["pck_0.05"] == pytest.approx(0.5)   # 2 px threshold
    assert m["pck_0.1"] == pytest.approx(0.5)    # 4 px threshold, error 5 px
    assert 0 < m["oks_ap"] <= 1


def test_oks_ignores_nan_coordinates_of_unlabelled_ground_truth():
    # PoseTable keeps DLC's missing keypoints as NaN with v = 0; they must not poison OKS/AP
    sigma, area = 0.1, 100.0
    d = math.sqrt(8 * math.log(2))                      # OKS term 0.5 (see closed form above)
    gt = _gt([[[10, 20], [np.nan, np.nan]]], v=[[2, 0]])
    pred = np.array([[[10 + d, 20], [50, 50]]])
    assert oks(pred, gt, [area], [sigma, sigma])[0] == pytest.approx(0.5)
    exact = np.array([[[10.0, 20.0], [50, 50]]])
    assert oks_ap(exact, np.ones(1), gt, [area], sigmas=[sigma, sigma]) == pytest.approx(1.0)


def test_mean_pose_ignores_nan_coordinates_of_unlabelled():
    # same as test_mean_pose_and_evaluate, with the missing keypoint stored as NaN (PoseTable)
    kp = _gt([[[0, 0], [10, 0]], [[2, 2], [np.nan, np.nan]]], v=[[2, 2], [2, 0]])
    assert mean_pose(kp) == pytest.approx(np.array([[1.0, 1.0], [10.0, 0.0]]))
