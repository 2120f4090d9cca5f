"""The reference CPU loader: top-down pose data loading as MMPose / DeepLabCut users run it today.

A ``torch.utils.data.DataLoader`` with worker processes over a `ReferenceTopdownDataset` whose
``__getitem__`` does, for ONE instance (MMPose decodes the whole image again for every person):

1. ``cv2.imread`` (full decode, BGR),
2. COCO box -> centre / scale with padding 1.25, aspect fixed to w/h = input w/h (0.75),
3. RTMPose stage-1 geometry: horizontal flip (p 0.5, left/right swap), half-body (p 0.3),
   shift / scale / rotation from a truncated normal (``RandomBBoxTransform``),
4. one ``cv2.warpAffine`` (bilinear, constant 0 border) to the input size,
5. photometric: YOLOX HSV jitter (hue 5, sat 30, val 30), blur p 0.1, median blur p 0.1,
   coarse dropout (1 hole of 0.2-0.4 of each side, filled with 0, p 1.0),
6. targets in NumPy per sample: SimCC (sigma 4.9 / 5.66, split ratio 2) and optionally the
   MSRA Gaussian heatmap (stride 4, sigma 2),
7. BGR -> RGB, ImageNet mean / std, float32 CHW; ``default_collate`` into torch tensors.

It is written to be as fast as a careful user would make it, so a ratio against it is not
flattering: the flip is folded into the affine matrix instead of flipping the full image,
the HSV jitter is one 3-channel ``cv2.LUT`` instead of int16 arithmetic, the truncated normal
is a NumPy rejection sampler instead of ``scipy.stats.truncnorm``, targets are vectorised over
keypoints, OpenCV runs one thread per worker, workers are persistent.

Geometry follows posefeed's convention (pixel centres at integer coordinates; the input image
spans ``[-0.5, w - 0.5]``): the box centre maps to the input centre ``((w - 1) / 2, (h - 1) / 2)``
and a box of width ``s`` fills the input width ``w`` (scale factor ``w / s``).
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from posefeed.constants import COCO_LOWER_BODY, COCO_UPPER_BODY, IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # posefeed.pipelines imports DALI: see recipe_fields
    from posefeed.pipelines.augment import AugmentConfig

IMAGENET_MEAN_RGB = np.asarray(IMAGENET_MEAN, dtype=np.float32)
IMAGENET_STD_RGB = np.asarray(IMAGENET_STD, dtype=np.float32)


def recipe_fields(cfg: AugmentConfig) -> SimpleNamespace:
    """The numbers of an `AugmentConfig` as a plain namespace (same field names). Workers
    receive this instead of the dataclass, because unpickling an ``AugmentConfig`` imports
    ``posefeed.pipelines``, hence DALI, into every worker the benchmark measures."""
    return SimpleNamespace(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})


# --------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------
def bbox_center_scale(bbox_xywh: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """COCO box ``(x, y, w, h)`` -> centre ``(2,)`` and padded size ``(2,)`` (MMPose
    ``GetBBoxCenterScale``)."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    scale = np.array([w, h], dtype=np.float64) * padding
    return center, scale


def fix_aspect(scale: np.ndarray, aspect: float) -> np.ndarray:
    """Grow the short side so that ``w / h == aspect`` (MMPose ``_fix_aspect_ratio``)."""
    w, h = float(scale[0]), float(scale[1])
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return np.array([w, h], dtype=np.float64)


def affine_matrix(center: np.ndarray, scale: np.ndarray, rotation_deg: float,
                  input_size: tuple[int, int]) -> np.ndarray:
    """The ``2x3`` matrix mapping image pixels to input pixels: the box centre goes to the input
    centre ``((w-1)/2, (h-1)/2)``, the box width ``scale[0]`` to the input width ``w``, and the
    content is rotated by ``rotation_deg`` (MMPose's sign: positive turns the box by +angle in
    the image, i.e. the image by -angle in the input)."""
    w, h = input_size
    s = w / float(scale[0])
    a = math.radians(rotation_deg)
    cos, sin = math.cos(a) * s, math.sin(a) * s
    # input = S * R(-a) * (p - c) + d
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=np.float64)
    d = np.array([(w - 1) * 0.5, (h - 1) * 0.5])
    m[:, 2] = d - m[:, :2] @ np.asarray(center, dtype=np.float64)
    return m


