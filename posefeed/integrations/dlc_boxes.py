"""DeepLabCut 3.0.2's instance boxes and top-down crop geometry, vectorised (imports no
DeepLabCut; `posefeed.integrations.deeplabcut.loaders` uses them to make DeepLabCut's
batches).

Read from DeepLabCut 3.0.2 (``pose_estimation_pytorch/data``):

* ``dlcloader.DLCLoader.to_coco``: a label is visible (``v = 2``) when it is not NaN and
  ``0 < x < width``, ``0 < y < height``; an instance with none is not an annotation.
* ``base._compute_bboxes(method="keypoints")`` -> ``utils.bbox_from_keypoints``: the box
  of the visible keypoints grown by ``data.bbox_margin`` (default 20) px on each side, its
  corners clipped to ``[0, width] x [0, height]``; the annotation's ``area`` is
  ``max(1, w * h)``.
* ``dataset.PoseDataset.__getitem__`` (top-down): the box is cast to ``int`` (each of
  x, y, w, h truncated), then ``image.top_down_crop(image, box, (W, H), margin,
  crop_with_context=True)``: centre ``c = (x + w/2, y + h/2)``, ``w += 2 margin``,
  ``h += 2 margin``, the short side grown to the output aspect ``W / H``, the region
  ``[X1, X2) x [Y1, Y2)`` with ``X1 = round(cx - w/2)``, ``X2 = round(cx + w/2)`` (Python's
  round: half to even) read with zero padding outside the image and resized to ``(W, H)``
  by ``cv2.resize(INTER_LINEAR)``; ``offsets = (X1, Y1)``, ``scales = ((X2 - X1) / W,
  (Y2 - Y1) / H)``; keypoints map to ``(x - offset) / scale``; the box maps the same way,
  truncated to int again and clipped to ``[0, W - 1]`` (all four numbers, by the width);
  the batch's ``area`` is ``max(1, w) * max(1, h)`` of that box.
"""
from __future__ import annotations

import numpy as np

from posefeed.datasets.dlc.boxes import dlc_boxes, dlc_visible  # noqa: F401 - re-exported


def _round_half_even(a: np.ndarray) -> np.ndarray:
    return np.rint(a).astype(np.int64)


def top_down_regions(boxes: np.ndarray, crop_size: tuple[int, int], margin: float = 0.0
                     ) -> np.ndarray:
    """DeepLabCut's ``top_down_crop`` regions (``crop_with_context=True``): ``boxes (N, 4)``
    xywh -> ``(N, 4)`` int64 ``X1, Y1, X2, Y2``, the image pixels ``[X1, X2) x [Y1, Y2)``
    (may extend past the image: zero padding) resized to ``crop_size`` (W, H)."""
    b = np.trunc(np.asarray(boxes, dtype=np.float64)).astype(np.int64)   # bboxes.astype(int)
    out_w, out_h = float(crop_size[0]), float(crop_size[1])
    cx = b[:, 0] + b[:, 2] / 2
    cy = b[:, 1] + b[:, 3] / 2
    w = (b[:, 2] + 2 * margin).astype(np.float64)
    h = (b[:, 3] + 2 * margin).astype(np.float64)
    ratio = out_w / out_h
    with np.errstate(divide="ignore", invalid="ignore"):
        r = w / h
    w, h = np.where(r < ratio, h * ratio, w), np.where(r > ratio, w / ratio, h)
    return np.stack([_round_half_even(cx - w / 2), _round_half_even(cy - h / 2),
                     _round_half_even(cx + w / 2), _round_half_even(cy + h / 2)], axis=1)


def region_boxes(regions: np.ndarray) -> np.ndarray:
    """Regions ``X1, Y1, X2, Y2`` -> posefeed boxes ``(N, 4)`` xywh whose crop (``box_padding
    = 1``, ``box_keep_aspect = False``) is the region resized: posefeed's pixel centres are
    integers, so the region spans ``[X1 - 1/2, X2 - 1/2]``."""
    r = np.asarray(regions, dtype=np.float64)
    return np.stack([r[:, 0] - 0.5, r[:, 1] - 0.5, r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]], axis=1)


def crop_offsets_scales(regions: np.ndarray, crop_size: tuple[int, int]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """DeepLabCut's ``offsets (N, 2)`` int64 and ``scales (N, 2)`` float64 of a region."""
    r = np.asarray(regions, dtype=np.int64)
    size = np.asarray(crop_size, dtype=np.float64)
    return r[:, :2].copy(), (r[:, 2:] - r[:, :2]) / size


def crop_boxes(boxes: np.ndarray, offsets: np.ndarray, scales: np.ndarray,
               crop_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """DeepLabCut's boxes in the crop ``(N, 4)`` float32 and the batch's ``area (N,)``
    float32: the int box mapped by ``(x - offset) / scale`` (sizes by ``/ scale``),
    truncated to int, clipped to ``[0, W - 1]``; area ``max(1, w) * max(1, h)``."""
    b = np.trunc(np.asarray(boxes, dtype=np.float64)).astype(np.int64).astype(np.float64)
    o = np.asarray(offsets, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    out = np.stack([(b[:, 0] - o[:, 0]) / s[:, 0], (b[:, 1] - o[:, 1]) / s[:, 1],
                    b[:, 2] / s[:, 0], b[:, 3] / s[:, 1]], axis=1)
    out = np.clip(np.trunc(out), 0, int(crop_size[0]) - 1)
    area = np.maximum(1, out[:, 2]) * np.maximum(1, out[:, 3])
    return out.astype(np.float32), area.astype(np.float32)


def to_dlc_crop(keypoints: np.ndarray, affine: np.ndarray, crop_size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """posefeed's top-down keypoints -> DeepLabCut's crop keypoints, ``offsets`` and ``scales``.

    ``keypoints (B, N, K, 3)`` in posefeed's input pixels (pixel centres at integers),
    ``affine (B, 2, 3)`` posefeed's input -> image map. posefeed's crop of a region puts input
    pixel ``j``'s centre at image ``x = s j + t`` (per axis; ``s`` the affine's column
    lengths, ``t`` its translation); DeepLabCut maps ``x = s x_d + o`` with ``o = t - s/2 +
    1/2`` (the region's first pixel, an integer: rounded), so ``x_d = j + 1/2 - 1/(2 s)``.
    Labels that are not visible (``v <= 0``) go where DeepLabCut puts them, image ``(0, 0)``
    -> ``-o / s``; a visible one outside DeepLabCut's crop bounds (``x`` outside ``[0, H]``,
    ``y`` outside ``[0, W]``, its shape order) gets ``v = 0``. Returns float64 keypoints,
    ``offsets (B, 2)`` int64, ``scales (B, 2)`` float64."""
    a = np.asarray(affine, dtype=np.float64)
    kp = np.array(keypoints, dtype=np.float64)
    s = np.stack([np.hypot(a[:, 0, 0], a[:, 1, 0]), np.hypot(a[:, 0, 1], a[:, 1, 1])], axis=1)
    offsets = np.rint(a[:, :, 2] - s / 2 + 0.5).astype(np.int64)
    st = s[:, None, None, :]
    hidden = kp[..., 2] <= 0
    xy = kp[..., :2] + 0.5 - 0.5 / st
    xy = np.where(hidden[..., None], -offsets[:, None, None, :] / st, xy)
    w, h = crop_size
    out = (xy[..., 0] < 0) | (xy[..., 0] > h) | (xy[..., 1] < 0) | (xy[..., 1] > w)
    kp[..., :2] = xy
    kp[..., 2] = np.where(out & ~hidden, 0.0, kp[..., 2])
    return kp, offsets, s
