"""Crop geometry, vectorised over the batch (NumPy, float64 inside).

Coordinates: pixels, origin at the centre of the top-left pixel (an image of width W spans
x in [-0.5, W - 0.5]). Matrices are 3x3 homogeneous, ``(B, 3, 3)``; "forward" maps original
image pixels to network-input pixels, its inverse is the loader's ``affine`` output.
DALI's ``warp_affine`` works in pixel-corner coordinates: `dali_warp_matrix` is the only place
that converts (+0.5 / -0.5).
"""
from __future__ import annotations

import numpy as np


def box_center_scale(bboxes: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """``bboxes (B, 4)`` xywh -> centre ``(B, 2)`` and size ``(B, 2)`` (w, h) times ``padding``
    (MMPose ``GetBBoxCenterScale``)."""
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    return b[:, :2] + 0.5 * b[:, 2:], b[:, 2:] * padding


def fix_aspect(size: np.ndarray, aspect: float) -> np.ndarray:
    """Grow ``size (B, 2)`` (w, h) so that ``w / h == aspect`` (MMPose ``_fix_aspect_ratio``)."""
    w, h = size[:, 0], size[:, 1]
    wide = w > h * aspect
    return np.stack([np.where(wide, w, h * aspect), np.where(wide, w / aspect, h)], axis=1)


def truncated_normal(rng: np.random.Generator, size, low: float = -1.0,
                     high: float = 1.0) -> np.ndarray:
    """Standard normal samples restricted to ``[low, high]`` (vectorised rejection: the
    samples outside are drawn again, in index order, until none is; each round looks only at
    the samples it drew)."""
    z = rng.standard_normal(size)
    flat = z.reshape(-1)                 # a view: z is contiguous
    bad = np.flatnonzero((flat < low) | (flat > high))
    while bad.size:
        flat[bad] = redrawn = rng.standard_normal(bad.size)
        bad = bad[(redrawn < low) | (redrawn > high)]
    return z


def flip_matrices(flip: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """``(B, 3, 3)``: ``x -> W - 1 - x`` where ``flip`` is set, identity elsewhere."""
    f = np.asarray(flip, dtype=bool)
    m = np.zeros((len(f), 3, 3))
    m[:, 0, 0] = np.where(f, -1.0, 1.0)
    m[:, 0, 2] = np.where(f, np.asarray(widths, dtype=np.float64) - 1.0, 0.0)
    m[:, 1, 1] = m[:, 2, 2] = 1.0
    return m


def crop_matrices(center: np.ndarray, size: np.ndarray, rotation_deg: np.ndarray,
                  out_size: tuple[int, int], stretch: bool = False) -> np.ndarray:
    """Forward matrices ``(B, 3, 3)`` that fit the rotated box (``center``, ``size`` (w, h))
    into an output of ``out_size`` (w, h), keeping the aspect (letterbox when they differ);
    ``stretch``: each axis scaled on its own (``k_x = w / size_w``, ``k_y = h / size_h``;
    DeepLabCut's top-down crop, a resize of the box region to the output).

    ``dst = k * R(-rot) @ (src - center) + ((w - 1) / 2, (h - 1) / 2)`` with
    ``k = min(w / size_w, h / size_h)``: the box centre lands on the output's centre and the
    box edges on the output's edges. (MMPose's non-UDP ``get_warp_matrix`` puts the centre at
    ``(w / 2, h / 2)``, half a pixel off; posefeed transforms image and keypoints with the same
    matrix either way.) The rotation sign follows MMPose: the crop's "up" is the image
    direction ``(sin rot, -cos rot)``, so the content appears turned counter-clockwise by
    ``rot`` in the crop.
    """
    w, h = float(out_size[0]), float(out_size[1])
    c = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(size, dtype=np.float64).reshape(-1, 2)
    kx = w / s[:, 0]
    ky = h / s[:, 1]
    if not stretch:
        kx = ky = np.minimum(kx, ky)
    t = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64).reshape(-1))
    cos, sin = np.cos(t), np.sin(t)
    m = np.zeros((len(c), 3, 3))
    # diag(kx, ky) @ R(-t) = [[kx cos, kx sin], [-ky sin, ky cos]]
    m[:, 0, 0], m[:, 0, 1] = kx * cos, kx * sin
    m[:, 1, 0], m[:, 1, 1] = -ky * sin, ky * cos
    m[:, 0, 2] = (w - 1) / 2 - (m[:, 0, 0] * c[:, 0] + m[:, 0, 1] * c[:, 1])
    m[:, 1, 2] = (h - 1) / 2 - (m[:, 1, 0] * c[:, 0] + m[:, 1, 1] * c[:, 1])
    m[:, 2, 2] = 1.0
    return m


