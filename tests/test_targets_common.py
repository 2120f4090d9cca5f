"""Shared codec machinery: import without CuPy, keypoint validation and NaN masking, the
torch <-> NumPy bridge, the DARK blur against OpenCV, and the DARK / UDP-DARK decoders
against MMPose's per-keypoint loops (written here, with cv2.GaussianBlur)."""
from __future__ import annotations

import subprocess
import sys
from itertools import product

import numpy as np
import pytest

from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC, UDPHeatmap
from posefeed.targets._common import (broadcast_binary, cv2_gaussian_kernel, modulate_blur,
                                      outer_product_maps, split_keypoints, to_backend)


def test_import_never_needs_cupy():
    code = ("import sys, posefeed.targets, posefeed.targets.kernels; "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_split_keypoints_masks_nan_and_validates():
    k = np.array([[[[np.nan, 3.0, 2.0], [1.0, np.inf, 0.0], [np.nan, np.nan, -1.0], [5.0, 6.0, np.nan]]]],
                 np.float32)
    xp, x, y, v = split_keypoints(k)
    assert xp is np
    np.testing.assert_array_equal(x[0, 0], [0, 0, 0, 5])   # any non-finite coordinate zeroes both
    np.testing.assert_array_equal(y[0, 0], [0, 0, 0, 6])
    np.testing.assert_array_equal(v[0, 0], [0, 0, -1, 0])
    with pytest.raises(ValueError):
        split_keypoints(np.zeros((2, 17, 3), np.float32))
    with pytest.raises(ValueError):
        split_keypoints(np.zeros((2, 1, 17, 2), np.float32))


@pytest.mark.parametrize("codec", [SimCC(), GaussianHeatmap(), UDPHeatmap(),
                                   DLCHeatmap(stride=4, heatmap_size=(48, 64))])
def test_zero_instances_and_all_nan(codec):
    out = codec.encode(np.zeros((2, 0, 17, 3), np.float32))
    assert all(a.dtype == np.float32 and a.shape[0] == 2 for a in out.values())
    nan = np.full((2, 2, 17, 3), np.nan, np.float32)
    nan[..., 2] = 0
    out = codec.encode(nan)
    for a in out.values():
        assert np.isfinite(a).all()
    first = out[codec.output_names[0]]
    assert not first.any()


def test_to_backend_torch_cpu():
    torch = pytest.importorskip("torch")
    t = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4).transpose(1, 2).requires_grad_(True)
    xp, (a,), wrap = to_backend(t)
    assert xp is np and a.shape == (2, 4, 3)
    np.testing.assert_array_equal(a, t.detach().numpy())
    r = wrap(np.ones((2, 2), np.float32))
    assert isinstance(r, torch.Tensor) and r.dtype == torch.float32
    xp, (b,), _ = to_backend(t.detach().to(torch.bfloat16))
    assert b.dtype == np.float32
    # zero copy for a plain contiguous float32 tensor
    c = torch.zeros(3)
    _, (cn,), _ = to_backend(c)
    cn[0] = 5
    assert float(c[0]) == 5


@pytest.mark.parametrize("ksize", [1, 3, 5, 7, 9, 11, 17])
def test_cv2_kernel(ksize):
    cv2 = pytest.importorskip("cv2")
    np.testing.assert_allclose(cv2_gaussian_kernel(ksize), cv2.getGaussianKernel(ksize, 0)[:, 0], rtol=1e-12)


