"""`posefeed.pipelines.pixel_noise`: albumentations ``GaussNoise`` drawn in integers.

Oracles: the identity ``trunc(clip(x + n, 0, 255)) == clip(x + floor(n), 0, 255)`` on float
draws (albumentations' formula against posefeed's), the closed-form probabilities
``Phi((k + 1) / s) - Phi(k / s)`` of ``floor(n)`` (from ``math.erf``), the alias table's
exact pmf counted bucket by bucket, and Monte Carlo moments and clipping frequencies against
those closed forms; the compiled kernel against the NumPy version byte for byte."""
from __future__ import annotations

import math

import numpy as np
import pytest

from posefeed.pipelines import pixel_noise as pn
from posefeed.pipelines.pixel_noise import gauss_noise

STDS = (0.2, 3.0, 12.75, 40.0)


def floor_pmf(s: float, ks: np.ndarray) -> np.ndarray:
    """P(floor(n) = k), n ~ N(0, s), from the error function."""
    phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # noqa: E731
    return np.array([phi((k + 1) / s) - phi(k / s) for k in ks])


def test_albumentations_formula_is_clip_of_floor():
    """albumentations: ``clip(float(x) + n, 0, 255).astype(uint8)``; posefeed's reduction."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, 200_000).astype(np.uint8)
    n = rng.normal(0.0, 40.0, x.size)
    albu = np.clip(x.astype(np.float32) + n, 0, 255).astype(np.uint8)
    ours = np.clip(x.astype(np.int64) + np.floor(n).astype(np.int64), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(albu, ours)


@pytest.mark.parametrize("s", STDS)
@pytest.mark.parametrize("kernel", ["numpy", "numba"])
def test_masses_are_the_closed_form_to_2_pow_minus_32(s, kernel):
    if kernel == "numba":
        pytest.importorskip("numba")
    mass = pn.floor_noise_masses(s, kernel)
    assert mass.dtype == np.int64 and mass.shape == (512,)
    assert mass.sum() == 2 ** 32 and mass.min() >= 0
    ks = np.arange(-256, 256)
    want = floor_pmf(s, ks)
    # the end buckets take the tails (K <= -256 and K >= 255 give the same pixels)
    want[0] = 0.5 * (1.0 + math.erf(-255 / s / math.sqrt(2.0)))
    want[-1] = 1.0 - 0.5 * (1.0 + math.erf(255 / s / math.sqrt(2.0)))
    np.testing.assert_allclose(mass / 2.0 ** 32, want, rtol=0, atol=1.5 * 2.0 ** -32)


@pytest.mark.parametrize("s", STDS)
@pytest.mark.parametrize("kernel", ["numpy", "numba"])
def test_alias_table_draws_each_k_with_its_mass_exactly(s, kernel):
    """Sum over the 512 buckets: ``thr`` of ``2**23`` remainders go to the bucket's own
    index, the rest to its alias; in integers, that is the masses exactly."""
    if kernel == "numba":
        pytest.importorskip("numba")
    thr, pair = pn.alias_table(s, kernel)
    assert ((0 <= thr) & (thr <= 2 ** 23)).all()
    assert (pair[0::2] == np.arange(512)).all() and ((0 <= pair) & (pair < 512)).all()
    got = np.zeros(512, np.int64)
    np.add.at(got, pair[0::2], thr.astype(np.int64))
    np.add.at(got, pair[1::2], 2 ** 23 - thr.astype(np.int64))
    np.testing.assert_array_equal(got, pn.floor_noise_masses(s, kernel))


@pytest.mark.parametrize("shape", [(1,), (7,), (2047,), (2048,), (3, 1001, 3), (96, 97, 3)])
def test_kernel_and_numpy_give_the_same_bytes(shape):
    pytest.importorskip("numba")
    img = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    for s, seed in ((0.5, 0), (12.75, 123456789), (40.0, 2 ** 31 - 1)):
        a = gauss_noise(img, s, seed, kernel="numba")
        b = gauss_noise(img, s, seed, kernel="numpy")
        assert a.shape == img.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("s", (0.7, 5.0, 12.75))
def test_flat_image_frequencies_and_moments_match_the_closed_form(s):
    """On flat 128 (no clipping within 8 s): ``out - 128`` is ``floor(n)``: its frequencies
    against the closed form (a chi-square bound), mean ``E floor(n)`` ~ -1/2 and variance
    ``s**2 + 1/12`` (the floor is a uniform quantiser)."""
    flat = np.full((256, 256, 3), 128, np.uint8)
    d = gauss_noise(flat, s, seed=2024).astype(np.int64) - 128
    n = d.size
    ks = np.arange(d.min(), d.max() + 1)
    p = floor_pmf(s, ks)
    counts = np.array([(d == k).sum() for k in ks])
    keep = p * n >= 20                       # cells with enough expected counts
    chi2 = (((counts - n * p) ** 2) / (n * p))[keep].sum()
    dof = keep.sum() - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (chi2, dof)
    mean = (ks * p).sum()
    var = ((ks - mean) ** 2 * p).sum()
    assert abs(mean + 0.5) < 0.01 and abs(var - (s * s + 1 / 12)) < 0.02 * s * s + 0.01
    assert abs(d.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(d.var() - var) < 6 * var * math.sqrt(2 / n)


def test_clipping_at_both_ends_as_albumentations():
    """x = 3: P(out = 0) = P(3 + floor(n) <= 0) = Phi(-2 / s); x = 250: P(out = 255) =
    P(floor(n) >= 5) = 1 - Phi(5 / s)."""
    s = 10.0
    phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # noqa: E731
    for x, value, p in ((3, 0, phi(-2 / s)), (250, 255, 1 - phi(5 / s))):
        out = gauss_noise(np.full((200, 200, 3), x, np.uint8), s, seed=x)
        n = out.size
        assert abs((out == value).mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
        assert out.min() >= 0 and out.max() <= 255


def test_a_pure_function_of_the_seed_with_independent_values():
    img = np.random.default_rng(2).integers(0, 256, (64, 80, 3)).astype(np.uint8)
    a = gauss_noise(img, 10.0, 5)
    np.testing.assert_array_equal(a, gauss_noise(img.copy(), 10.0, 5))
    assert (a != gauss_noise(img, 10.0, 6)).mean() > 0.9
    # noise of neighbouring values (pixels, channels) and of seeds 5 and 6 uncorrelated
    flat = np.full((128, 128, 3), 128, np.uint8)
    d = gauss_noise(flat, 10.0, 5).astype(np.float64) - 127.5
    e = gauss_noise(flat, 10.0, 6).astype(np.float64) - 127.5
    bound = 5 / math.sqrt(d.size)
    for x, y in ((d[..., 0], d[..., 1]), (d[:, :-1], d[:, 1:]), (d[:-1], d[1:]), (d, e)):
        assert abs(np.corrcoef(x.ravel(), y.ravel())[0, 1]) < bound
    # a view of a larger array gives the noise of its contiguous copy
    big = np.random.default_rng(3).integers(0, 256, (64, 160, 3)).astype(np.uint8)
    np.testing.assert_array_equal(gauss_noise(big[:, ::2], 10.0, 5),
                                  gauss_noise(np.ascontiguousarray(big[:, ::2]), 10.0, 5))


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="uint8"):
        gauss_noise(np.zeros((4, 4, 3), np.float32), 10.0, 1)
    with pytest.raises(ValueError, match="std must be > 0"):
        gauss_noise(np.zeros((4, 4, 3), np.uint8), 0.0, 1)


def test_stage_noise_is_the_kernel_with_numba_and_opencv_without(monkeypatch):
    img = np.random.default_rng(6).integers(0, 256, (40, 30, 3)).astype(np.uint8)
    if pn.numba_or_none() is not None:
        np.testing.assert_array_equal(pn.stage_gauss_noise(img, 7.0, 3),
                                      gauss_noise(img, 7.0, 3, kernel="numba"))
    monkeypatch.setattr(pn, "numba_or_none", lambda: None)
    np.testing.assert_array_equal(pn.stage_gauss_noise(img, 7.0, 3),
                                  pn.gauss_noise_opencv(img, 7.0, 3))


@pytest.mark.parametrize("s", (3.0, 12.75))
def test_opencv_fallback_has_the_same_closed_form(s):
    """``cv2.randn`` + float32 add, clip, truncation: on flat 128 the moments of
    ``floor(n)`` (mean ~ -1/2, variance ``s**2 + 1/12``), clipping at x = 3 as
    ``Phi(-2 / s)``; reproducible per seed."""
    phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # noqa: E731
    d = pn.gauss_noise_opencv(np.full((256, 256, 3), 128, np.uint8), s, 9).astype(np.float64) - 128
    ks = np.arange(-int(9 * s) - 1, int(9 * s) + 1)
    p = floor_pmf(s, ks)
    mean = (ks * p).sum()
    var = ((ks - mean) ** 2 * p).sum()
    assert abs(d.mean() - mean) < 5 * math.sqrt(var / d.size)
    assert abs(d.var() - var) < 6 * var * math.sqrt(2 / d.size)
    out = pn.gauss_noise_opencv(np.full((200, 200, 3), 3, np.uint8), s, 4)
    q = phi(-2 / s)
    assert abs((out == 0).mean() - q) < 5 * math.sqrt(q * (1 - q) / out.size)
    np.testing.assert_array_equal(out, pn.gauss_noise_opencv(np.full((200, 200, 3), 3, np.uint8), s, 4))
