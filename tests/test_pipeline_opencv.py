"""The OpenCV crop stage on its own: RGBA frames (the host cache's layout) give the same crops
as RGB frames, and the crop-ahead path (submit now, collect later) returns exactly what the
synchronous call returns, in order, and fails loudly when misused."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from posefeed.pipelines.opencv_ops import OpenCVCrop, hsv_luts

SIZE = (48, 64)  # (w, h)


def batch_args(n: int, seed: int = 0):
    """Random frames and per-sample parameters covering every op (HSV on/off, blur, median,
    dropout), with crops that reach past the frame border."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (90 + 7 * i, 120 + 5 * i, 3), dtype=np.uint8) for i in range(n)]
    affines = []
    for _ in range(n):
        th, sc = rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 2.5)
        c, s = sc * np.cos(th), sc * np.sin(th)
        affines.append(np.array([[c, -s, rng.uniform(-40, 100)], [s, c, rng.uniform(-40, 80)]], np.float32))
    gains = rng.integers(-30, 31, (n, 3))
    gains[::3] = 0
    luts = hsv_luts(gains[:, 0], gains[:, 1], gains[:, 2])
    hsv_on = (gains != 0).any(axis=1)
    blur = rng.choice([0, 3, 5, 7], n).astype(np.int32)
    median = rng.choice([0, 3, 5, 7], n).astype(np.int32)
    boxes = np.stack([rng.integers(0, 40, n), rng.integers(0, 30, n), rng.integers(0, 20, n),
                      rng.integers(0, 20, n)], axis=1).astype(np.int32)
    return frames, affines, list(luts), hsv_on, blur, median, boxes


def test_rgba_frames_give_the_same_crops_as_rgb():
    args = batch_args(12)
    rgba = [cv2.cvtColor(f, cv2.COLOR_RGB2RGBA) for f in args[0]]
    stage = OpenCVCrop(SIZE, threads=1)
    try:
        a = stage(*args)
        b = stage(rgba, *args[1:])
    finally:
        stage.close()
    for x, y in zip(a, b):
        assert x.shape == (SIZE[1], SIZE[0], 3) and y.shape == x.shape
        np.testing.assert_array_equal(x, y)


def test_warp_matches_plain_opencv_for_rgba():
    """No HSV / blur / dropout: the crop is cv2.warpAffine of the RGB frame."""
    frames, affines, luts, _, _, _, _ = batch_args(6, seed=1)
    n = len(frames)
    off = (np.zeros(n, bool), np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros((n, 4), np.int32))
    stage = OpenCVCrop(SIZE, threads=2)
    try:
        got = stage([cv2.cvtColor(f, cv2.COLOR_RGB2RGBA) for f in frames], affines, luts, *off)
    finally:
        stage.close()
    for f, m, g in zip(frames, affines, got):
        ref = cv2.warpAffine(f, m.astype(np.float64), SIZE, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        np.testing.assert_array_equal(g, ref)


def test_crop_ahead_equals_the_synchronous_stage_in_order():
    batches = [batch_args(8, seed=s) for s in range(3)]
    stage = OpenCVCrop(SIZE, threads=3)
    try:
        tickets = [stage.submit(*b) for b in batches]  # all in flight at once
        assert len(set(tickets)) == 3
        for t, b in zip(tickets, batches):
            got = stage.collect([np.array([t])] * 8)
            want = stage(*b)
            assert len(got) == 8
            for x, y in zip(got, want):
                np.testing.assert_array_equal(x, y)
        with pytest.raises(RuntimeError, match="collected twice"):
            stage.collect([np.array([tickets[0]])] * 8)
    finally:
        stage.close()


def test_crop_ahead_reports_errors_and_size_mismatches():
    frames, *rest = batch_args(4, seed=2)
    stage = OpenCVCrop(SIZE, threads=2)
    try:
        bad = [np.frombuffer(b"\x89PNG\r\n\x1a\nnot really", np.uint8)] + frames[1:]
        t = stage.submit(bad, *rest)
        with pytest.raises(ValueError, match="could not decode"):
            stage.collect([np.array([t])] * 4)
        t = stage.submit(frames, *rest)
        with pytest.raises(RuntimeError, match="has 4 crops but DALI asked for 3"):
            stage.collect([np.array([t])] * 3)
    finally:
        stage.close()


def test_close_drops_pending_batches():
    stage = OpenCVCrop(SIZE, threads=1)
    t = stage.submit(*batch_args(4, seed=3))
    stage.close()
    with pytest.raises(RuntimeError, match="no batch"):
        stage.collect([np.array([t])] * 4)
    with pytest.raises(RuntimeError, match="closed"):
        stage.submit(*batch_args(4, seed=3))
