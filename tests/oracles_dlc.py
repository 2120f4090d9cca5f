"""Reference loops written from DeepLabCut 3.0.2's rules (``models/target_generators/
heatmap_targets.py``), one sample, heatmap and member at a time over the full map, in NumPy.
Shared by the tests; never imports DeepLabCut (tests/ runs without it)."""
from __future__ import annotations

import numpy as np


def dlc_heatmap_loop(keypoints, stride, size, num_heatmaps, mode="gaussian",
                     heatmap_mode="keypoint", individual_ids=None, pos_dist_thresh=17.0,
                     gradient_masking=False, background_weight=0.1, generate_locref=True,
                     locref_std=7.2801):
    """DeepLabCut's ``HeatmapGenerator.forward`` as a loop. ``keypoints (B, N, K, 3)`` or
    ``(B, K, 3)``; ``size = (H, W)``. Returns ``{name: {"target", "weights"}}`` of NumPy
    arrays, ``(B, C, H, W)`` / ``(B, 2C, H, W)``, locref weights int64."""
    coords = np.asarray(keypoints)
    b_ = coords.shape[0]
    if coords.ndim == 3:
        coords = coords.reshape(b_, 1, *coords.shape[1:])
    if heatmap_mode == "keypoint":
        coords = coords.transpose(0, 2, 1, 3)
    else:
        sorted_coords = -np.ones_like(coords)
        for i, ids in enumerate(np.asarray(individual_ids)):
            for j, ind in enumerate(ids):
                if ind >= 0:
                    sorted_coords[i, ind] = coords[i, j]
        coords = sorted_coords
    h, w = size
    std = 2 * pos_dist_thresh / 3
    t2 = float(pos_dist_thresh) ** 2
    scale = 1.0 / locref_std
    heatmap = np.zeros((b_, h, w, num_heatmaps), np.float32)
    weights = np.ones((b_, num_heatmaps, h, w), np.float32)
    loc = np.zeros((b_, h, w, 2 * num_heatmaps), np.float32)
    mask = np.zeros((b_, h, w, 2 * num_heatmaps), int)
    grid = np.mgrid[:h, :w].transpose((1, 2, 0))       # int64: the centres are truncated
    grid[:, :, 0] = grid[:, :, 0] * stride + stride / 2
    grid[:, :, 1] = grid[:, :, 1] * stride + stride / 2
    for b in range(b_):
        for c, members in enumerate(coords[b]):
            for kp in members:
                if gradient_masking and kp[-1] == 0:
                    weights[b, c] = background_weight
                elif kp[-1] == -1:
                    weights[b, c] = 0.0
                elif kp[-1] > 0:
                    p = kp[:2].copy()[::-1]             # (y, x)
                    lm = loc[b, :, :, 2 * c:2 * c + 2]
                    mm = mask[b, :, :, 2 * c:2 * c + 2]
                    dx = p[1] - grid[:, :, 1]
                    dy = p[0] - grid[:, :, 0]
                    if mode == "gaussian":
                        dist = np.linalg.norm(grid - p, axis=2) ** 2
                        heatmap[b, :, :, c] = np.maximum(heatmap[b, :, :, c], np.exp(-dist / (2 * std ** 2)))
                        lm[:, :, 0] = dx * scale
                        lm[:, :, 1] = dy * scale
                        mm[dist <= t2] = 1
                    else:
                        dist = np.sum((grid - p) ** 2, axis=2)
                        m = dist <= t2
                        heatmap[b, :, :, c][m] = 1
                        lm[m, 0] = (dx * scale)[m]
                        lm[m, 1] = (dy * scale)[m]
                        mm[m] = 1
    out = {"heatmap": {"target": heatmap.transpose(0, 3, 1, 2), "weights": weights}}
    if generate_locref:
        out["locref"] = {"target": loc.transpose(0, 3, 1, 2), "weights": mask.transpose(0, 3, 1, 2)}
    return out
