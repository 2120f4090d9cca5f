"""CuPy paths (skipped without CUDA): the fused kernels equal the vectorised CuPy
expressions (1e-6), CuPy in -> CuPy out, the CuPy results equal the NumPy ones, decoders on
CuPy arrays and CUDA torch tensors, and dali_function on CuPy samples."""
from __future__ import annotations

import numpy as np
import pytest

from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC, UDPHeatmap

pytestmark = pytest.mark.gpu


def random_keypoints(b, n, k, w, h, seed=0):
    rng = np.random.default_rng(seed)
    kps = np.empty((b, n, k, 3), np.float32)
    kps[..., 0] = rng.uniform(-0.2 * w, 1.2 * w, (b, n, k))
    kps[..., 1] = rng.uniform(-0.2 * h, 1.2 * h, (b, n, k))
    kps[..., 2] = rng.choice([-1, 0, 1, 2], (b, n, k), p=[0.1, 0.1, 0.2, 0.6])
    kps[0, 0, 0, :2] = np.nan
    kps[0, 0, 0, 2] = 0
    return kps


HEATMAP_CODECS = [
    lambda uk: GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64), use_kernel=uk),
    lambda uk: GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64), unbiased=True, use_kernel=uk),
    lambda uk: GaussianHeatmap(input_size=(99, 70), heatmap_size=(33, 35), sigma=1.5, use_kernel=uk),
    lambda uk: UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64), use_kernel=uk),
    lambda uk: DLCHeatmap(stride=2, heatmap_size=(96, 128), use_kernel=uk),
    lambda uk: DLCHeatmap(stride=3, heatmap_size=(64, 43), mode="plateau", use_kernel=uk),
    lambda uk: DLCHeatmap(stride=2.5, heatmap_size=(40, 30), locref=False, use_kernel=uk),
]


@pytest.mark.parametrize("make", HEATMAP_CODECS)
@pytest.mark.parametrize("n", [1, 3])
def test_fused_kernel_equals_vectorised(make, n):
    cp = pytest.importorskip("cupy")
    fused, vect = make(True), make(False)
    w, h = getattr(fused, "input_size", None) or (fused.heatmap_size[0] * fused.stride,
                                                  fused.heatmap_size[1] * fused.stride)
    kps = random_keypoints(4, n, 17, w, h, seed=n)
    a = fused.encode(cp.asarray(kps))
    b = vect.encode(cp.asarray(kps))
    c = vect.encode(kps)  # NumPy
    assert list(a) == list(b) == list(fused.output_names)
    for name in fused.output_names:
        assert isinstance(a[name], cp.ndarray) and a[name].dtype == cp.float32
        np.testing.assert_allclose(cp.asnumpy(a[name]), cp.asnumpy(b[name]), atol=1e-6, rtol=0, err_msg=name)
        np.testing.assert_allclose(cp.asnumpy(b[name]), c[name], atol=1e-6, rtol=0, err_msg=name)


def test_simcc_cupy_equals_numpy():
    cp = pytest.importorskip("cupy")
    c = SimCC()
    kps = random_keypoints(8, 2, 17, 192, 256)
    a = c.encode(cp.asarray(kps))
    b = c.encode(kps)
    for name in c.output_names:
        assert isinstance(a[name], cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(a[name]), b[name], atol=1e-6, rtol=0)


def test_decoders_on_cupy_and_cuda_torch():
    cp = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    kps = random_keypoints(2, 1, 5, 192, 256)
    kps[..., 2] = 2
    kps[..., 0] = np.clip(kps[..., 0], 20, 170)
    kps[..., 1] = np.clip(kps[..., 1], 20, 230)
    for codec in (GaussianHeatmap(), UDPHeatmap(), DLCHeatmap(stride=4, heatmap_size=(48, 64))):
        enc = codec.encode(kps)
        args = [enc["heatmap"]] + ([enc["locref"]] if "locref" in enc else [])
        ref_kp, ref_score = codec.decode(*args)
        got_kp, got_score = codec.decode(*[cp.asarray(a) for a in args])
        assert isinstance(got_kp, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(got_kp), ref_kp, atol=1e-4)
        t_kp, t_score = codec.decode(*[torch.from_numpy(a).cuda() for a in args])
        assert isinstance(t_kp, torch.Tensor) and t_kp.is_cuda
        np.testing.assert_allclose(t_kp.cpu().numpy(), ref_kp, atol=1e-4)
        np.testing.assert_allclose(t_score.cpu().numpy(), ref_score, atol=1e-6)
    s = SimCC()
    enc = s.encode(kps)
    t_kp, _ = s.decode(torch.from_numpy(enc["x_labels"]).cuda(), torch.from_numpy(enc["y_labels"]).cuda())
    assert t_kp.is_cuda


def test_dali_function_with_cupy_samples():
    cp = pytest.importorskip("cupy")
    codec = DLCHeatmap(stride=4, heatmap_size=(16, 16))
    rng = np.random.default_rng(3)
    samples = [cp.asarray(rng.uniform(0, 64, (n, 3, 3)).astype(np.float32)) for n in (2, 0, 1)]
    for s in samples:
        if s.shape[0]:
            s[..., 2] = 2
    outs = codec.dali_function()(samples)
    assert all(isinstance(a, cp.ndarray) for per in outs for a in per)
    padded = np.zeros((3, 2, 3, 3), np.float32)
    for i, s in enumerate(samples):
        padded[i, : s.shape[0]] = cp.asnumpy(s)
    ref = codec.encode(padded)
    for name, per in zip(codec.output_names, outs):
        for i, a in enumerate(per):
            np.testing.assert_allclose(cp.asnumpy(a), ref[name][i], atol=1e-6)


@pytest.mark.parametrize("make", HEATMAP_CODECS)
@pytest.mark.parametrize("use_kernel", [True, False])
def test_cupy_out_buffers_and_encoder(make, use_kernel):
    """``encode(out=)`` (fused kernel and vectorised CuPy) and ``encoder()`` on CuPy write
    every element of NaN-filled buffers and equal the NumPy results over several batches."""
    cp = pytest.importorskip("cupy")
    codec = make(use_kernel)
    w, h = getattr(codec, "input_size", None) or (codec.heatmap_size[0] * codec.stride,
                                                  codec.heatmap_size[1] * codec.stride)
    bufs = {name: cp.full(shape, cp.nan, dtype=cp.float32) for name, shape in codec.output_shapes(3, 17).items()}
    enc = codec.encoder()
    for seed in range(3):
        kps = random_keypoints(3, 2, 17, w, h, seed=10 + seed)
        ref = codec.encode(kps)  # NumPy
        got = codec.encode(cp.asarray(kps), out=bufs)
        got_enc = enc(cp.asarray(kps))
        for name in codec.output_names:
            assert got[name] is bufs[name]
            np.testing.assert_allclose(cp.asnumpy(got[name]), ref[name], atol=1e-6, rtol=0, err_msg=name)
            np.testing.assert_allclose(cp.asnumpy(got_enc[name]), ref[name], atol=1e-6, rtol=0, err_msg=name)
