"""Per-batch augmentation parameters, sampled vectorised in NumPy from one generator.

`sample_batch` is a pure function of its inputs and the generator state: the loader seeds the
generator with ``(seed, epoch, batch_index, shard)``, so every batch is reproducible and a
resumed loader continues exactly. Keypoints are transformed here with the same matrix the
DALI graph warps the image with, so they are exact (no resampling) before targets see them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posefeed.constants import COCO_UPPER_BODY as COCO_UPPER
from posefeed.pipelines.augment import MAX_KERNEL, AugmentConfig
from posefeed.pipelines.geometry import (box_center_scale, crop_matrices, fix_aspect,
                                         flip_matrices, inside, transform_points,
                                         truncated_normal, zoom_rotate_matrices)

#: `BatchParams.crop_method` codes (DeepLabCut's ``KeypointAwareCrop`` centre methods)
CROP_UNIFORM, CROP_KEYPOINTS, CROP_DENSITY = 0, 1, 2
#: DeepLabCut caps ``max_shift`` at 0.4 of the crop size (``KeypointAwareCrop.__init__``)
DLC_MAX_SHIFT = 0.4


@dataclass
class BatchParams:
    """Sampled parameters and transformed keypoints for one batch of B samples.

    Geometry: ``forward``/``inverse`` ``(B, 3, 3)`` (image pixels <-> input pixels),
    ``keypoints (B, N, K, 3)`` float32 in input pixels, ``flip``, ``half_body`` (B,) bool,
    ``shift (B, 2)`` (fraction of the box size), ``scale (B,)``, ``rotation (B,)`` degrees.
    Photometric: ``hue_gain, saturation_gain, value_gain (B,)`` int (OpenCV units, YOLOX),
    ``blur``/``median`` (B,) bool with ``blur_size``/``median_size`` (B,) odd ints,
    ``dropout`` (B,) bool with ``dropout_box (B, 4)`` int ``(y, x, h, w)`` input pixels;
    ``motion`` (B,) bool with ``motion_kernel (B, 7, 7)`` float32 (the ``k x k`` line kernel in
    the middle, summing to 1); ``noise`` (B,) bool with ``noise_std (B,)`` float32 (uint8
    units) and ``noise_seed (B,)`` int64 (seeds the per-pixel noise of the OpenCV stage).
    DeepLabCut crops (``crop_sampling`` set): ``crop_method (B,)`` int (`CROP_UNIFORM`,
    `CROP_KEYPOINTS`, `CROP_DENSITY`) and ``crop_start (B, 2)`` int64 (x1, y1) of the window in
    the padded, augmented frame; -1 elsewhere.
    """

    forward: np.ndarray
    inverse: np.ndarray
    keypoints: np.ndarray
    flip: np.ndarray
    half_body: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    hue_gain: np.ndarray
    saturation_gain: np.ndarray
    value_gain: np.ndarray
    blur: np.ndarray
    blur_size: np.ndarray
    median: np.ndarray
    median_size: np.ndarray
    dropout: np.ndarray
    dropout_box: np.ndarray
    motion: np.ndarray
    motion_kernel: np.ndarray
    noise: np.ndarray
    noise_std: np.ndarray
    noise_seed: np.ndarray
    crop_method: np.ndarray
    crop_start: np.ndarray


def flip_permutation(num_keypoints: int, flip_pairs) -> np.ndarray:
    """``perm (K,)``: after a flip, output channel ``k`` takes keypoint ``perm[k]``."""
    perm = np.arange(num_keypoints)
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def half_body_sets(bodyparts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Upper / lower body masks ``(K,)`` for half-body augmentation.

    COCO-17 (recognised by its keypoint names) uses MMPose's sets (indices 0-10 upper,
    11-16 lower). Other tables have no anatomical sets, so the keypoint order is split in
    halves (first ``ceil(K / 2)`` upper). Half-body needs ``half_body_min_keypoints`` (9)
    labelled keypoints, so tables with fewer keypoints never use it.
    """
    k = len(bodyparts)
    upper = np.zeros(k, dtype=bool)
    names = [b.lower() for b in bodyparts]
    if k == 17 and names[0] == "nose" and "left_hip" in names[11:13]:
        upper[list(COCO_UPPER)] = True
    else:
        upper[: (k + 1) // 2] = True
    return upper, ~upper


def box_kernels(sizes: np.ndarray) -> np.ndarray:
    """``(B, 7, 7)`` float32 box-blur kernels of odd ``sizes (B,)``, zero-padded to 7x7."""
    r = np.abs(np.arange(MAX_KERNEL) - MAX_KERNEL // 2)
    half = (np.asarray(sizes) // 2)[:, None]
    line = (r[None, :] <= half).astype(np.float32)                      # (B, 7)
    k = line[:, :, None] * line[:, None, :]
    return (k / k.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


def line_kernels(x1, y1, x2, y2, sizes) -> np.ndarray:
    """``(B, 7, 7)`` float32 motion-blur kernels: the line from ``(x1, y1)`` to ``(x2, y2)``
    (ints ``(B,)``, inside a ``sizes x sizes`` grid) rasterised as OpenCV's ``cv2.line``
    (8-connected Bresenham, drawn left to right), normalised to sum 1, the ``k x k`` grid in
    the middle of the 7x7 (zero padding leaves ``filter2D`` unchanged). One NumPy step per
    pixel of the longest line, none per sample."""
    x1, y1, x2, y2, k = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (x1, y1, x2, y2, sizes))
    b = len(k)
    swap = x2 < x1                                   # cv2 draws from the left end
    px, py = np.where(swap, x2, x1), np.where(swap, y2, y1)
    dx, dy = np.abs(x2 - x1), np.where(swap, y1 - y2, y2 - y1)
    sy = np.where(dy < 0, -1, 1)
    dy = np.abs(dy)
    vert = dy > dx
    major, minor = np.maximum(dx, dy), np.minimum(dx, dy)
    err = major - 2 * minor
    off = (MAX_KERNEL - k) // 2
    out = np.zeros((b, MAX_KERNEL, MAX_KERNEL), dtype=np.float32)
    rows = np.arange(b)
    for t in range(MAX_KERNEL):
        on = t <= major
        out[rows[on], (py + off)[on], (px + off)[on]] = 1.0
        step = err < 0                               # a step along the minor axis too
        err = err - 2 * minor + np.where(step, 2 * major, 0)
        px = px + np.where(vert, step, 1)
        py = py + np.where(vert, sy, np.where(step, sy, 0))
    return out / out.sum(axis=(1, 2), keepdims=True)


def motion_lines(u: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """albumentations ``MotionBlur.get_params`` end points from uniforms ``u (B, 4)`` and
    kernel sizes ``(B,)``: ``x1, x2`` uniform in ``0..k-1``; ``y1, y2`` too, except when
    ``x1 == x2``: then two distinct values (``random.sample(range(k), 2)``)."""
    k = np.asarray(sizes, dtype=np.int64)
    x1, x2, y1 = (np.minimum((u[:, i] * k).astype(np.int64), k - 1) for i in range(3))
    y2_any = np.minimum((u[:, 3] * k).astype(np.int64), k - 1)
    y2_other = (y1 + 1 + np.minimum((u[:, 3] * (k - 1)).astype(np.int64), k - 2)) % k
    return x1, y1, x2, np.where(x1 == x2, y2_other, y2_any)


def sample_batch(rng: np.random.Generator, cfg: AugmentConfig, mode: str,
                 keypoints: np.ndarray, bboxes: np.ndarray, image_sizes: np.ndarray,
                 input_size: tuple[int, int], flip_perm: np.ndarray,
                 upper: np.ndarray, lower: np.ndarray) -> BatchParams:
    """Sample one batch's augmentation and move its keypoints.

    Args:
        keypoints: ``(B, N, K, 3)`` original keypoints (image pixels; padding rows v = 0).
        bboxes: ``(B, 4)`` xywh instance boxes (topdown) - ignored in frame mode.
        image_sizes: ``(B, 2)`` (w, h) of each sample's image.
        input_size: network input (w, h).
        flip_perm, upper, lower: from `flip_permutation` and `half_body_sets`.
    """
    b, n, k, _ = keypoints.shape
    kp = np.nan_to_num(np.asarray(keypoints, dtype=np.float64))
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(b, 2)
    w_in, h_in = input_size
    # -- draws, in a fixed order (independent of the config values) ----------------------
    u_flip = rng.random(b)
    u_half, u_upper = rng.random(b), rng.random(b)
    z_shift, u_shift = truncated_normal(rng, (b, 2)), rng.random(b)
    z_scale, u_scale = truncated_normal(rng, b), rng.random(b)
    z_rot, u_rot = truncated_normal(rng, b), rng.random(b)
    u_crop, u_crop_shift = rng.random((b, n * k)), rng.uniform(-1.0, 1.0, (b, 2))
    u_hsv, u_hsv_on = rng.uniform(-1.0, 1.0, (b, 3)), rng.integers(0, 2, (b, 3))
    u_blur, i_blur = rng.random(b), rng.integers(0, 1 << 30, b)
    u_med, i_med = rng.random(b), rng.integers(0, 1 << 30, b)
    u_drop, u_hole = rng.random(b), rng.random((b, 4))
    # (added later: after the draws above, so configs without them sample what they did)
    u_affine, u_zoom, u_uni = rng.random(b), rng.random(b), rng.uniform(-1.0, 1.0, (b, 3))
    u_method, u_start = rng.random(b), rng.random((b, 2))
    u_pick, u_dlc_shift = rng.random(b), rng.random((b, 2))
    u_motion, i_motion, u_line = rng.random(b), rng.integers(0, 1 << 30, b), rng.random((b, 4))
    u_noise, u_var, noise_seed = rng.random(b), rng.random(b), rng.integers(0, 1 << 31, b)

    # -- the affine draws ----------------------------------------------------------------
    lo_s, hi_s = cfg.scale_range
    if cfg.affine_distribution == "uniform":       # albumentations Affine
        z_shift, z_rot = u_uni[:, :2], u_uni[:, 2]
        drawn_scale = 1.0 / (1.0 / hi_s + u_zoom * (1.0 / lo_s - 1.0 / hi_s))
    else:
        drawn_scale = z_scale * (hi_s - lo_s) / 2 + (hi_s + lo_s) / 2
    if cfg.affine_prob is not None:               # one draw for the whole affine
        on_shift = on_scale = on_rot = u_affine < cfg.affine_prob
    else:
        on_shift = u_shift < cfg.shift_prob
        on_scale, on_rot = u_scale < cfg.scale_prob, u_rot < cfg.rotate_prob
    shift = np.where(on_shift[:, None], z_shift * cfg.shift_factor, 0.0)
    scale = np.where(on_scale, drawn_scale, 1.0)
    rotation = np.where(on_rot, z_rot * cfg.rotate_factor, 0.0)

    # -- flip: mirror the source frame, swap left/right channels -------------------------
    flip = u_flip < cfg.flip_prob
    fm = flip_matrices(flip, sizes[:, 0])
    kp_f = kp.copy()
    kp_f[..., :2] = transform_points(fm, kp[..., :2])
    kp_f[flip] = kp_f[flip][:, :, flip_perm]
    labelled = kp_f[..., 2] > 0                                              # (B, N, K)

    # -- the box -------------------------------------------------------------------------
    crop_method = np.full(b, -1, dtype=np.int64)
    crop_start = np.full((b, 2), -1, dtype=np.int64)
    dlc_crop = mode != "topdown" and cfg.crop_size is not None and cfg.crop_sampling is not None
    if dlc_crop:
        half_body = np.zeros(b, dtype=bool)
        crop_m, crop_method, crop_start, window_m = _dlc_crop(
            cfg, kp_f, labelled, sizes, input_size, shift, scale, rotation, u_method, u_start,
            u_pick, u_dlc_shift)
    elif mode == "topdown":
        center, size = box_center_scale(bboxes, padding=cfg.box_padding)
        center[:, 0] = np.where(flip, sizes[:, 0] - 1.0 - center[:, 0], center[:, 0])
        half_body = _half_body(cfg, kp_f[:, 0], labelled[:, 0], u_half, u_upper, upper, lower)
        hb_center, hb_size, hb = half_body
        center = np.where(hb[:, None], hb_center, center)
        size = np.where(hb[:, None], hb_size, size)
        half_body = hb
    else:
        half_body = np.zeros(b, dtype=bool)
        center = (sizes - 1.0) / 2.0
        size = sizes.copy()
        if cfg.crop_size is not None:
            crop = np.asarray(cfg.crop_size, dtype=np.float64)
            flat = labelled.reshape(b, n * k)
            pick = np.argmax(np.where(flat, u_crop, -1.0), axis=1)
            has = flat.any(axis=1)
            anchor = kp_f[..., :2].reshape(b, n * k, 2)[np.arange(b), pick]
            c = anchor + u_crop_shift * cfg.crop_shift * crop
            lo, hi = crop / 2.0 - 0.5, sizes - 0.5 - crop / 2.0
            c = np.where(lo <= hi, np.clip(c, lo, np.maximum(hi, lo)), center)
            center = np.where(has[:, None], c, center)
            size = np.broadcast_to(crop, (b, 2)).copy()

    if not dlc_crop:
        center = center + shift * size
        size = size * scale[:, None]
        stretch = mode == "topdown" and not cfg.box_keep_aspect
        if mode == "topdown" and not stretch:
            size = fix_aspect(size, w_in / h_in)
        crop_m = crop_matrices(center, size, rotation, input_size, stretch=stretch)
    forward = crop_m @ fm
    inverse = np.linalg.inv(forward)

    out = kp_f.copy()
    out[..., :2] = transform_points(crop_m, kp_f[..., :2])
    if dlc_crop:   # DeepLabCut's rule: 0 <= x < crop w, 0 <= y < crop h in the window
        win = transform_points(window_m, kp_f[..., :2])
        cw, ch = cfg.crop_size
        keep = (win[..., 0] >= 0) & (win[..., 0] < cw) & (win[..., 1] >= 0) & (win[..., 1] < ch)
    else:
        keep = inside(out[..., :2], input_size)
    out[..., 2] = np.where(keep, out[..., 2], 0.0)

    # -- photometric ---------------------------------------------------------------------
    deltas = np.array([cfg.hue_delta, cfg.saturation_delta, cfg.value_delta])
    gains = np.trunc(u_hsv * deltas * u_hsv_on).astype(np.int64)
    sizes_b = np.asarray(cfg.blur_sizes or (3,))
    sizes_m = np.asarray(cfg.median_blur_sizes or (3,))
    # albumentations CoarseDropout with float limits: int(size * uniform(lo, hi))
    lo_d, hi_d = cfg.dropout_size
    hole_h = (h_in * (lo_d + u_hole[:, 0] * (hi_d - lo_d))).astype(np.int64)
    hole_w = (w_in * (lo_d + u_hole[:, 1] * (hi_d - lo_d))).astype(np.int64)
    hole_y = _randint(u_hole[:, 2], 0, h_in - hole_h)
    hole_x = _randint(u_hole[:, 3], 0, w_in - hole_w)
    sizes_mb = np.asarray(cfg.motion_blur_sizes, dtype=np.int64)
    k_motion = sizes_mb[i_motion % len(sizes_mb)]
    lo_v, hi_v = cfg.noise_var
    return BatchParams(
        forward=forward, inverse=inverse, keypoints=out.astype(np.float32), flip=flip,
        half_body=half_body, shift=shift, scale=scale, rotation=rotation,
        hue_gain=gains[:, 0], saturation_gain=gains[:, 1], value_gain=gains[:, 2],
        blur=u_blur < cfg.blur_prob, blur_size=sizes_b[i_blur % len(sizes_b)],
        median=u_med < cfg.median_blur_prob, median_size=sizes_m[i_med % len(sizes_m)],
        dropout=u_drop < cfg.dropout_prob,
        dropout_box=np.stack([hole_y, hole_x, hole_h, hole_w], axis=1),
        motion=u_motion < cfg.motion_blur_prob,
        motion_kernel=(line_kernels(*motion_lines(u_line, k_motion), k_motion)
                       if cfg.motion_blur_prob > 0 else
                       np.zeros((b, MAX_KERNEL, MAX_KERNEL), dtype=np.float32)),
        noise=u_noise < cfg.noise_prob,
        noise_std=np.sqrt(lo_v + u_var * (hi_v - lo_v)).astype(np.float32),
        noise_seed=noise_seed.astype(np.int64), crop_method=crop_method, crop_start=crop_start)


def _dlc_crop(cfg: AugmentConfig, kp: np.ndarray, labelled: np.ndarray, sizes: np.ndarray,
              input_size: tuple[int, int], shift: np.ndarray, scale: np.ndarray,
              rotation: np.ndarray, u_method: np.ndarray, u_start: np.ndarray,
              u_pick: np.ndarray, u_shift: np.ndarray):
    """DeepLabCut 3.0.2's frame geometry after the flip (``kp (B, N, K, 3)`` flipped, frames
    ``sizes (B, 2)``): albumentations ``Affine`` about the frame centre (zoom ``1 / scale``,
    ``rotation``, translation ``shift * frame size``), ``PadIfNeeded`` to the crop size, then
    ``KeypointAwareCrop`` (see `AugmentConfig.crop_sampling`); an ``input_size`` other than
    the crop size resizes the window into it as `crop_matrices` does (centred, aspect kept).
    Returns the ``(B, 3, 3)`` flipped-frame -> input matrices, the method used per sample, the
    window start (x1, y1) and the flipped-frame -> window matrices (before any resize)."""
    b, n, k, _ = kp.shape
    crop = np.asarray(cfg.crop_size, dtype=np.float64)
    affine = zoom_rotate_matrices((sizes - 1.0) / 2.0, 1.0 / scale, rotation)
    affine[:, :2, 2] += shift * sizes
    pad = np.floor(np.maximum(crop - sizes, 0.0) / 2.0)      # PadIfNeeded, centred
    padded = np.maximum(sizes, crop)
    affine[:, :2, 2] += pad
    xy = transform_points(affine, kp[..., :2]).reshape(b, n * k, 2)
    # candidates: every keypoint of the instances with a labelled one (DeepLabCut keeps
    # those instances and passes all their keypoints, unlabelled ones at (0, 0))
    cand = np.broadcast_to(labelled.any(axis=2)[:, :, None], (b, n, k)).reshape(b, n * k)
    method = {"uniform": CROP_UNIFORM, "keypoints": CROP_KEYPOINTS, "density": CROP_DENSITY,
              "hybrid": CROP_DENSITY}[cfg.crop_sampling]
    method = np.full(b, method, dtype=np.int64)
    if cfg.crop_sampling == "hybrid":                         # np.random.choice of the two
        method = np.where(u_method < 0.5, CROP_UNIFORM, CROP_DENSITY)
    method = np.where(cand.any(axis=1), method, CROP_UNIFORM)
    weight = cand.astype(np.float64)
    if (method == CROP_DENSITY).any():
        # 1 + neighbours within 0.1 * min(padded h, w) (squared distances, as scipy's pdist)
        r2 = (0.1 * padded.min(axis=1)) ** 2
        d2 = ((xy[:, :, None, :] - xy[:, None, :, :]) ** 2).sum(axis=3)
        near = ((d2 <= r2[:, None, None]) & cand[:, None, :]).sum(axis=2)   # self included
        weight = np.where((method == CROP_DENSITY)[:, None], np.where(cand, near, 0), weight)
    cdf = np.cumsum(weight, axis=1)
    total = np.maximum(cdf[:, -1:], 1e-300)
    pick = np.argmax(cdf > u_pick[:, None] * total, axis=1)     # np.random.choice(p=...)
    anchor = xy[np.arange(b), pick]
    offset = min(max(float(cfg.crop_shift), 0.0), DLC_MAX_SHIFT) * u_shift * crop
    start = np.clip((anchor + offset) / padded, 0.0, np.nextafter(1.0, 0.0))
    start = np.where((method == CROP_UNIFORM)[:, None], u_start, start)
    x1y1 = np.floor((padded - crop + 1.0) * start)             # get_random_crop_coords
    affine[:, :2, 2] -= x1y1
    window = affine
    if tuple(input_size) != tuple(cfg.crop_size):
        affine = crop_matrices((crop[None] - 1.0) / 2.0, crop[None], np.zeros(1),
                               input_size) @ affine
    return affine, method, x1y1.astype(np.int64), window


def _randint(u: np.ndarray, lo, hi) -> np.ndarray:
    """Integers uniform in ``[lo, hi]`` (inclusive, per element) from uniforms ``u`` in [0, 1)."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.maximum(np.asarray(hi, dtype=np.int64), lo)
    return lo + np.minimum((u * (hi - lo + 1)).astype(np.int64), hi - lo)


def _half_body(cfg: AugmentConfig, kp: np.ndarray, labelled: np.ndarray, u_half: np.ndarray,
               u_upper: np.ndarray, upper: np.ndarray, lower: np.ndarray):
    """MMPose ``RandomHalfBody`` for ``kp (B, K, 3)``: returns centre (B, 2), size (B, 2) and
    the applied mask (B,)."""
    # the ufuncs' reduce directly: what ndarray.sum/min/max/any call, without their Python
    # wrappers (the feed runs this every batch)
    count, lowest, highest = np.add.reduce, np.minimum.reduce, np.maximum.reduce
    n_up = count(labelled & upper, axis=1)
    n_lo = count(labelled & lower, axis=1)
    enough = (count(labelled, axis=1) >= cfg.half_body_min_keypoints) & \
        (u_half < cfg.half_body_prob)
    up_ok, lo_ok = n_up >= cfg.half_body_min_upper, n_lo >= cfg.half_body_min_lower
    use_upper = np.where(up_ok & lo_ok, u_upper < cfg.half_body_upper_prob, up_ok)
    applied = enough & (up_ok | lo_ok)
    sel = labelled & np.where(use_upper[:, None], upper[None, :], lower[None, :])
    n_sel = count(sel, axis=1)
    cnt = np.maximum(n_sel, 1)[:, None]
    xy = kp[..., :2]
    sel3 = sel[..., None]
    center = count(xy * sel3, axis=1) / cnt
    big = np.finfo(np.float64).max
    mn = lowest(np.where(sel3, xy, big), axis=1)
    mx = highest(np.where(sel3, xy, -big), axis=1)
    has = (n_sel > 0)[:, None]               # (no overflow from big - (-big) where none is)
    size = (np.where(has, mx, 1.0) - np.where(has, mn, 0.0)) * cfg.half_body_padding
    applied &= n_sel >= 2
    return center, np.maximum(size, 1.0), applied
