"""albumentations ``GaussNoise`` on uint8 images, drawn directly in integers.

albumentations 1.4.3 (DeepLabCut 3's) adds ``n ~ N(0, std)`` in float64 to the uint8 image
``x`` and returns ``trunc(clip(x + n, 0, 255))``. For an integer ``x`` that is exactly
``clip(x + floor(n), 0, 255)`` (``x + n >= 0`` truncates to ``x + floor(n)``; below 0 both
give 0, above 255 both 255), so only ``K = floor(n)`` matters, an integer with

    P(K = k) = Phi((k + 1) / std) - Phi(k / std)        (Phi: the standard normal CDF),

``K`` in ``[-256, 255]`` being all a uint8 needs (the end values take the tails: ``K <= -256``
and ``K >= 255`` give the same pixels as ``-256`` and ``255``). `gauss_noise` draws ``K``
per pixel and channel from a Walker alias table (Vose's construction in integers: 512
buckets of ``2**23``, the masses ``round(2**32 P(K <= k))`` differenced, so the sampler's
probabilities are those masses over ``2**32`` exactly, each within ``2**-32`` of the closed
form) and adds it through a clipping table: no floats and no data-dependent branches (a
select on random data compiled to a branch cost 2x), 1.2-1.5x less CPU than ``cv2.randn`` +
float add + clip + cast on a 448x448x3 crop (docs/benchmarks.md).

The 32-bit uniforms come from a counter-based generator: value ``i`` of a sample (C order)
gets the high 32 bits of ``splitmix64(key + (i + 1) * 0x9E3779B97F4A7C15)`` (Steele, Lea &
Flood 2014: the splitmix64 finaliser on a Weyl sequence; ``key`` = splitmix64 of the
sample's seed); its top 9 bits pick the bucket, the low 23 decide against the bucket's
threshold. So the noise is a pure function of (seed, image shape), the same on any thread,
and the compiled kernel (numba, when it imports) and the NumPy version give the same bytes.
"""
from __future__ import annotations

import math
from functools import cache

import numpy as np

from posefeed.targets._numba import cpu_kernel, numba_or_none, use_kernel

#: the Weyl increment and the finaliser's multipliers (splitmix64)
GOLDEN = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
MASK64 = (1 << 64) - 1
#: ``K`` in ``[K_MIN, K_MIN + BUCKETS)``; bucket ``j`` is ``K = j + K_MIN`` or its alias
K_MIN, BUCKETS, BUCKET_BITS = -256, 512, 23
#: ``clip(v + K_MIN, 0, 255)`` for ``v = x + j`` in ``[0, 255 + BUCKETS)``
CLIP = np.clip(np.arange(K_MIN, 256 + BUCKETS - 1 + K_MIN), 0, 255).astype(np.uint8)
#: values per pass of the kernel (the uniforms of a chunk stay in L1)
CHUNK = 2048


def splitmix64(z: int) -> int:
    """Steele, Lea & Flood's splitmix64 finaliser on a 64-bit integer."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def noise_key(seed: int) -> int:
    """The 64-bit generator key of a sample's seed."""
    return splitmix64(int(seed) * GOLDEN + 1)


def _masses(std, mass):  # pragma: no cover - also compiled by numba
    """Fill ``mass`` (BUCKETS,) int64 with ``2**32`` times the probabilities of ``K = K_MIN
    + j``: the closed form's CDF ``P(K <= k) = Phi((k + 1) / std)`` rounded at each ``k`` and
    differenced (so the sum is exactly ``2**32``); beyond +-8 std (CDF < 2**-48 from 0 or 1)
    the rounded CDF is 0 or 2**32 without computing it."""
    n = mass.size
    prev = np.int64(0)
    for j in range(n):
        k = j - 256                             # K_MIN
        z = (k + 1) / std
        if j == n - 1 or z > 8.0:
            c = np.int64(1) << np.int64(32)
        elif z < -8.0:
            c = np.int64(0)
        else:
            c = np.int64(math.floor(0.5 * math.erfc(-z / math.sqrt(2.0)) * 4294967296.0 + 0.5))
        mass[j] = c - prev
        prev = c


def _alias(mass, thr, pair):  # pragma: no cover - also compiled by numba
    """Vose's alias construction in integers: ``mass`` (BUCKETS,) int64 summing to
    ``BUCKETS << BUCKET_BITS``; fills ``thr`` (BUCKETS,) int32 and ``pair`` (2 BUCKETS,) int32
    so that a uniform ``(j, t)`` (bucket, 23-bit remainder) gives index
    ``pair[2 j + (t >= thr[j])]``, each index with probability ``mass / 2**32`` exactly."""
    n = mass.size
    cap = np.int64(1) << np.int64(23)           # BUCKET_BITS
    m = mass.copy()
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    ns = 0
    nl = 0
    for j in range(n):
        pair[2 * j] = j
        pair[2 * j + 1] = j
        thr[j] = cap
        if m[j] < cap:
            small[ns] = j
            ns += 1
        else:
            large[nl] = j
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        nl -= 1
        g = large[nl]
        thr[s] = m[s]
        pair[2 * s + 1] = g
        m[g] -= cap - m[s]
        if m[g] < cap:
            small[ns] = g
            ns += 1
        else:
            large[nl] = g
            nl += 1


