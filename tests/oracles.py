"""Test oracles: direct per-element loops written from other projects' rules (MMPose's
codecs, DeepLabCut 3.0.2's target generators), independent of posefeed's vectorised code.
Slow by design: keep the maps small. Builders (datasets, arrays) are in `helpers`."""
from __future__ import annotations

import math

import numpy as np

from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC, UDPHeatmap


def dlc_grid(size: tuple[int, int], stride: float) -> tuple[np.ndarray, np.ndarray]:
    """DeepLabCut's cell centres: ``np.mgrid`` (int) times stride plus stride / 2, assigned
    back into the int array (truncated). Returns ``(gx (W,), gy (H,))`` int64."""
    w, h = size
    grid = np.mgrid[:h, :w].transpose((1, 2, 0))
    grid[:, :, 0] = grid[:, :, 0] * stride + stride / 2
    grid[:, :, 1] = grid[:, :, 1] * stride + stride / 2
    return grid[0, :, 1].copy(), grid[:, 0, 0].copy()


def paf_loop(keypoints: np.ndarray, graph, stride: float, size: tuple[int, int],
             width: float = 20.0) -> np.ndarray:
    """``PartAffinityFieldGenerator.forward``, one cell at a time: for each sample, animal
    (in order), limb and cell, DLC's scalar expressions with NumPy 2 scalar promotion
    (float32 keypoints). ``keypoints (B, N, K, 3)`` -> ``paf (B, 2L, H, W)``. NaN
    coordinates are treated as missing (posefeed's rule; DLC never sees them)."""
    b_, n_, _, _ = keypoints.shape
    w, h = size
    gx, gy = dlc_grid(size, stride)
    out = np.zeros((b_, 2 * len(graph), h, w), np.float32)
    for b in range(b_):
        for n in range(n_):
            kp = keypoints[b, n]
            for li, (p, q) in enumerate(graph):
                ok = all(kp[i, 2] > 0 and np.isfinite(kp[i, 0]) and np.isfinite(kp[i, 1]) for i in (p, q))
                if not ok:
                    continue
                x1, y1 = kp[p, 0], kp[p, 1]  # np.float32 scalars
                x2, y2 = kp[q, 0], kp[q, 1]
                vx, vy = x2 - x1, y2 - y1
                # DLC writes vx**2 (the C library's powf for a NumPy scalar); posefeed and
                # this oracle use the correctly rounded square (see PartAffinityField)
                dist = math.sqrt(vx * vx + vy * vy)
                if not dist > 0:
                    continue
                ux, uy = vx / dist, vy / dist  # float32 (NEP 50: a Python float is weak)
                a1, a2 = ux * x1 + uy * y1, ux * x2 + uy * y2
                ortho = y1 * ux - x1 * uy
                for i in range(h):
                    for j in range(w):
                        x, y = np.int64(gx[j]), np.int64(gy[i])
                        along = ux * x + uy * y  # float64
                        across = ((y * ux - x * uy) - ortho) * 1.0 / width
                        if min(a1, a2) <= along <= max(a1, a2) and abs(across) <= 1:
                            t = 1 - abs(across)
                            out[b, 2 * li, i, j] = ux * t
                            out[b, 2 * li + 1, i, j] = uy * t
    return out


def dekr_centers(keypoints: np.ndarray) -> np.ndarray:
    """DeepLabCut's ``add_center_keypoints`` per instance: ``(B, N, K, 3)`` ->
    ``(B, N, K+1, 3)``, the centre = the mean of the keypoints with ``v > 0`` (v = 2), or
    ``(0, 0, 0)`` when there is none."""
    b_, n_, k_, _ = keypoints.shape
    out = np.zeros((b_, n_, k_ + 1, 3), np.float32)
    out[:, :, :k_] = keypoints
    for b in range(b_):
        for n in range(n_):
            pts = [(float(x), float(y)) for x, y, v in keypoints[b, n]
                   if v > 0 and np.isfinite(x) and np.isfinite(y)]
            if pts:
                out[b, n, k_] = (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts), 2)
    return out


