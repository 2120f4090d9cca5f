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


@pytest.mark.parametrize("channels", [3, 4])
def test_whole_pixel_windows_are_what_warp_affine_gives(channels):
    """A matrix [[1, 0, dx], [0, 1, dy]] with whole-pixel dx, dy is copied, not warped: the
    same bytes as cv2.warpAffine (bilinear, black border), inside, across and outside the
    frame, and the cached frame is never handed out (the dropout hole writes into the crop)."""
    from posefeed.pipelines.opencv_ops import integer_shift

    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (90, 120, channels), dtype=np.uint8)
    keep = frame.copy()
    shifts = [(0, 0), (10, 7), (72, 42), (-5, 3), (100, 80), (-48, -64), (500, 0), (0, 26)]
    n = len(shifts)
    affines = [np.array([[1, 0, dx], [0, 1, dy]], np.float32) for dx, dy in shifts]
    assert [integer_shift(a) for a in affines] == shifts
    assert integer_shift(np.array([[1, 0, 3.5], [0, 1, 2]])) is None
    assert integer_shift(np.array([[1, 1e-3, 3], [0, 1, 2]])) is None
    assert integer_shift(np.array([[1, 0, 3 + 1e-7], [0, 1, 2 - 1e-7]])) == (3, 2)
    # the linear part exactly: 1e-7 off the identity is 5e-4 px at x = 5000 (OpenCV 5 blends
    # with float weights, so the warp and the copy can differ there)
    assert integer_shift(np.array([[1 + 1e-7, 0, 3], [0, 1, 2]])) is None
    assert integer_shift(np.array([[1, 0, 3], [-1e-9, 1, 2]])) is None
    # a NaN / inf entry is no shift (the warp takes it, as before the copy path)
    assert integer_shift(np.array([[1, 0, np.nan], [0, 1, 3]])) is None
    assert integer_shift(np.array([[np.inf, 0, 3], [0, 1, 2]])) is None
    off = (np.zeros(n, bool), np.zeros(n, np.int32), np.zeros(n, np.int32))
    holes = np.tile(np.array([[0, 0, 5, 5]], np.int32), (n, 1))
    luts = list(hsv_luts(np.zeros(n), np.zeros(n), np.zeros(n)))
    stage = OpenCVCrop(SIZE, threads=1)
    try:
        got = stage([frame] * n, affines, luts, *off, np.zeros((n, 4), np.int32))
        holed = stage([frame] * n, affines, luts, *off, holes)
    finally:
        stage.close()
    rgb = frame[..., :3]
    for m, g, h in zip(affines, got, holed):
        want = cv2.warpAffine(rgb, m.astype(np.float64), SIZE,
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        assert g.shape == (SIZE[1], SIZE[0], 3)
        np.testing.assert_array_equal(g, want)
        want[:5, :5] = 0
        np.testing.assert_array_equal(h, want)
    np.testing.assert_array_equal(frame, keep)


def test_whole_pixel_window_of_png_bytes_is_rgb():
    """Encoded frames are decoded to BGR by OpenCV: the copied window comes out RGB."""
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    png = np.frombuffer(cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1], np.uint8)
    m = np.array([[1, 0, 2], [0, 1, -3]], np.float32)
    stage = OpenCVCrop((48, 40), threads=1)
    try:
        got = stage([png], [m], list(hsv_luts(np.zeros(1), np.zeros(1), np.zeros(1))),
                    np.zeros(1, bool), np.zeros(1, np.int32), np.zeros(1, np.int32),
                    np.zeros((1, 4), np.int32))[0]
    finally:
        stage.close()
    want = cv2.warpAffine(frame, m.astype(np.float64), (48, 40),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    np.testing.assert_array_equal(got, want)