def zoom_rotate_matrices(center: np.ndarray, zoom: np.ndarray,
                         rotation_deg: np.ndarray) -> np.ndarray:
    """``(B, 3, 3)``: zoom by ``zoom (B,)`` and rotate by ``rotation_deg (B,)`` about
    ``center (B, 2)``, the frame keeping its size (albumentations ``Affine`` about the image
    centre ``((w - 1) / 2, (h - 1) / 2)``): ``dst = zoom * R(-rot) @ (src - center) + center``,
    the same linear part and rotation sign as `crop_matrices` (content turned
    counter-clockwise by ``rot``)."""
    c = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    k = np.asarray(zoom, dtype=np.float64).reshape(-1)
    t = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64).reshape(-1))
    cos, sin = np.cos(t) * k, np.sin(t) * k
    m = np.zeros((len(c), 3, 3))
    m[:, 0, 0], m[:, 0, 1] = cos, sin
    m[:, 1, 0], m[:, 1, 1] = -sin, cos
    m[:, 0, 2] = c[:, 0] - (cos * c[:, 0] + sin * c[:, 1])
    m[:, 1, 2] = c[:, 1] - (-sin * c[:, 0] + cos * c[:, 1])
    m[:, 2, 2] = 1.0
    return m


def transform_points(matrices: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply ``matrices (B, 3, 3)`` (or ``(B, 2, 3)``) to points ``xy (B, ..., 2)``."""
    m = np.asarray(matrices, dtype=np.float64)
    p = np.asarray(xy, dtype=np.float64)
    shape = p.shape
    flat = p.reshape(shape[0], -1, 2)
    out = flat @ m[:, :2, :2].transpose(0, 2, 1) + m[:, None, :2, 2]
    return out.reshape(shape)


def dali_warp_matrix(inverse: np.ndarray) -> np.ndarray:
    """``inverse (B, 3, 3)`` (input pixels -> image pixels, centre convention) -> the ``(B, 2, 3)``
    float32 matrix ``fn.warp_affine`` expects (output -> input, pixel-corner convention):
    ``T(+0.5) @ inverse @ T(-0.5)``."""
    m = np.asarray(inverse, dtype=np.float64).copy()
    lin = m[:, :2, :2]
    m[:, :2, 2] = m[:, :2, 2] + 0.5 - 0.5 * lin.sum(axis=2)
    return m[:, :2, :].astype(np.float32)


def inside(xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean mask: points ``(..., 2)`` inside an image of ``size`` (w, h), i.e. in
    ``[-0.5, w - 0.5) x [-0.5, h - 0.5)``."""
    x, y = xy[..., 0], xy[..., 1]
    return (x >= -0.5) & (x < size[0] - 0.5) & (y >= -0.5) & (y < size[1] - 0.5)


def source_roi(inverse: np.ndarray, out_size: tuple[int, int],
               image_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixel region of each source image that the crop reads: ``anchor (B, 2)`` (x, y) and
    ``shape (B, 2)`` (w, h), integer, inside the image, at least 1x1.

    The output rectangle's corners ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` are mapped through
    ``inverse (B, 3, 3)``; their bounding box, grown by one pixel for the bilinear neighbours,
    rounded outwards and clipped to the image. Decoding only this region (JPEG ROI decode) and
    warping from it with `shift_origin` gives the same crop.
    """
    w, h = out_size
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    src = transform_points(inverse, np.broadcast_to(corners, (len(inverse), 4, 2)))
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    lo = np.floor(src.min(axis=1) - 1.0)
    hi = np.ceil(src.max(axis=1) + 2.0)
    lo = np.clip(lo, 0, sizes - 1)
    hi = np.clip(hi, lo + 1, sizes)
    return lo.astype(np.int64), (hi - lo).astype(np.int64)


def shift_origin(inverse: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """``inverse`` re-expressed for a source region starting at ``anchor (B, 2)``:
    ``T(-anchor) @ inverse``."""
    m = np.asarray(inverse, dtype=np.float64).copy()
    m[:, :2, 2] -= np.asarray(anchor, dtype=np.float64)
    return m
