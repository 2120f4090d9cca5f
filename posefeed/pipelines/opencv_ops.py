"""The CPU crop + photometric stage with OpenCV, run as one batch ``python_function`` in the
DALI graph (DALI's CPU ``warp_affine`` with a constant border is ~4x slower than OpenCV's,
and its ``hsv`` costs more than the warp; see benchmarks/results/loader-cpu.md).

Per sample, in a thread pool (OpenCV releases the GIL): ``warpAffine`` (bilinear, black
border) -> YOLOX HSV (``cvtColor`` to HSV, per-channel LUT, back; exact, not the multiplicative
approximation the DALI ``hsv`` path uses) -> ``blur`` (box) -> ``medianBlur`` -> motion blur
(``filter2D`` with the sampled line kernel, albumentations ``MotionBlur``) -> one dropout hole
filled with 0 -> Gaussian noise (albumentations ``GaussNoise``: `pixel_noise.gauss_noise`,
``clip(x + floor(n), 0, 255)`` drawn in integers from the exact distribution of ``floor(n)``
by a numba kernel, or ``cv2.randn`` without numba; seeded per sample from the batch's
parameters, so a batch is reproducible on any thread). The same parameters drive the DALI-op
path (GPU, or ``cpu_backend="dali"``).

Crop ahead: DALI runs CPU operators one after another, so a batch stage that does the OpenCV
work itself blocks normalisation and the codecs, and the sample source (main thread) waits
too. When the stage's inputs are all known to the sample source (cached frames, or PNG bytes
decoded here), the source calls :meth:`OpenCVCrop.submit` as soon as DALI asks for a batch,
and the graph's stage only collects the finished crops (:meth:`~OpenCVCrop.collect`): the pool
works on the next batches while DALI normalises and encodes the current one.
"""
from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import count

import numpy as np