def mmpose_gaussian_blur(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """MMPose's ``gaussian_blur`` (per map, cv2)."""
    import cv2  # noqa: PLC0415

    heatmaps = heatmaps.copy()
    border = (kernel - 1) // 2
    k_, h, w = heatmaps.shape
    for k in range(k_):
        origin_max = np.max(heatmaps[k])
        dr = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
        dr[border:-border, border:-border] = heatmaps[k].copy()
        dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
        heatmaps[k] = dr[border:-border, border:-border].copy()
        heatmaps[k] *= origin_max / np.max(heatmaps[k])
    return heatmaps


def random_maps(k, h, w, seed):
    rng = np.random.default_rng(seed)
    c = GaussianHeatmap(input_size=(w, h), heatmap_size=(w, h), sigma=2.0, unbiased=True)
    kp = np.empty((1, 1, k, 3), np.float32)
    kp[..., 0] = rng.uniform(-2, w + 1, (1, 1, k))
    kp[..., 1] = rng.uniform(-2, h + 1, (1, 1, k))
    kp[..., 2] = 2
    hm = c.encode(kp)["heatmap"][0]
    return (hm * rng.uniform(0.5, 1.0, (k, 1, 1)) + rng.uniform(0, 0.05, hm.shape)).astype(np.float32)


@pytest.mark.parametrize("ksize", [5, 11])
def test_modulate_blur_matches_cv2(ksize):
    pytest.importorskip("cv2")
    hm = random_maps(6, 20, 17, seed=ksize)
    np.testing.assert_allclose(modulate_blur(np, hm, ksize), mmpose_gaussian_blur(hm, ksize), rtol=1e-5, atol=1e-6)


def mmpose_dark(heatmaps: np.ndarray, kernel: int):
    """argmax + MMPose's ``refine_keypoints_dark`` loop, in cells."""
    k_, h, w = heatmaps.shape
    flat = heatmaps.reshape(k_, -1)
    idx = flat.argmax(1)
    kps = np.stack([idx % w, idx // w], -1).astype(np.float32)[None]
    hm = np.log(np.maximum(mmpose_gaussian_blur(heatmaps, kernel), 1e-10))
    for n, k in product(range(1), range(k_)):
        x, y = kps[n, k, :2].astype(int)
        if 1 < x < w - 2 and 1 < y < h - 2:
            dx = 0.5 * (hm[k, y, x + 1] - hm[k, y, x - 1])
            dy = 0.5 * (hm[k, y + 1, x] - hm[k, y - 1, x])
            dxx = 0.25 * (hm[k, y, x + 2] - 2 * hm[k, y, x] + hm[k, y, x - 2])
            dxy = 0.25 * (hm[k, y + 1, x + 1] - hm[k, y - 1, x + 1] - hm[k, y + 1, x - 1] + hm[k, y - 1, x - 1])
            dyy = 0.25 * (hm[k, y + 2, x] - 2 * hm[k, y, x] + hm[k, y - 2, x])
            if dxx * dyy - dxy ** 2 != 0:
                hess = np.array([[dxx, dxy], [dxy, dyy]])
                kps[n, k] += -np.linalg.inv(hess) @ np.array([dx, dy])
    return kps[0]


def mmpose_dark_udp(heatmaps: np.ndarray, kernel: int):
    """argmax + MMPose's ``refine_keypoints_dark_udp``, in cells."""
    k_, h, w = heatmaps.shape
    flat = heatmaps.reshape(k_, -1)
    idx = flat.argmax(1)
    kps = np.stack([idx % w, idx // w], -1).astype(np.float32)[None]
    hm = np.log(np.clip(mmpose_gaussian_blur(heatmaps, kernel), 1e-3, 50.0))
    pad = np.pad(hm, ((0, 0), (1, 1), (1, 1)), mode="edge").flatten()
    index = kps[0, :, 0] + 1 + (kps[0, :, 1] + 1) * (w + 2)
    index += (w + 2) * (h + 2) * np.arange(0, k_)
    index = index.astype(int).reshape(-1, 1)
    i_ = pad[index]
    ix1, ix1_ = pad[index + 1], pad[index - 1]
    iy1, iy1_ = pad[index + w + 2], pad[index - 2 - w]
    ix1y1, ix1_y1_ = pad[index + w + 3], pad[index - w - 3]
    dx, dy = 0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)
    deriv = np.concatenate([dx, dy], axis=1).reshape(k_, 2, 1)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hess = np.concatenate([dxx, dxy, dxy, dyy], axis=1).reshape(k_, 2, 2)
    hess = np.linalg.inv(hess + np.finfo(np.float32).eps * np.eye(2))
    kps[0] -= np.einsum("imn,ink->imk", hess, deriv).squeeze(-1)
    return kps[0]


def test_dark_decoder_matches_mmpose_loop():
    pytest.importorskip("cv2")
    hm = random_maps(12, 24, 18, seed=1)
    c = GaussianHeatmap(input_size=(18, 24), heatmap_size=(18, 24), blur_kernel_size=11)
    dec, _ = c.decode(hm[None], dark=True)
    np.testing.assert_allclose(dec[0], mmpose_dark(hm, 11), atol=1e-4)


def test_udp_decoder_matches_mmpose_loop():
    pytest.importorskip("cv2")
    hm = random_maps(12, 24, 18, seed=2)
    c = UDPHeatmap(input_size=(18, 24), heatmap_size=(18, 24))  # scale 1: cells == pixels
    dec, _ = c.decode(hm[None])
    np.testing.assert_allclose(dec[0], mmpose_dark_udp(hm, 11), atol=1e-4)


def test_broadcast_binary_is_numpys_float32_arithmetic_bit_for_bit():
    """The torch-backed writes equal NumPy's own float32 product / sum exactly, including
    products that underflow to subnormals or to zero (the far tails of a Gaussian)."""
    rng = np.random.default_rng(5)
    ey = np.exp(-rng.uniform(0, 120, (3, 5, 41))).astype(np.float32)  # down to ~1e-52 -> 0
    ex = np.exp(-rng.uniform(0, 120, (3, 5, 37))).astype(np.float32)
    ref = ey[..., :, None] * ex[..., None, :]
    assert (ref == 0).any() and ((ref > 0) & (ref < np.finfo(np.float32).tiny)).any()
    got = outer_product_maps(np, ey, ex)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    a = rng.normal(size=(3, 2, 1, 37)).astype(np.float32)
    b = rng.normal(size=(3, 2, 41, 1)).astype(np.float32)
    out = np.empty((3, 2, 41, 37), np.float32)
    broadcast_binary(np, "add", a, b, out)
    assert np.array_equal(out, a + b)
    # an out larger than the inputs' broadcast shape is filled whole, as NumPy does
    big = np.full((2, 3, 2, 41, 37), 7.0, np.float32)
    broadcast_binary(np, "add", a, b, big)
    assert np.array_equal(big, np.broadcast_to(a + b, big.shape))
    # a non-contiguous destination takes NumPy's own ufunc, same values
    wide = np.zeros((3, 2, 41, 74), np.float32)
    broadcast_binary(np, "mul", a, b, wide[..., ::2])
    assert np.array_equal(wide[..., ::2], a * b) and not wide[..., 1::2].any()