def flip_matrix(width: int) -> np.ndarray:
    """``x -> width - 1 - x`` (pixel-centre convention), as a ``3x3`` matrix."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def truncnorm(rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    """Standard normal truncated to ``[-1, 1]`` (rejection sampling; ~68% acceptance)."""
    n = int(np.prod(size)) if isinstance(size, tuple) else int(size)
    out = np.empty(0)
    while out.size < n:
        z = rng.standard_normal(2 * n + 4)
        out = np.concatenate([out, z[np.abs(z) <= 1.0]])
    return out[:n].reshape(size)


def half_body_box(keypoints: np.ndarray, upper: Sequence[int], lower: Sequence[int],
                  aug: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """MMPose ``RandomHalfBody``: with probability ``half_body_prob`` (and enough visible
    keypoints) a new centre / scale around the upper or the lower body; else None. ``aug``
    holds `AugmentConfig`'s fields."""
    vis = keypoints[:, 2] > 0
    if vis.sum() < aug.half_body_min_keypoints or rng.random() > aug.half_body_prob:
        return None
    up = [i for i in upper if vis[i]]
    lo = [i for i in lower if vis[i]]
    prefer_upper = rng.random() < aug.half_body_upper_prob
    if len(up) < aug.half_body_min_upper and len(lo) < aug.half_body_min_lower:
        return None
    if len(lo) < aug.half_body_min_lower:
        ids = up
    elif len(up) < aug.half_body_min_upper:
        ids = lo
    else:
        ids = up if prefer_upper else lo
    if len(ids) < 2:
        return None
    pts = keypoints[ids, :2].astype(np.float64)
    center = pts.mean(axis=0)
    wh = pts.max(axis=0) - pts.min(axis=0)
    return center, np.maximum(wh, 1.0) * aug.half_body_padding


# --------------------------------------------------------------------------------------
# photometric
# --------------------------------------------------------------------------------------
def hsv_jitter(img_bgr: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """YOLOX HSV jitter with integer ``gains (3,)`` = (hue, sat, val) deltas, via one LUT."""
    if not np.any(gains):
        return img_bgr
    x = np.arange(256, dtype=np.int16)
    lut = np.empty((256, 1, 3), dtype=np.uint8)
    lut[:, 0, 0] = (x + gains[0]) % 180
    lut[:, 0, 1] = np.clip(x + gains[1], 0, 255)
    lut[:, 0, 2] = np.clip(x + gains[2], 0, 255)
    hsv = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2HSV)
    hsv = cv2.LUT(hsv, lut)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def coarse_dropout(img: np.ndarray, rng: np.random.Generator,
                   size: tuple[float, float] = (0.2, 0.4)) -> np.ndarray:
    """One hole of ``size`` of each side, inside the image, filled with 0 (albumentations)."""
    h, w = img.shape[:2]
    hh = int(round(rng.uniform(*size) * h))
    ww = int(round(rng.uniform(*size) * w))
    y0 = int(rng.integers(0, h - hh + 1))
    x0 = int(rng.integers(0, w - ww + 1))
    img[y0:y0 + hh, x0:x0 + ww] = 0
    return img