from posefeed.pipelines.pixel_noise import stage_gauss_noise as gauss_noise


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

    ``frames``: decoded RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)`` frames, or encoded bytes (1-D
    uint8), which are decoded here with ``cv2.imdecode`` (used for PNG, where OpenCV's
    decoder is faster than DALI's CPU one and there is no ROI decode to gain).

    OpenCV's 4-channel bilinear ``warpAffine`` is 2x faster than its 3-channel one with the
    same values per channel, so 3-channel frames get an alpha channel first (~0.03 ms for a
    640x480 frame against ~0.07 ms saved; the host cache stores RGBA and skips that step).
    The output is always RGB ``(h, w, 3)``.

    ``affine``: per-sample ``(2, 3)`` output -> frame matrix (pixel centres, as OpenCV's
    ``WARP_INVERSE_MAP``); ``blur_size``/``median_size`` 0 = off; ``drop_box`` ``(y, x, h, w)``;
    optional (graphs with ``GraphSpec.motion_noise``): ``motion`` ``(7, 7)`` float32 kernel
    (all zero = off) and ``noise`` ``(2,)`` float64 ``(std, seed)`` (std 0 = off).
    """

    def __init__(self, input_size: tuple[int, int], threads: int):
        self.size = (int(input_size[0]), int(input_size[1]))
        self.threads = max(1, int(threads))
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._tickets = count()
        self._pending: dict[int, list[Future]] = {}

    def __getstate__(self):
        return {"size": self.size, "threads": self.threads, "_pool": None, "_closed": False,
                "_tickets": count(), "_pending": {}}

    def close(self) -> None:
        """Stop the thread pool and drop submitted batches (a call after this runs on the
        calling thread)."""
        self._closed = True
        pool, self._pool = self._pool, None
        pending, self._pending = self._pending, {}
        for futures in pending.values():
            for f in futures:
                f.cancel()
        if pool is not None:
            pool.shutdown(wait=False)

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="posefeed-cv2")
        return self._pool

    def submit(self, frames, affines, luts, hsv_on, blur, median, boxes, *motion_noise) -> int:
        """Start one batch in the pool now (arguments as for ``__call__``); returns the ticket
        that :meth:`collect` takes. The frames must stay unchanged until then."""
        if self._closed:
            raise RuntimeError("the OpenCV stage is closed")
        pool = self._get_pool()
        ticket = next(self._tickets)
        self._pending[ticket] = [pool.submit(self.one, *a) for a in
                                 zip(frames, affines, luts, hsv_on, blur, median, boxes, *motion_noise)]
        return ticket

    def collect(self, tickets) -> list[np.ndarray]:
        """Batch callable for ``fn.python_function(tickets, batch_processing=True)``: every
        sample carries its batch's ticket from :meth:`submit`; returns that batch's crops in
        order (re-raising the first sample's error, as ``__call__`` would)."""
        ticket = int(np.asarray(tickets[0]).ravel()[0])
        futures = self._pending.pop(ticket, None)
        if futures is None:
            raise RuntimeError(f"the OpenCV stage has no batch {ticket} (closed, or collected twice)")
        if len(futures) != len(tickets):
            raise RuntimeError(f"batch {ticket} has {len(futures)} crops but DALI asked for {len(tickets)}")
        return [f.result() for f in futures]

    def one(self, frame, affine, lut, hsv_on, blur, median, box, motion=None,
            noise=None) -> np.ndarray:
        import cv2  # noqa: PLC0415 - OpenCV only where it runs (posefeed.pipelines imports without it)

        bgr = frame.ndim == 1  # encoded bytes (PNG): decode here, to BGR as OpenCV does
        if bgr:
            frame = cv2.imdecode(frame, cv2.IMREAD_COLOR)
            if frame is None:
                raise ValueError("OpenCV could not decode an image")
        affine = np.asarray(affine, dtype=np.float64)
        shift = integer_shift(affine)
        if shift is not None:    # a whole-pixel window: the warp is a copy (~7x less CPU)
            out = shifted_window(frame, shift, self.size)
        else:
            if frame.shape[2] == 3:  # 4-channel warp: 2x faster than 3-channel, same values
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA if bgr else cv2.COLOR_RGB2RGBA)
            out = cv2.warpAffine(np.ascontiguousarray(frame), affine, self.size,
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        if bool(hsv_on):  # (RGBA input: cvtColor ignores the alpha channel)
            hsv = cv2.LUT(cv2.cvtColor(out, cv2.COLOR_BGR2HSV if bgr else cv2.COLOR_RGB2HSV), lut)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        elif out.shape[2] == 4 or bgr:
            out = cv2.cvtColor(out, (cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
                               if out.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        b, m = int(blur), int(median)
        if b > 1:
            out = cv2.blur(out, (b, b))
        if m > 1:
            out = cv2.medianBlur(out, m)
        if motion is not None and motion.any():  # reflect-101 border, as albumentations
            out = cv2.filter2D(out, -1, np.asarray(motion, dtype=np.float32))
        y, x, h, w = (int(v) for v in box)
        if h > 0 and w > 0:
            out[y:y + h, x:x + w] = 0
        if noise is not None and noise[0] > 0:
            out = gauss_noise(out, float(noise[0]), int(noise[1]))
        return out

    def __call__(self, frames, affines, luts, hsv_on, blur, median, boxes, *motion_noise):
        args = (frames, affines, luts, hsv_on, blur, median, boxes, *motion_noise)
        if self._closed:
            return list(map(self.one, *args))
        return list(self._get_pool().map(self.one, *args))


#: how far from whole pixels the translation may be and still be a copy: the source position
#: moves by at most this much (1e-6 px), a bilinear blend by at most 255e-6 of a grey level.
#: The linear part must be the identity exactly: an error e there moves the source by e
#: times the coordinate (1e-6 off at x = 5000 px is 5e-3 px; OpenCV 5's warp blends with
#: float weights, so such a warp differs from the copy by up to 2 levels, measured). The
#: recipes' whole-pixel windows have it exactly (DeepLabCut's default: 88 of 160 samples,
#: every one with an exact identity).
SHIFT_TOL = 1e-6


def integer_shift(affine: np.ndarray) -> tuple[int, int] | None:
    """``(dx, dy)`` when the ``(2, 3)`` output -> frame matrix is ``[[1, 0, dx], [0, 1, dy]]``
    with whole-pixel ``dx, dy`` (within `SHIFT_TOL`; the linear part exactly), else None."""
    a = np.asarray(affine, dtype=np.float64)
    (l00, l01, tx), (l10, l11, ty) = a.tolist()
    # (scalar compares: ~1 us a sample; a NaN or inf entry is not a shift, the warp takes it)
    if not (l00 == 1.0 and l01 == 0.0 and l10 == 0.0 and l11 == 1.0
            and math.isfinite(tx) and math.isfinite(ty)):
        return None
    dx, dy = round(tx), round(ty)
    if abs(tx - dx) > SHIFT_TOL or abs(ty - dy) > SHIFT_TOL:
        return None
    return dx, dy


def shifted_window(frame: np.ndarray, shift: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """What the bilinear ``warpAffine`` with a constant black border gives for the matrix
    ``[[1, 0, dx], [0, 1, dy]]``: output pixel ``(x, y)`` = frame pixel ``(x + dx, y + dy)``,
    0 outside the frame; ``(h, w, c)`` uint8 (``size`` = (w, h)), ``c`` the frame's channels."""
    (dx, dy), (w, h) = shift, size
    fh, fw = frame.shape[:2]
    x0, x1 = max(0, -dx), min(w, fw - dx)
    y0, y1 = max(0, -dy), min(h, fh - dy)
    if x0 == 0 and y0 == 0 and x1 == w and y1 == h:
        return frame[dy:dy + h, dx:dx + w].copy()  # (never a view of a cached frame)
    out = np.zeros((h, w, frame.shape[2]), dtype=frame.dtype)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = frame[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return out
