"""SimCC labels (RTMPose / MMPose ``SimCCLabel`` with Gaussian smoothing), vectorised."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from posefeed.targets._common import (
    Array,
    as_keypoints,
    clean_keypoints,
    mmpose_visibility,
    pair,
    size_pair,
    to_backend,
)
from posefeed.targets.base import Codec


class SimCC(Codec):
    r"""1-D coordinate-classification labels, one per axis (RTMPose).

    For a keypoint ``(x, y)`` in input pixels and split ratio :math:`r`, the centre bins are
    :math:`\mu_x = \mathrm{rint}(x r)`, :math:`\mu_y = \mathrm{rint}(y r)` (round half to even,
    as ``np.around``), and the labels cover the full length:

    .. math:: l_x[i] = \exp\!\big(-(i-\mu_x)^2 / (2\sigma_x^2)\big),\quad i = 0..W_x-1

    with :math:`W_x = \mathrm{rint}(w r)`, :math:`W_y = \mathrm{rint}(h r)` bins.

    Weights (MMPose's rule): ``visible = clip(v, 0, 1)``; a keypoint with ``visible < 0.5``
    draws nothing and keeps weight ``visible`` (0 for COCO ``v = 0`` and DLC's -1); a drawn
    keypoint gets weight 0 when its 3-sigma support is off the label on either axis
    (:math:`\mu - 3\sigma \ge W` or :math:`\mu + 3\sigma + 1 < 0`), and then draws nothing.

    Several instances per sample (``N > 1``) merge by an element-wise max of their labels,
    and the keypoint weight is the max of the instance weights (1 if any instance draws).

    Args:
        input_size: network input ``(w, h)`` in pixels.
        sigma: label standard deviation :math:`(\sigma_x, \sigma_y)` in bins (a scalar for both).
        split_ratio: bins per input pixel :math:`r`.
        normalize: divide each label by :math:`\sigma\sqrt{2\pi}` (MMPose's ``normalize``).
    """

    name = "simcc"

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        sigma: float | tuple[float, float] = (4.9, 5.66),
        split_ratio: float = 2.0,
        normalize: bool = False,
    ) -> None:
        self.input_size = size_pair(input_size, "input_size")
        self.sigma = pair(sigma, "sigma")
        if min(self.sigma) <= 0:
            raise ValueError(f"sigma must be positive; got {sigma!r}")
        self.split_ratio = float(split_ratio)
        if self.split_ratio <= 0:
            raise ValueError(f"split_ratio must be positive; got {split_ratio!r}")
        self.normalize = bool(normalize)
        w, h = self.input_size
        # np.around(w * r).astype(int): round half to even (Python's round does the same)
        self.label_size = (int(round(w * self.split_ratio)), int(round(h * self.split_ratio)))
        #: `_table`'s label tables by (array module, device, length, sigma)
        self._tables: dict[tuple, Array] = {}

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("x_labels", "y_labels", "keypoint_weight")

    def __repr__(self) -> str:
        return (f"SimCC(input_size={self.input_size}, sigma={self.sigma}, "
                f"split_ratio={self.split_ratio}, normalize={self.normalize})")

    # ------------------------------------------------------------------ encode
    def output_shapes(self, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
        b, k = int(batch_size), int(num_keypoints)
        wx, wy = self.label_size
        return {"x_labels": (b, k, wx), "y_labels": (b, k, wy), "keypoint_weight": (b, k)}

    def encode(self, keypoints: Array, out: Mapping[str, Array] | None = None) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` in input pixels -> ``x_labels (B, K, Wx)``,
        ``y_labels (B, K, Wy)``, ``keypoint_weight (B, K)``, float32, same array module
        (written into ``out``'s arrays when given)."""
        xp, kp = as_keypoints(keypoints)
        dst = None if out is None else self._check_out(xp, out, kp.shape[0], kp.shape[2])
        x, y, v = clean_keypoints(xp, kp)      # as_keypoints validated kp already
        vis = mmpose_visibility(xp, v)
        draw = vis >= 0.5
        r = xp.float32(self.split_ratio)
        mu_x = xp.rint(x * r)  # float32, round half to even
        mu_y = xp.rint(y * r)
        wx, wy = self.label_size
        sx, sy = self.sigma
        rx, ry = 3.0 * sx, 3.0 * sy
        mx = mu_x.astype(xp.float64)
        my = mu_y.astype(xp.float64)
        off = (mx - rx >= wx) | (my - ry >= wy) | (mx + rx + 1 < 0) | (my + ry + 1 < 0)
        on = draw & ~off
        weight = xp.where(draw & off, xp.float32(0), vis)

        get = (lambda name: None) if dst is None else dst.get
        res = {
            "x_labels": self._labels(xp, mu_x, on, wx, sx, get("x_labels")),
            "y_labels": self._labels(xp, mu_y, on, wy, sy, get("y_labels")),
            "keypoint_weight": xp.max(weight, axis=1, out=get("keypoint_weight")),
        }
        return res

    def _labels(self, xp: Any, mu: Array, on: Array, length: int, sigma: float,
                out: Array | None = None) -> Array:
        """``(B, K, length)`` labels: the max over instances of the ``(B, N, K, length)``
        per-instance labels (all 0 where ``on`` is False), into ``out`` when given.

        Every label is a shifted copy of one kernel (mu is an integer bin), so the labels
        are rows gathered from a table: row ``s`` holds ``exp(-(i - mu)^2 / (2 sigma^2))``
        for ``mu = s - m`` (``i = 0..length-1``), covering every drawable ``mu`` in
        ``[-m, length - 1 + m]``, ``m = ceil(3 sigma) + 1``; the last row is all zeros."""
        m = int(math.ceil(3.0 * sigma)) + 1
        rows = length + 2 * m
        table = self._table(xp, length, sigma, m)
        sel = xp.where(on, xp.clip(mu, -m, length - 1 + m).astype(xp.int64) + m, rows)
        if sel.shape[1] == 1:  # one gather straight into the output
            if out is None:
                out = xp.empty((sel.shape[0], sel.shape[2], length), dtype=xp.float32)
            if xp is np:  # mode="raise" (the default) would buffer ``out``; sel is in range
                np.take(table, sel[:, 0], axis=0, out=out, mode="clip")
            else:
                xp.take(table, sel[:, 0], axis=0, out=out)
            return out
        return xp.max(table[sel], axis=1, out=out)

    def _table(self, xp: Any, length: int, sigma: float, m: int) -> Array:
        """The ``(length + 2m + 1, length)`` label table of :meth:`_labels`, built once per
        array module / device and axis (it depends only on the codec's parameters)."""
        dev = None if xp is np else xp.cuda.Device().id
        key = (xp.__name__, dev, length, sigma)
        table = self._tables.get(key)
        if table is None:
            rows = length + 2 * m
            # kernel at offset d = t - (length - 1 + m), t = 0 .. 2*length + 2m - 2
            d = xp.arange(-(length - 1 + m), length + m, dtype=xp.float32)
            kernel = xp.exp(-(d * d) / xp.float32(2.0 * sigma * sigma))
            if self.normalize:
                kernel = kernel / xp.float32(sigma * math.sqrt(2.0 * math.pi))
            # row s holds mu_s = s - m: it starts at kernel[length - 1 + 2m - s]
            start = (length - 1 + 2 * m) - xp.arange(rows)
            table = kernel[start[:, None] + xp.arange(length)]
            table = xp.concatenate([table, xp.zeros((1, length), dtype=xp.float32)]).astype(xp.float32)
            self._tables[key] = table
        return table

    # ------------------------------------------------------------------ decode
    def decode(self, x_labels: Any, y_labels: Any) -> tuple[Any, Any]:
        """``x_labels (..., K, Wx)``, ``y_labels (..., K, Wy)`` (labels or logits; NumPy,
        CuPy or torch) -> ``keypoints (..., K, 2)`` in input pixels and ``scores (..., K)``.

        ``x = argmax(x_labels) / r`` (likewise y); ``score = min(max x_labels, max y_labels)``;
        where ``score <= 0`` the location is -1 (MMPose sets the bin to -1 *before* dividing
        by r, i.e. returns -1/r; posefeed returns -1 in pixels). Returns the input's kind.
        """
        xp, (sx, sy), wrap = to_backend(x_labels, y_labels)
        ix = xp.argmax(sx, axis=-1)
        iy = xp.argmax(sy, axis=-1)
        vx = sx.max(axis=-1).astype(xp.float32)
        vy = sy.max(axis=-1).astype(xp.float32)
        score = xp.minimum(vx, vy)
        r = xp.float32(self.split_ratio)
        kp = xp.stack([ix.astype(xp.float32) / r, iy.astype(xp.float32) / r], axis=-1)
        kp = xp.where((score <= 0)[..., None], xp.float32(-1), kp).astype(xp.float32)
        return wrap(kp), wrap(score)