def dekr_loop(keypoints: np.ndarray, area: np.ndarray, stride: float, size: tuple[int, int],
              pos_dist_thresh: float = 17, bg_weight: float = 0.1) -> dict[str, np.ndarray]:
    """``DEKRGenerator.forward``, one element at a time. ``keypoints (B, N, K+1, 3)`` with
    the centre last (float32), ``area (B, N)`` float32. The squares are written with
    ``d * d`` (DLC's scalar ``d ** 2`` is libm's powf, an ulp away at times); NaN
    coordinates count as missing. Everything else, including the ``offset != 0`` test for
    "already set", follows DeepLabCut's loop."""
    b_, n_, k1, _ = keypoints.shape
    k_ = k1 - 1
    w, h = size
    s = float(stride)
    scale = 1 / s
    sgm, ct_sgm = (pos_dist_thresh / 2) * scale, pos_dist_thresh * scale
    radius = pos_dist_thresh * scale
    hm = np.zeros((b_, k1, h, w), np.float32)
    hw = 2 * np.ones((b_, k1, h, w), np.float32)
    off = np.zeros((b_, 2 * k_, h, w), np.float32)
    ow = np.zeros((b_, 2 * k_, h, w), np.float32)
    amap = np.zeros((b_, h, w), np.float32)
    for b in range(b_):
        for n in range(n_):
            p = keypoints[b, n]
            ct_x, ct_y = int(p[-1, 0]), int(p[-1, 1])
            cx_s, cy_s = (ct_x - s / 2) / s, (ct_y - s / 2) / s
            for k in range(k1):
                x, y, v = p[k]
                if not (np.isfinite(x) and np.isfinite(y)):
                    v = min(v, np.float32(0))
                if v == -1:
                    hw[b, k] = 0.0
                    continue
                if not v > 0:
                    continue
                sigma = ct_sgm if k == k_ else sgm
                xs, ys = (x - s / 2) / s, (y - s / 2) / s  # float32
                if xs < 0 or ys < 0 or xs >= w or ys >= h:
                    continue
                ul = int(np.floor(xs - 3 * sigma - 1)), int(np.floor(ys - 3 * sigma - 1))
                br = int(np.ceil(xs + 3 * sigma + 2)), int(np.ceil(ys + 3 * sigma + 2))
                for j in range(max(0, ul[1]), min(br[1], h)):
                    for i in range(max(0, ul[0]), min(br[0], w)):
                        dx, dy = i - xs, j - ys
                        g = np.exp(-(dx * dx + dy * dy) / (2 * sigma ** 2))
                        hm[b, k, j, i] = max(hm[b, k, j, i], g)
                        hw[b, k, j, i] = 1.0
                if k == k_:
                    continue
                for i in range(max(int(cx_s - radius), 0), min(int(cx_s + radius), w)):
                    for j in range(max(int(cy_s - radius), 0), min(int(cy_s + radius), h)):
                        set_ = off[b, 2 * k, j, i] != 0 or off[b, 2 * k + 1, j, i] != 0
                        if set_ and amap[b, j, i] < area[b, n]:
                            continue
                        off[b, 2 * k, j, i] = i - xs
                        off[b, 2 * k + 1, j, i] = j - ys
                        ow[b, 2 * k, j, i] = ow[b, 2 * k + 1, j, i] = 1.0 / np.sqrt(area[b, n])
                        amap[b, j, i] = area[b, n]
    hw[hw == 2] = bg_weight
    return {"heatmap": hm, "heatmap_weight": hw, "offset": off, "offset_weight": ow}


def dlc_loop(c: DLCHeatmap, keypoints: np.ndarray):
    """DeepLabCut's generator, one keypoint of one individual at a time over the full map
    (visibility rules as posefeed documents them: -1 -> weight 0, 0 -> nothing)."""
    b_, n_, k_, _ = keypoints.shape
    w, h = c.heatmap_size
    s = c.stride
    grid = np.mgrid[:h, :w].transpose((1, 2, 0))
    grid[:, :, 0] = grid[:, :, 0] * s + s / 2     # int array: truncation, as in DLC
    grid[:, :, 1] = grid[:, :, 1] * s + s / 2
    hm = np.zeros((b_, h, w, k_), np.float32)
    wt = np.ones((b_, k_, h, w), np.float32)
    loc = np.zeros((b_, h, w, 2 * k_), np.float32)
    mask = np.zeros((b_, h, w, 2 * k_), int)
    t2 = c.pos_dist_thresh ** 2
    for b in range(b_):
        for k in range(k_):
            for n in range(n_):
                x, y, v = keypoints[b, n, k]
                if not (np.isfinite(x) and np.isfinite(y)):
                    v = min(v, 0)   # posefeed: NaN coordinates count as missing
                if v == -1 or (c.zero_weight_unlabeled and v == 0):
                    wt[b, k] = 0.0
                elif v > 0:
                    p = keypoints[b, n, k, :2].copy()[::-1]
                    if c.mode == "gaussian":
                        dist = np.linalg.norm(grid - p, axis=2) ** 2
                        hm[b, :, :, k] = np.maximum(hm[b, :, :, k], np.exp(-dist / (2 * c.std ** 2)))
                        loc[b, :, :, 2 * k] = (p[1] - grid[:, :, 1]) * c.locref_scale
                        loc[b, :, :, 2 * k + 1] = (p[0] - grid[:, :, 0]) * c.locref_scale
                        mask[b, :, :, 2 * k:2 * k + 2][dist <= t2] = 1
                    else:
                        dist = np.sum((grid - p) ** 2, axis=2)
                        m = dist <= t2
                        hm[b, :, :, k][m] = 1
                        loc[b, :, :, 2 * k][m] = ((p[1] - grid[:, :, 1]) * c.locref_scale)[m]
                        loc[b, :, :, 2 * k + 1][m] = ((p[0] - grid[:, :, 0]) * c.locref_scale)[m]
                        mask[b, :, :, 2 * k:2 * k + 2][m] = 1
    return {
        "heatmap": hm.transpose(0, 3, 1, 2),
        "heatmap_weight": wt,
        "locref": loc.transpose(0, 3, 1, 2),
        "locref_weight": mask.transpose(0, 3, 1, 2).astype(np.float32),
    }