def _noise_loop(src, dst, key, thr, pair, clip, buf):  # pragma: no cover - compiled by numba
    """``dst = clip(src + K)`` over flat uint8 arrays, ``buf`` a (CHUNK,) uint32 scratch."""
    n = src.size
    chunk = buf.size
    low = np.uint32((1 << 23) - 1)              # BUCKET_BITS
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        for i in range(c0, c1):                 # the uniforms (vectorised by LLVM)
            z = key + np.uint64(i + 1) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            buf[i - c0] = np.uint32((z ^ (z >> np.uint64(31))) >> np.uint64(32))
        for i in range(c0, c1):                 # the alias draw and the clipped add
            u = buf[i - c0]
            j = np.int32(u >> np.uint32(23))
            k = pair[2 * j + np.int32(np.int32(u & low) >= thr[j])]
            dst[i] = clip[np.int32(src[i]) + k]


@cache
def _kernels() -> tuple:
    """The compiled ``(_masses, _alias, _noise_loop)`` (numba imported on first use: compiling
    them takes ~2.3 s the first time, ~0.6 s from numba's disk cache; measured at load 6)."""
    return cpu_kernel(_masses), cpu_kernel(_alias), cpu_kernel(_noise_loop)


def floor_noise_masses(std: float, kernel: str = "auto") -> np.ndarray:
    """``(BUCKETS,)`` int64: ``2**32`` times the probabilities of ``K = K_MIN + j`` (see
    `_masses`; they sum to exactly ``2**32``)."""
    std = float(std)
    if not std > 0:
        raise ValueError(f"the noise std must be > 0, got {std}")
    mass = np.empty(BUCKETS, np.int64)
    (_kernels()[0] if use_kernel(kernel) else _masses)(std, mass)
    return mass


def alias_table(std: float, kernel: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(thr, pair)`` of ``K = floor(N(0, std))`` (see `_alias`; index ``j`` is ``K =
    j + K_MIN``)."""
    thr = np.empty(BUCKETS, np.int32)
    pair = np.empty(2 * BUCKETS, np.int32)
    (_kernels()[1] if use_kernel(kernel) else _alias)(floor_noise_masses(std, kernel), thr, pair)
    return thr, pair


def _uniforms(key: int, n: int) -> np.ndarray:
    i = np.arange(1, n + 1, dtype=np.uint64)
    z = np.uint64(key) + i * np.uint64(GOLDEN)                 # wraps modulo 2**64
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return ((z ^ (z >> np.uint64(31))) >> np.uint64(32)).astype(np.uint32)


def gauss_noise(image: np.ndarray, std: float, seed: int, kernel: str = "auto") -> np.ndarray:
    """albumentations ``GaussNoise(per_channel=True)`` with a given ``std`` (uint8 units) on
    a uint8 image of any shape: ``clip(image + floor(n), 0, 255)``, ``n ~ N(0, std)``
    independent per element, a pure function of ``seed`` (see the module docstring).
    ``kernel``: "auto" (numba when it imports), "numba" or "numpy" (the same bytes)."""
    if image.dtype != np.uint8:
        raise TypeError(f"gauss_noise takes uint8 images, got {image.dtype}")
    compiled = use_kernel(kernel)
    thr, pair = alias_table(std, "numba" if compiled else "numpy")
    key = noise_key(seed)
    src = np.ascontiguousarray(image)
    if not compiled:
        u = _uniforms(key, src.size)
        j = (u >> np.uint32(BUCKET_BITS)).astype(np.int64)
        k = pair[2 * j + ((u & np.uint32((1 << BUCKET_BITS) - 1)) >= thr[j])]
        return CLIP[src.reshape(-1).astype(np.int64) + k].reshape(src.shape)
    dst = np.empty_like(src)
    _kernels()[2](src.reshape(-1), dst.reshape(-1), np.uint64(key), thr, pair, CLIP,
                  np.empty(CHUNK, np.uint32))
    return dst


def gauss_noise_opencv(image: np.ndarray, std: float, seed: int) -> np.ndarray:
    """The same distribution with OpenCV's generator (other bytes): ``n`` from ``cv2.randn``
    after ``cv2.setRNGSeed(seed)`` (per thread: the same seed gives the same noise on any
    thread), ``trunc(clip(image + n, 0, 255))`` in float32, as albumentations computes it."""
    import cv2  # noqa: PLC0415 - OpenCV only where it runs

    cv2.setRNGSeed(int(seed))
    noise = np.empty(image.shape, dtype=np.float32)
    # one channel (a scalar std would only reach the first channel of a 3-channel Mat)
    cv2.randn(noise.reshape(-1, 1), 0.0, float(std))
    noise += image
    np.clip(noise, 0.0, 255.0, out=noise)
    return noise.astype(np.uint8)


def stage_gauss_noise(image: np.ndarray, std: float, seed: int) -> np.ndarray:
    """The OpenCV stage's noise: `gauss_noise`'s compiled kernel when numba imports, else
    `gauss_noise_opencv` (its NumPy version is 5-20x slower than ``cv2.randn``; the two have
    the same distribution, a seed gives other bytes)."""
    if numba_or_none() is not None:
        return gauss_noise(image, std, seed, kernel="numba")
    return gauss_noise_opencv(image, std, seed)
