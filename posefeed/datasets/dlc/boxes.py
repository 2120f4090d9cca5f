"""DeepLabCut 3.0.2's instance boxes and areas, read from its source
(``pose_estimation_pytorch/data``): ``DLCLoader.to_coco`` counts a label as visible when it
is not NaN and ``0 < x < width``, ``0 < y < height``; ``base._compute_bboxes(method=
"keypoints")`` -> ``utils.bbox_from_keypoints`` makes the box of the visible labels grown by
``data.bbox_margin`` (default 20) px on each side with its corners clipped to
``[0, width] x [0, height]``, and the annotation's ``area`` is ``max(1, w * h)``."""
from __future__ import annotations

import numpy as np


def dlc_visible(keypoints: np.ndarray, image_sizes: np.ndarray) -> np.ndarray:
    """``(N, K)`` bool: DeepLabCut's visible labels (``v > 0`` and strictly inside the image,
    ``0 < x < width``, ``0 < y < height``). ``keypoints (N, K, 3)``, ``image_sizes (N, 2)``
    (w, h)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    w = np.asarray(image_sizes, dtype=np.float64)[:, None, 0]
    h = np.asarray(image_sizes, dtype=np.float64)[:, None, 1]
    x, y = np.nan_to_num(kp[..., 0], nan=-1.0), np.nan_to_num(kp[..., 1], nan=-1.0)
    return (kp[..., 2] > 0) & (0 < x) & (x < w) & (0 < y) & (y < h)


def dlc_boxes(keypoints: np.ndarray, image_sizes: np.ndarray, margin: float = 20.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """DeepLabCut's instance boxes ``(N, 4)`` float64 xywh (image pixels, its keypoint
    convention) and annotation areas ``(N,)`` ``max(1, w * h)`` (pixels squared): the
    visible keypoints' box grown by ``margin`` on each side, corners clipped to
    ``[0, w] x [0, h]``; ``(0, 0, 0, 0)`` (area 1) for an instance with no visible
    keypoint."""
    kp = np.asarray(keypoints, dtype=np.float64)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    vis = dlc_visible(kp, sizes)
    has = vis.any(axis=1)
    inf = np.inf
    x0 = np.where(vis, kp[..., 0], inf).min(axis=1) - margin
    y0 = np.where(vis, kp[..., 1], inf).min(axis=1) - margin
    x1 = np.where(vis, kp[..., 0], -inf).max(axis=1) + margin
    y1 = np.where(vis, kp[..., 1], -inf).max(axis=1) + margin
    corners = np.stack([x0, y0, x1, y1], axis=1)
    corners = np.where(has[:, None], corners, 0.0)
    corners = np.clip(corners, 0.0, np.concatenate([sizes, sizes], axis=1))
    boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    return boxes, np.maximum(1.0, boxes[:, 2] * boxes[:, 3])