def mmpose_loop(c: GaussianHeatmap, keypoints: np.ndarray):
    """MMPose's ``generate_gaussian_heatmaps`` per sample, patch slicing and all."""
    b_, n_, k_, _ = keypoints.shape
    w, h = c.heatmap_size
    sigma = c.sigma
    hm = np.zeros((b_, k_, h, w), np.float32)
    wt = np.zeros((b_, k_), np.float32)
    radius = sigma * 3
    gsize = 2 * radius + 1
    x = np.arange(0, gsize, 1, dtype=np.float32)
    yy = x[:, None]
    x0 = y0 = gsize // 2
    gauss = np.exp(-((x - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma ** 2))
    for b in range(b_):
        for n in range(n_):
            for k in range(k_):
                vis = min(max(float(keypoints[b, n, k, 2]), 0.0), 1.0)
                if not np.isfinite(keypoints[b, n, k, :2]).all():
                    vis = 0.0
                if vis < 0.5:
                    wt[b, k] = max(wt[b, k], vis)
                    continue
                p = keypoints[b, n, k, :2] / c.scale_factor
                mu = (p + 0.5).astype(np.int64)
                left, top = (mu - radius).astype(np.int64)
                right, bottom = (mu + radius + 1).astype(np.int64)
                if left >= w or top >= h or right < 0 or bottom < 0:
                    continue
                wt[b, k] = max(wt[b, k], vis)
                gx1, gx2 = max(0, -left), min(w, right) - left
                gy1, gy2 = max(0, -top), min(h, bottom) - top
                reg = hm[b, k, max(0, top):min(h, bottom), max(0, left):min(w, right)]
                np.maximum(reg, gauss[gy1:gy2, gx1:gx2], out=reg)
    return hm, wt


def _gauss(d: float, sigma: float) -> float:
    return math.exp(-d * d / (2 * sigma * sigma))


def simcc_loop(c: SimCC, keypoints: np.ndarray):
    """Per-sample, per-instance, per-keypoint loop with MMPose's rules, merged by max."""
    b_, n_, k_, _ = keypoints.shape
    wx, wy = c.label_size
    sx, sy = c.sigma
    tx = np.zeros((b_, k_, wx), np.float32)
    ty = np.zeros((b_, k_, wy), np.float32)
    wt = np.zeros((b_, k_), np.float32)
    for b in range(b_):
        for k in range(k_):
            for n in range(n_):
                x, y, v = (float(t) for t in keypoints[b, n, k])
                vis = min(max(v, 0.0), 1.0)
                if vis < 0.5:
                    wt[b, k] = max(wt[b, k], vis)
                    continue
                mx = int(np.around(np.float32(x) * np.float32(c.split_ratio)))
                my = int(np.around(np.float32(y) * np.float32(c.split_ratio)))
                if mx - 3 * sx >= wx or my - 3 * sy >= wy or mx + 3 * sx + 1 < 0 or my + 3 * sy + 1 < 0:
                    continue
                wt[b, k] = max(wt[b, k], vis)
                for i in range(wx):
                    tx[b, k, i] = max(tx[b, k, i], _gauss(i - mx, sx))
                for i in range(wy):
                    ty[b, k, i] = max(ty[b, k, i], _gauss(i - my, sy))
    return tx, ty, wt


def mmpose_udp_loop(c: UDPHeatmap, keypoints: np.ndarray):
    """MMPose's UDP ``generate_udp_gaussian_heatmaps`` per sample: the patch around
    ``int(k/s + 0.5)`` holds the Gaussian of the float centre ``k/s``."""
    b_, n_, k_, _ = keypoints.shape
    w, h = c.heatmap_size
    sigma = c.sigma
    hm = np.zeros((b_, k_, h, w), np.float32)
    wt = np.zeros((b_, k_), np.float32)
    radius = sigma * 3
    gsize = 2 * radius + 1
    x = np.arange(0, gsize, 1, dtype=np.float32)
    yy = x[:, None]
    for b in range(b_):
        for n in range(n_):
            for k in range(k_):
                vis = min(max(float(keypoints[b, n, k, 2]), 0.0), 1.0)
                if vis < 0.5:
                    wt[b, k] = max(wt[b, k], vis)
                    continue
                p = keypoints[b, n, k, :2] / c.scale_factor
                mu = (p + 0.5).astype(np.int64)
                left, top = (mu - radius).astype(np.int64)
                right, bottom = (mu + radius + 1).astype(np.int64)
                if left >= w or top >= h or right < 0 or bottom < 0:
                    continue
                wt[b, k] = max(wt[b, k], vis)
                x0 = y0 = gsize // 2
                x0 += p[0] - mu[0]
                y0 += p[1] - mu[1]
                gauss = np.exp(-((x - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma ** 2))
                gx1, gx2 = max(0, -left), min(w, right) - left
                gy1, gy2 = max(0, -top), min(h, bottom) - top
                reg = hm[b, k, max(0, top):min(h, bottom), max(0, left):min(w, right)]
                np.maximum(reg, gauss[gy1:gy2, gx1:gx2], out=reg)
    return hm, wt


def mmpose_unbiased_loop(c: GaussianHeatmap, keypoints: np.ndarray):
    """MMPose's ``generate_unbiased_gaussian_heatmaps`` per sample: the Gaussian of the float
    centre ``k/s`` over the full map; weight 0 (nothing drawn) when ``mu - 3 sigma`` is past
    the map or ``mu + 3 sigma + 1 < 0`` on either axis. Instances merge by max (posefeed)."""
    b_, n_, k_, _ = keypoints.shape
    w, h = c.heatmap_size
    sigma = c.sigma
    radius = sigma * 3
    x = np.arange(0, w, 1, dtype=np.float32)
    y = np.arange(0, h, 1, dtype=np.float32)[:, None]
    hm = np.zeros((b_, k_, h, w), np.float32)
    wt = np.zeros((b_, k_), np.float32)
    for b in range(b_):
        for n in range(n_):
            for k in range(k_):
                vis = min(max(float(keypoints[b, n, k, 2]), 0.0), 1.0)
                if not np.isfinite(keypoints[b, n, k, :2]).all():
                    vis = 0.0
                if vis < 0.5:
                    wt[b, k] = max(wt[b, k], vis)
                    continue
                mu = keypoints[b, n, k, :2] / c.scale_factor
                left, top = mu - radius
                right, bottom = mu + radius + 1
                if left >= w or top >= h or right < 0 or bottom < 0:
                    continue
                wt[b, k] = max(wt[b, k], vis)
                g = np.exp(-((x - mu[0]) ** 2 + (y - mu[1]) ** 2) / (2 * sigma ** 2))
                np.maximum(g, hm[b, k], out=hm[b, k])
    return hm, wt


def albumentations_motion_kernel(x1: int, y1: int, x2: int, y2: int, k: int,
                                 size: int = 7) -> np.ndarray:
    """albumentations 1.4.3 ``MotionBlur.get_params`` for given end points: ``cv2.line`` on a
    ``k x k`` uint8 grid (thickness 1), normalised to sum 1, zero-padded to ``size x size``
    (centred, so ``cv2.filter2D`` gives the same result)."""
    import cv2  # noqa: PLC0415 - OpenCV only for the oracles that need it

    kernel = np.zeros((k, k), dtype=np.uint8)
    cv2.line(kernel, (int(x1), int(y1)), (int(x2), int(y2)), 1, thickness=1)
    out = np.zeros((size, size), dtype=np.float32)
    o = (size - k) // 2
    out[o:o + k, o:o + k] = kernel.astype(np.float32) / kernel.sum()
    return out