def normalize_chw(img_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 HWC -> RGB float32 CHW, ImageNet mean / std in 0..255 units."""
    h, w = img_bgr.shape[:2]
    out = np.empty((3, h, w), dtype=np.float32)
    for c in range(3):
        np.subtract(img_bgr[:, :, 2 - c], IMAGENET_MEAN_RGB[c], out=out[c], dtype=np.float32)
        out[c] *= 1.0 / IMAGENET_STD_RGB[c]
    return out


# --------------------------------------------------------------------------------------
# targets (MMPose SimCCLabel and MSRAHeatmap, one instance, NumPy)
# --------------------------------------------------------------------------------------
def simcc_targets(keypoints: np.ndarray, input_size: tuple[int, int] = (192, 256),
                  sigma: tuple[float, float] = (4.9, 5.66), split_ratio: float = 2.0,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``keypoints (K, 3)`` in input pixels -> ``x_labels (K, Wx)``, ``y_labels (K, Wy)``,
    ``keypoint_weight (K,)``: unnormalised Gaussians centred on ``round_half_even(kpt * r)``;
    weight = (v > 0), zeroed when the 3-sigma window misses the axis."""
    w, h = input_size
    wx, wy = int(round(w * split_ratio)), int(round(h * split_ratio))
    mu = np.around(keypoints[:, :2].astype(np.float64) * split_ratio)
    weight = (keypoints[:, 2] > 0).astype(np.float32)
    rx, ry = 3 * sigma[0], 3 * sigma[1]
    off = ((mu[:, 0] - rx >= wx) | (mu[:, 1] - ry >= wy)
           | (mu[:, 0] + rx + 1 < 0) | (mu[:, 1] + ry + 1 < 0))
    weight[off] = 0.0
    xs = np.arange(wx, dtype=np.float32)
    ys = np.arange(wy, dtype=np.float32)
    mx = mu[:, 0:1].astype(np.float32)
    my = mu[:, 1:2].astype(np.float32)
    x_labels = np.exp(-((xs[None] - mx) ** 2) * np.float32(1.0 / (2 * sigma[0] ** 2)))
    y_labels = np.exp(-((ys[None] - my) ** 2) * np.float32(1.0 / (2 * sigma[1] ** 2)))
    keep = (weight > 0)[:, None]
    x_labels = np.where(keep, x_labels, np.float32(0)).astype(np.float32)
    y_labels = np.where(keep, y_labels, np.float32(0)).astype(np.float32)
    return x_labels, y_labels, weight


def msra_heatmap(keypoints: np.ndarray, heatmap_size: tuple[int, int] = (48, 64),
                 sigma: float = 2.0, stride: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """``keypoints (K, 3)`` in input pixels -> ``heatmap (K, h, w)`` and ``keypoint_weight (K,)``
    (MMPose ``MSRAHeatmap``, unbiased=False: a ``6 sigma + 1`` patch around
    ``int(kpt / stride + 0.5)``, weight 0 when the patch is fully off the map)."""
    w, h = heatmap_size
    k = keypoints.shape[0]
    heatmap = np.zeros((k, h, w), dtype=np.float32)
    weight = (keypoints[:, 2] > 0).astype(np.float32)
    radius = int(3 * sigma)
    size = 2 * radius + 1
    g1 = np.arange(size, dtype=np.float32) - radius
    gauss = np.exp(-(g1[None] ** 2 + g1[:, None] ** 2) / np.float32(2 * sigma ** 2))
    mu = (keypoints[:, :2] / stride + 0.5).astype(np.int64)
    for j in range(k):
        if weight[j] <= 0:
            continue
        left, top = int(mu[j, 0]) - radius, int(mu[j, 1]) - radius
        right, bottom = left + size, top + size
        if left >= w or top >= h or right < 0 or bottom < 0:
            weight[j] = 0.0
            continue
        hx0, hx1 = max(0, left), min(w, right)
        hy0, hy1 = max(0, top), min(h, bottom)
        heatmap[j, hy0:hy1, hx0:hx1] = gauss[hy0 - top:hy1 - top, hx0 - left:hx1 - left]
    return heatmap, weight


# --------------------------------------------------------------------------------------
# the dataset and the loader
# --------------------------------------------------------------------------------------
def half_body_split(bodyparts: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Upper / lower keypoint ids for half-body: COCO-17's (0-10 / 11-16) when the names are
    COCO's, else the first / second half of the keypoint order (posefeed's rule)."""
    names = [str(b).lower() for b in bodyparts]
    k = len(names)
    if k == 17 and names[0] == "nose" and "left_hip" in names[11:13]:
        return COCO_UPPER_BODY, COCO_LOWER_BODY
    half = (k + 1) // 2
    return tuple(range(half)), tuple(range(half, k))


def _flip_permutation(k: int, flip_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    perm = np.arange(k)
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


class ReferenceTopdownDataset:
    """One item per table row (instance): decode, augment, warp, targets, normalise.

    Picklable (plain arrays and strings) so spawn / forkserver workers receive it; each worker
    seeds its own NumPy generator in `worker_init`.
    """

    def __init__(self, paths: Sequence[str], bboxes: np.ndarray, keypoints: np.ndarray,
                 flip_pairs: Sequence[tuple[int, int]] = (), input_size: tuple[int, int] = (192, 256),
                 codecs: Sequence[str] = ("simcc",), augment: AugmentConfig | None = None,
                 upper_body: Sequence[int] | None = None, lower_body: Sequence[int] | None = None,
                 padding: float = 1.25, seed: int = 0) -> None:
        self.paths = [str(p) for p in paths]
        self.bboxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        self.keypoints = np.asarray(keypoints, dtype=np.float32)
        if self.keypoints.ndim != 3 or self.keypoints.shape[0] != len(self.paths):
            raise ValueError(f"keypoints {self.keypoints.shape} do not match {len(self.paths)} paths")
        k = self.keypoints.shape[1]
        self.flip_perm = _flip_permutation(k, flip_pairs)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.codecs = tuple(codecs)
        unknown = set(self.codecs) - {"simcc", "heatmap"}
        if unknown:
            raise ValueError(f"unknown reference codecs {sorted(unknown)} (simcc, heatmap)")
        if augment is None:
            # the default recipe; a lazy import keeps DALI out of the spawned workers
            from posefeed.pipelines.augment import AugmentConfig  # noqa: PLC0415 - see above

            augment = AugmentConfig.rtmpose_stage1()
        self.augment = recipe_fields(augment)
        if upper_body is None and lower_body is None and k == 17:
            upper_body, lower_body = COCO_UPPER_BODY, COCO_LOWER_BODY
        self.upper = tuple(upper_body or ())
        self.lower = tuple(lower_body or ())
        self.padding = float(padding)
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None

    @classmethod
    def from_table(cls, table: Any, **kw: Any) -> "ReferenceTopdownDataset":
        """From a `posefeed.datasets.PoseTable` (one item per row)."""
        paths = [str(table.image_path(im)) for im in table.frame[("image", "")].tolist()]
        if "upper_body" not in kw and "lower_body" not in kw:
            kw["upper_body"], kw["lower_body"] = half_body_split(table.bodyparts)
        return cls(paths, table.bboxes, table.keypoints, flip_pairs=table.flip_pairs, **kw)

    def __len__(self) -> int:
        return len(self.paths)

    def seed_worker(self, worker_id: int) -> None:
        self._rng = np.random.default_rng([self.seed, worker_id, os.getpid()])

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        return self._rng

    # the geometry, separated so it can be tested without images ---------------------------
    def sample_geometry(self, index: int, image_size: tuple[int, int],
                        rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(matrix 2x3 image->input, keypoints (K, 3) in input pixels)`` for one row."""
        rng = self.rng if rng is None else rng
        aug = self.augment
        width = int(image_size[0])
        kp = self.keypoints[index].astype(np.float64)
        center, scale = bbox_center_scale(self.bboxes[index], self.padding)
        pre = np.eye(3)
        if aug.flip_prob > 0 and rng.random() < aug.flip_prob:
            pre = flip_matrix(width)
            kp = kp[self.flip_perm]
            kp[:, 0] = width - 1 - kp[:, 0]
            center = center.copy()
            center[0] = width - 1 - center[0]
        if aug.half_body_prob > 0 and self.upper and self.lower:
            hb = half_body_box(kp, self.upper, self.lower, aug, rng)
            if hb is not None:
                center, scale = hb
        z = truncnorm(rng, 4)
        if aug.shift_prob > 0 and rng.random() < aug.shift_prob:
            center = center + z[:2] * aug.shift_factor * scale
        if aug.scale_prob > 0 and rng.random() < aug.scale_prob:
            lo, hi = aug.scale_range
            scale = scale * (z[2] * (hi - lo) * 0.5 + (hi + lo) * 0.5)
        rot = 0.0
        if aug.rotate_prob > 0 and rng.random() < aug.rotate_prob:
            rot = float(z[3] * aug.rotate_factor)
        w, h = self.input_size
        scale = fix_aspect(scale, w / h)
        m = affine_matrix(center, scale, rot, self.input_size) @ pre
        out = kp.copy()
        pts = self.keypoints[index, :, :2].astype(np.float64)
        # transform the original (unflipped) points with the full matrix, keep the flipped order
        pts = pts[self.flip_perm] if pre[0, 0] < 0 else pts
        out[:, :2] = pts @ m[:, :2].T + m[:, 2]
        inside = ((out[:, 0] >= -0.5) & (out[:, 0] < w - 0.5)
                  & (out[:, 1] >= -0.5) & (out[:, 1] < h - 0.5))
        out[~inside, 2] = 0.0
        return m, out.astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = self.rng
        aug = self.augment
        img = cv2.imread(self.paths[index], cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {self.paths[index]}")
        m, kp = self.sample_geometry(index, (img.shape[1], img.shape[0]), rng)
        w, h = self.input_size
        crop = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        # photometric (YOLOXHSVRandomAug, then albumentations Blur / MedianBlur / CoarseDropout)
        if aug.hue_delta or aug.saturation_delta or aug.value_delta:
            gains = rng.uniform(-1, 1, 3) * np.array([aug.hue_delta, aug.saturation_delta,
                                                      aug.value_delta])
            gains = (gains * rng.integers(0, 2, 3)).astype(np.int16)
            crop = hsv_jitter(crop, gains)
        if aug.blur_prob > 0 and rng.random() < aug.blur_prob:
            ks = int(rng.choice(np.asarray(aug.blur_sizes)))
            crop = cv2.blur(crop, (ks, ks))
        if aug.median_blur_prob > 0 and rng.random() < aug.median_blur_prob:
            ks = int(rng.choice(np.asarray(aug.median_blur_sizes)))
            crop = cv2.medianBlur(crop, ks)
        if aug.dropout_prob > 0 and rng.random() < aug.dropout_prob:
            crop = coarse_dropout(crop, rng, aug.dropout_size)
        out: dict[str, np.ndarray] = {
            "image": normalize_chw(crop),
            "keypoints": kp[None],
            "index": np.array([index], dtype=np.int64),
            "affine": invert_affine(m).astype(np.float32),
        }
        both = len(self.codecs) > 1
        if "simcc" in self.codecs:
            xl, yl, kw = simcc_targets(kp, self.input_size)
            pre = "simcc/" if both else ""
            out["x_labels"], out["y_labels"], out[pre + "keypoint_weight"] = xl, yl, kw
        if "heatmap" in self.codecs:
            hm, kw = msra_heatmap(kp, (w // 4, h // 4), 2.0, 4.0)
            pre = "heatmap/" if both else ""
            out["heatmap"], out[pre + "keypoint_weight"] = hm, kw
        return out


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker, a NumPy generator per worker."""
    cv2.setNumThreads(1)
    cv2.ocl.setUseOpenCL(False)
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "seed_worker"):
        info.dataset.seed_worker(worker_id)


def make_reference_loader(dataset: ReferenceTopdownDataset, batch_size: int = 64, workers: int = 2,
                          *, seed: int = 0, pin_memory: bool = False, start_method: str = "spawn",
                          prefetch_factor: int = 2, num_samples: int | None = None):
    """The ``torch.utils.data.DataLoader`` a careful MMPose / DLC user runs: ``workers`` worker
    processes (spawn / forkserver: a forked loader hangs when the parent already started
    OpenCV or DALI threads), persistent, shuffled, ``drop_last``; iterates ``num_samples``
    samples (default: effectively endless, so epoch ends never stall a benchmark)."""
    cv2.setNumThreads(1)
    g = torch.Generator()
    g.manual_seed(seed)
    n = num_samples if num_samples is not None else max(len(dataset), 1) * 1_000_000
    sampler = RandomSampler(dataset, replacement=False, num_samples=n, generator=g)
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = dict(multiprocessing_context=mp.get_context(start_method), persistent_workers=True,
                  prefetch_factor=prefetch_factor, worker_init_fn=worker_init)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=True, pin_memory=pin_memory, **kw)
