"""The CPU crop + photometric stage with OpenCV, run as one batch ``python_function`` in the
DALI graph (DALI's CPU ``warp_affine`` with a constant border is ~4x slower than OpenCV's,
and its ``hsv`` costs more than the warp; see benchmarks/results/loader-cpu.md).

Per sample, in a thread pool (OpenCV releases the GIL): ``warpAffine`` (bilinear, black
border) -> YOLOX HSV (``cvtColor`` to HSV, per-channel LUT, back; exact, not the multiplicative
approximation the DALI ``hsv`` path uses) -> ``blur`` (box) -> ``medianBlur`` -> one dropout
hole filled with 0. The same parameters drive the DALI-op path (GPU, or ``cpu_backend="dali"``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np


def hsv_luts(hue_gain: np.ndarray, saturation_gain: np.ndarray,
             value_gain: np.ndarray) -> np.ndarray:
    """``(B, 1, 256, 3)`` uint8 LUTs for OpenCV HSV (hue 0..179): YOLOX's
    ``h = (h + dh) % 180``, ``s = clip(s + ds)``, ``v = clip(v + dv)``."""
    x = np.arange(256)[None, :]
    h = (x + np.asarray(hue_gain)[:, None]) % 180
    s = np.clip(x + np.asarray(saturation_gain)[:, None], 0, 255)
    v = np.clip(x + np.asarray(value_gain)[:, None], 0, 255)
    return np.stack([h, s, v], axis=2).astype(np.uint8)[:, None]


class OpenCVCrop:
    """Batch callable for ``fn.python_function(frames, affine, luts, hsv_on, blur_size,
    median_size, drop_box, batch_processing=True)``; returns the ``(h, w, 3)`` uint8 crops.

    ``frames``: decoded RGB ``(H, W, 3)`` frames, or encoded bytes (1-D uint8), which are
    decoded here with ``cv2.imdecode`` (used for PNG, where OpenCV's decoder is faster than
    DALI's CPU one and there is no ROI decode to gain).

    ``affine``: per-sample ``(2, 3)`` output -> frame matrix (pixel centres, as OpenCV's
    ``WARP_INVERSE_MAP``); ``blur_size``/``median_size`` 0 = off; ``drop_box`` ``(y, x, h, w)``.
    """

    def __init__(self, input_size: tuple[int, int], threads: int):
        self.size = (int(input_size[0]), int(input_size[1]))
        self.threads = max(1, int(threads))
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def __getstate__(self):
        return {"size": self.size, "threads": self.threads, "_pool": None, "_closed": False}

    def close(self) -> None:
        """Stop the thread pool (a call after this runs on the calling thread)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def one(self, frame, affine, lut, hsv_on, blur, median, box) -> np.ndarray:
        import cv2  # noqa: PLC0415

        bgr = frame.ndim == 1  # encoded bytes (PNG): decode here, to BGR as OpenCV does
        if bgr:
            frame = cv2.imdecode(frame, cv2.IMREAD_COLOR)
            if frame is None:
                raise ValueError("OpenCV could not decode an image")
        out = cv2.warpAffine(np.ascontiguousarray(frame), np.asarray(affine, dtype=np.float64),
                             self.size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        if bool(hsv_on):
            hsv = cv2.LUT(cv2.cvtColor(out, cv2.COLOR_BGR2HSV if bgr else cv2.COLOR_RGB2HSV), lut)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        elif bgr:
            out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
        b, m = int(blur), int(median)
        if b > 1:
            out = cv2.blur(out, (b, b))
        if m > 1:
            out = cv2.medianBlur(out, m)
        y, x, h, w = (int(v) for v in box)
        if h > 0 and w > 0:
            out[y:y + h, x:x + w] = 0
        return out

    def __call__(self, frames, affines, luts, hsv_on, blur, median, boxes):
        if self._closed:
            return list(map(self.one, frames, affines, luts, hsv_on, blur, median, boxes))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="posefeed-cv2")
        return list(self._pool.map(self.one, frames, affines, luts, hsv_on, blur, median, boxes))
