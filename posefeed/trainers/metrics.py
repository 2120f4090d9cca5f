"""Keypoint metrics in original image pixels (NumPy).

- `keypoint_rmse`: DeepLabCut's "RMSE": the *mean Euclidean distance* (pixels) over the
  labelled keypoints (``v > 0``), optionally only over predictions whose score (likelihood)
  is at least ``pcutoff`` (DeepLabCut's default 0.6).
- `pck`: fraction of labelled keypoints within ``thr * box_size`` of the ground truth, where
  ``box_size = max(w, h)`` of the instance's bbox (the PoseTable bbox, xywh, pixels).
- `oks` / `oks_ap`: COCO object keypoint similarity and the COCO-style AP averaged over the
  OKS thresholds 0.50:0.05:0.95, with COCO's 101-point interpolated precision and greedy
  score-ordered matching per image. The instance "area" is the bbox ``w * h`` (COCO uses the
  segmentation area). Per-keypoint sigmas: `COCO_SIGMAS` for the 17 COCO keypoints, else a
  uniform `DEFAULT_SIGMA` = 0.072 (COCO's wrist value, mid-range of its 17).
- `mean_pose`: the mean-pose baseline (mean labelled position of each keypoint).

Shapes: predictions ``(N, K, 2)`` pixels, scores ``(N, K)``, ground truth ``(N, K, 3)``
``(x, y, v)``, boxes ``(N, 4)`` xywh.
"""
from __future__ import annotations

import numpy as np

#: COCO's per-keypoint OKS sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
#: ankles), from the COCO keypoint evaluation.
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07,
                        .87, .87, .89, .89]) / 10.0
#: sigma used for every keypoint of a non-COCO skeleton
DEFAULT_SIGMA = 0.072
#: COCO's OKS thresholds 0.50:0.05:0.95 and recall points 0:0.01:1
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def default_sigmas(num_keypoints: int, coco: bool | None = None) -> np.ndarray:
    """COCO's sigmas for a 17-keypoint COCO skeleton (``coco`` True, or None and K == 17),
    else ``DEFAULT_SIGMA`` for each keypoint."""
    if coco or (coco is None and num_keypoints == 17):
        return COCO_SIGMAS.copy()
    return np.full(num_keypoints, DEFAULT_SIGMA)


def _distances(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)
    d = np.sqrt(((pred - gt[..., :2]) ** 2).sum(-1))
    return d, gt[..., 2] > 0


def keypoint_rmse(pred: np.ndarray, gt: np.ndarray, scores: np.ndarray | None = None,
                  pcutoff: float | None = None) -> float:
    """Mean Euclidean distance (pixels) over labelled keypoints; with ``pcutoff``, only
    those whose score >= pcutoff. NaN when nothing is counted."""
    d, mask = _distances(pred, gt)
    if pcutoff is not None:
        if scores is None:
            raise ValueError("pcutoff needs scores")
        mask = mask & (np.asarray(scores) >= pcutoff)
    return float(d[mask].mean()) if mask.any() else float("nan")


def pck(pred: np.ndarray, gt: np.ndarray, boxes: np.ndarray, thr: float) -> float:
    """Fraction of labelled keypoints with error <= ``thr * max(w, h)`` of their box."""
    d, mask = _distances(pred, gt)
    size = np.asarray(boxes, dtype=np.float64)[:, 2:4].max(axis=1)
    ok = d <= thr * size[:, None]
    return float(ok[mask].mean()) if mask.any() else float("nan")


def oks(pred: np.ndarray, gt: np.ndarray, areas: np.ndarray,
        sigmas: np.ndarray | None = None) -> np.ndarray:
    """OKS between matching rows: ``pred (N, K, 2)``, ``gt (N, K, 3)``, ``areas (N,)``.

    ``oks = mean over labelled k of exp(-d_k^2 / (2 * area * (2 sigma_k)^2))``
    (NaN for an instance with nothing labelled). Broadcasts: ``pred (D, 1, K, 2)`` against
    ``gt (G, K, 3)`` gives ``(D, G)``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    k = gt.shape[-2]
    s = default_sigmas(k) if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    var = (2 * s) ** 2
    d2 = ((pred[..., :2] - gt[..., :2]) ** 2).sum(-1)
    area = np.asarray(areas, dtype=np.float64)[..., None] + np.spacing(1)
    e = np.exp(-d2 / var / area / 2)
    vis = np.broadcast_to(gt[..., 2] > 0, e.shape)
    n = vis.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # where(), not e * vis: unlabelled ground truth may be NaN (DLC missing), NaN * 0 = NaN
        return np.where(n > 0, np.where(vis, e, 0.0).sum(-1) / np.maximum(n, 1), np.nan)


def _average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """COCO's 101-point interpolated AP from detections' scores and true-positive flags."""
    if num_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order].astype(np.float64)
    tps, fps = np.cumsum(tp), np.cumsum(1.0 - tp)
    recall = tps / num_gt
    precision = tps / np.maximum(tps + fps, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(q.mean())


def oks_ap(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, areas: np.ndarray,
           image_ids: np.ndarray | None = None, gt_image_ids: np.ndarray | None = None,
           sigmas: np.ndarray | None = None, thresholds: np.ndarray = OKS_THRESHOLDS,
           max_dets: int = 20) -> float:
    """COCO-style keypoint AP, averaged over ``thresholds``.

    pred ``(D, K, 2)`` with instance scores ``(D,)``; gt ``(G, K, 3)`` with ``areas (G,)``.
    Without image ids, prediction i belongs to ground truth i (one instance per "image",
    the top-down case). Per image, predictions (the ``max_dets`` best) are matched greedily
    in descending score to the unmatched ground truth of highest OKS >= threshold, as COCO.
    Ground truths with no labelled keypoint are dropped, with (one-to-one mode) their
    predictions.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    scores = np.asarray(scores, np.float64)
    areas = np.asarray(areas, np.float64)
    if image_ids is None:
        image_ids = np.arange(len(pred))
        gt_image_ids = np.arange(len(gt))
        keep = (gt[..., 2] > 0).any(-1)
        pred, scores, image_ids = pred[keep], scores[keep], image_ids[keep]
    image_ids = np.asarray(image_ids)
    gt_image_ids = np.asarray(gt_image_ids)
    valid = (gt[..., 2] > 0).any(-1)
    gt, areas, gt_image_ids = gt[valid], areas[valid], gt_image_ids[valid]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    all_scores, all_tp = [], []
    for img in np.unique(np.concatenate([image_ids, gt_image_ids])):
        d_idx = np.flatnonzero(image_ids == img)
        d_idx = d_idx[np.argsort(-scores[d_idx], kind="mergesort")][:max_dets]
        g_idx = np.flatnonzero(gt_image_ids == img)
        tp = np.zeros((len(thresholds), len(d_idx)), dtype=bool)
        if len(d_idx) and len(g_idx):
            sim = oks(pred[d_idx][:, None], gt[g_idx][None], areas[g_idx][None], sigmas)
            for t, thr in enumerate(thresholds):
                taken = np.zeros(len(g_idx), dtype=bool)
                for i in range(len(d_idx)):
                    cand = np.where(taken | (sim[i] < min(thr, 1 - 1e-10)), -1.0, sim[i])
                    if cand.max() >= 0:
                        j = int(cand.argmax())
                        taken[j] = True
                        tp[t, i] = True
        all_scores.append(scores[d_idx])
        all_tp.append(tp)
    s = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp_all = np.concatenate(all_tp, axis=1) if all_tp else np.zeros((len(thresholds), 0), bool)
    aps = [_average_precision(s, tp_all[t], len(gt)) for t in range(len(thresholds))]
    return float(np.mean(aps))


def mean_pose(keypoints: np.ndarray) -> np.ndarray:
    """``(K, 2)`` mean position of each keypoint over the instances where it is labelled
    (NaN where never labelled). ``keypoints (N, K, 3)`` in image pixels."""
    kp = np.asarray(keypoints, dtype=np.float64)
    m = kp[..., 2] > 0
    with np.errstate(invalid="ignore"):
        return np.where(m[..., None], kp[..., :2], 0.0).sum(0) / m.sum(0)[:, None]


def evaluate_keypoints(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, boxes: np.ndarray,
                       pcutoff: float = 0.6, sigmas: np.ndarray | None = None
                       ) -> dict[str, float]:
    """All metrics for one-to-one predictions (row i predicts ground-truth row i).

    Returns ``rmse_px``, ``rmse_pcutoff_px``, ``pck_0.05``, ``pck_0.1``, ``oks_ap``; the
    instance score for AP is the mean keypoint score.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    return {
        "rmse_px": keypoint_rmse(pred, gt),
        "rmse_pcutoff_px": keypoint_rmse(pred, gt, scores, pcutoff),
        "pck_0.05": pck(pred, gt, boxes, 0.05),
        "pck_0.1": pck(pred, gt, boxes, 0.1),
        "oks_ap": oks_ap(pred, np.asarray(scores, np.float64).mean(-1), gt,
                         boxes[:, 2] * boxes[:, 3], sigmas=sigmas),
    }
