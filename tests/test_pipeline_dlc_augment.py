"""DeepLabCut 3.0.2's default augmentation in posefeed (`AugmentConfig.deeplabcut_default`):
albumentations ``MotionBlur`` kernels against ``cv2.line`` (the rasteriser albumentations
uses) and hand-worked filters on a delta image, ``GaussNoise`` strength against its closed
forms, ``KeypointAwareCrop`` window starts per method on a hand-made keypoint layout, the
uniform affine draws, and the OpenCV stage against the DALI-ops graph. Checked against the
real DeepLabCut / albumentations in tests_integrations/test_dlc_augment.py."""
from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from helpers import batches, make_blob_table
from oracles import albumentations_motion_kernel
from posefeed.pipelines import AugmentConfig, PoseLoader
from posefeed.pipelines.geometry import zoom_rotate_matrices
from posefeed.pipelines.graph import GraphSpec, graph_fields
from posefeed.pipelines.opencv_ops import OpenCVCrop, gauss_noise, hsv_luts
from posefeed.pipelines.params import (CROP_DENSITY, CROP_KEYPOINTS, CROP_UNIFORM, line_kernels,
                                       motion_lines, sample_batch)
from posefeed.pipelines.source import feed_fields

B = 4000
FRAME = (640, 480)
CROP = (448, 448)
#: DeepLabCut's default recipe, each op on (p = 1) or off, nothing else
BARE = AugmentConfig.none().with_(crop_size=CROP, crop_shift=0.0, crop_sampling="keypoints")
V = 12.75 ** 2


def frame_batch(cfg, kp, b=B, sizes=FRAME, input_size=CROP, seed=0):
    """``sample_batch`` in frame mode for ``b`` copies of the keypoints ``kp (N, K, 3)``."""
    kp = np.broadcast_to(np.asarray(kp, dtype=np.float64), (b, *np.shape(kp))).copy()
    k = kp.shape[2]
    return sample_batch(np.random.default_rng([seed, 7]), cfg, "frame", kp,
                        np.zeros((b, 4)), np.tile(sizes, (b, 1)), input_size, np.arange(k),
                        np.ones(k, bool), np.zeros(k, bool))


# -- defaults --------------------------------------------------------------------------------
def test_defaults_leave_rtmpose_and_frame_recipes_unchanged():
    for cfg in (AugmentConfig(), AugmentConfig.rtmpose_stage2(), AugmentConfig.frame_default(),
                AugmentConfig.none()):
        assert cfg.motion_blur_prob == 0 and cfg.noise_prob == 0
        assert cfg.crop_sampling is None and cfg.affine_prob is None
        assert cfg.affine_distribution == "truncnorm"
    assert not GraphSpec.choose("cpu", (64, 64), paths=["a.png"]).motion_noise
    spec = GraphSpec.choose("gpu", (64, 64), paths=["a.jpg"])
    assert not {"motion", "noise_std", "motion_filter", "noise_cv"} & set(graph_fields(spec))


def test_deeplabcut_default_holds_aug_default_yaml():
    """aug_default.yaml: affine p 0.5, rotation 30, scaling [0.5, 1.25]; crop 448x448,
    max_shift 0.1, hybrid; motion_blur: true (p = 0.5); gaussian_noise 12.75 (p = 0.5)."""
    c = AugmentConfig.deeplabcut_default()
    assert c.crop_size == (448, 448) and c.crop_shift == 0.1 and c.crop_sampling == "hybrid"
    assert c.affine_distribution == "uniform" and c.affine_prob == 0.5
    assert c.rotate_factor == 30 and c.scale_range == pytest.approx((1 / 1.25, 2.0))
    assert c.motion_blur_prob == 0.5 and c.motion_blur_sizes == (3, 5, 7)
    assert c.noise_prob == 0.5 and c.noise_var == (0.0, 162.5625)
    assert c.flip_prob == 0 and c.dropout_prob == 0 and c.hue_delta == 0 and c.blur_prob == 0
    with pytest.raises(ValueError, match="crop_sampling"):
        c.with_(crop_sampling="random")
    with pytest.raises(ValueError, match="motion_blur_sizes"):
        c.with_(motion_blur_sizes=(4,))


# -- motion blur -----------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 5, 7])
def test_line_kernels_equal_cv2_line_for_every_end_point_pair(k):
    pts = np.array(list(itertools.product(range(k), repeat=4)))      # x1, y1, x2, y2
    got = line_kernels(pts[:, 0], pts[:, 1], pts[:, 2], pts[:, 3], np.full(len(pts), k))
    for p, g in zip(pts, got):
        np.testing.assert_array_equal(g, albumentations_motion_kernel(*p, k), err_msg=str(p))


def test_motion_end_points_follow_albumentations_draws():
    """ksize uniform over (3, 5, 7); x1, x2 uniform; x1 == x2 with p = 1/k, and then two
    distinct y (a vertical line of >= 2 pixels); otherwise y1, y2 independent uniform."""
    p = frame_batch(BARE.with_(motion_blur_prob=0.5), np.zeros((1, 1, 3)))
    assert abs(p.motion.mean() - 0.5) < 0.03
    nz = (p.motion_kernel > 0).reshape(B, 7, 7)
    side = nz.any(axis=1).sum(axis=1)          # columns the line spans
    rng = np.random.default_rng(3)
    u = rng.random((200_000, 4))
    for k in (3, 5, 7):
        x1, y1, x2, y2 = motion_lines(u, np.full(len(u), k))
        assert set(np.unique(x1)) == set(range(k)) and set(np.unique(y2)) == set(range(k))
        same = x1 == x2
        assert abs(same.mean() - 1 / k) < 0.005
        assert (y1[same] != y2[same]).all()
        assert abs((y1[~same] == y2[~same]).mean() - 1 / k) < 0.005
    sums = p.motion_kernel.sum(axis=(1, 2))
    np.testing.assert_allclose(sums, 1.0, rtol=1e-6)
    assert side.max() <= 7 and nz.sum(axis=(1, 2)).min() >= 1


def delta_frame(size=21, at=(10, 10)):
    f = np.zeros((size, size, 3), np.uint8)
    f[at[1], at[0]] = 255
    return f


def run_stage(frames, motion=None, noise=None, threads=1, size=(21, 21)):
    """The OpenCV stage with an identity warp and nothing else on."""
    n = len(frames)
    ident = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (n, 1, 1))
    zero = np.zeros(n, np.int32)
    stage = OpenCVCrop(size, threads=threads)
    try:
        args = [frames, ident, list(hsv_luts(zero, zero, zero)), np.zeros(n, bool), zero, zero,
                np.zeros((n, 4), np.int32)]
        if motion is not None:
            args += [motion, noise]
        return stage(*args)
    finally:
        stage.close()


def test_motion_blur_of_a_delta_is_the_line_correlated_hand_worked():
    """A 5x5 kernel with the line (0, 0)-(2, 0) (top row, left three) on a delta at (10, 10):
    ``filter2D`` correlates, out(x, y) = sum k(i, j) img(x + j - 3, y + i - 3) on the 7x7
    (kernel row 1, columns 1..3), so x = 10..12, y = 12 get 255 / 3 = 85, nothing else."""
    kernel = line_kernels([0], [0], [2], [0], [5])
    out = run_stage([delta_frame()], motion=list(kernel), noise=[np.zeros(2)])[0]
    want = np.zeros((21, 21, 3), np.uint8)
    want[12, 10:13] = 85
    np.testing.assert_array_equal(out, want)
    # a 7x7 diagonal (0, 0)-(6, 6): the delta spreads along the same diagonal, 255 / 7 each
    out = run_stage([delta_frame()], motion=list(line_kernels([0], [0], [6], [6], [7])),
                    noise=[np.zeros(2)])[0]
    ys, xs = np.nonzero(out[..., 0])
    assert list(zip(xs, ys)) == [(7 + i, 7 + i) for i in range(7)]
    assert (out[ys, xs] == round(255 / 7)).all()


# -- Gaussian noise --------------------------------------------------------------------------
def test_noise_variance_is_uniform_in_the_limit():
    """var ~ U(0, 12.75**2): mean V / 2, std V / sqrt(12); on with p = 0.5."""
    p = frame_batch(BARE.with_(noise_prob=0.5, noise_var=(0.0, V)), np.zeros((1, 1, 3)))
    var = p.noise_std.astype(np.float64) ** 2
    assert var.min() >= 0 and var.max() <= V * (1 + 1e-6)
    assert abs(var.mean() - V / 2) < 3 * V / np.sqrt(12 * B)
    assert abs(var.std() - V / np.sqrt(12)) < 0.05 * V / np.sqrt(12)
    assert abs(p.noise.mean() - 0.5) < 0.03
    # the mixture over images: pixel std sqrt(V / 2) = 12.75 / sqrt(2) = 9.02
    assert abs(np.sqrt(var.mean()) - 12.75 / np.sqrt(2)) < 0.15


def test_gauss_noise_closed_form_truncation_and_seed():
    """On flat 128: out = trunc(128 + n), n ~ N(0, s): mean 127.5, variance s**2 + 1/12 (the
    truncation is a uniform quantiser); the same seed gives the same noise on any thread."""
    flat = np.full((96, 96, 3), 128, np.uint8)
    for s in (3.0, 10.0):
        out = gauss_noise(flat, s, seed=11).astype(np.float64)
        n = out.size
        assert abs(out.mean() - 127.5) < 4 * s / np.sqrt(n) + 0.01
        assert abs(out.var() - (s * s + 1 / 12)) < 5 * s * s * np.sqrt(2 / n)
    a = gauss_noise(flat, 10.0, 5)
    np.testing.assert_array_equal(a, gauss_noise(flat, 10.0, 5))
    assert (a != gauss_noise(flat, 10.0, 6)).mean() > 0.5
    frames = [flat] * 6
    noise = [np.array([10.0, 100 + i]) for i in range(6)]
    zeros = [np.zeros((7, 7), np.float32)] * 6
    one = run_stage(frames, zeros, noise, threads=1, size=(96, 96))
    two = run_stage(frames, zeros, noise, threads=2, size=(96, 96))
    for x, y, i in zip(one, two, range(6)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, gauss_noise(flat, 10.0, 100 + i))


# -- KeypointAwareCrop -----------------------------------------------------------------------
#: a cluster of three keypoints 5 px apart, one far away, one unlabelled (DeepLabCut keeps it
#: as a candidate at (0, 0)); radius 0.1 * min(640, 480) = 48
LAYOUT = np.array([[[100, 100, 2], [105, 100, 2], [100, 105, 2], [500, 400, 2], [0, 0, 0]]],
                  dtype=np.float64)
#: window starts by hand, x1 = int(193 * x / 640), y1 = int(33 * y / 480) (no shift)
STARTS = [(30, 6), (31, 6), (30, 7), (150, 27), (0, 0)]


def start_freq(p) -> np.ndarray:
    return np.array([np.mean((p.crop_start == s).all(axis=1)) for s in STARTS])


def test_keypoints_method_picks_every_candidate_alike():
    p = frame_batch(BARE, LAYOUT)
    assert (p.crop_method == CROP_KEYPOINTS).all()
    np.testing.assert_allclose(start_freq(p), 1 / 5, atol=0.025)
    assert start_freq(p).sum() == 1.0
    # no affine: the crop is a translation by the window start
    got = p.keypoints[:, 0, :4, :2]
    np.testing.assert_allclose(got, LAYOUT[0, :4, :2][None] - p.crop_start[:, None], atol=1e-4)


def test_density_method_weights_by_neighbours():
    """Weights 1 + neighbours within 48 px: 3, 3, 3 (the cluster), 1, 1 -> /11."""
    p = frame_batch(BARE.with_(crop_sampling="density"), LAYOUT)
    assert (p.crop_method == CROP_DENSITY).all()
    np.testing.assert_allclose(start_freq(p), np.array([3, 3, 3, 1, 1]) / 11, atol=0.025)


def test_uniform_and_hybrid_methods():
    """uniform: x1 = int(193 * u) uniform over 0..192, y1 = int(33 * u) over 0..32; hybrid:
    uniform or density, p = 0.5."""
    p = frame_batch(BARE.with_(crop_sampling="uniform"), LAYOUT)
    x1, y1 = p.crop_start.T
    assert x1.min() == 0 and x1.max() == 192 and y1.min() == 0 and y1.max() == 32
    assert abs(x1.mean() - 96) < 3 * 55.7 / np.sqrt(B) and abs(y1.mean() - 16) < 3 * 9.5 / np.sqrt(B)
    p = frame_batch(BARE.with_(crop_sampling="hybrid"), LAYOUT)
    uni = p.crop_method == CROP_UNIFORM
    assert abs(uni.mean() - 0.5) < 0.03 and (p.crop_method[~uni] == CROP_DENSITY).all()
    np.testing.assert_allclose(start_freq(p) / 0.5, np.array([3, 3, 3, 1, 1]) / 11, atol=0.05)
    # nothing labelled: uniform, whatever the method
    none = frame_batch(BARE, LAYOUT * [1, 1, 0], b=50)
    assert (none.crop_method == CROP_UNIFORM).all()


def test_shift_is_one_sided_and_capped_at_0_4():
    """shift = max_shift * U[0, 1) * 448 added (not +-): one keypoint at x = 320, y = 240 with
    max_shift 0.1 -> x1 in int(193 * [320, 364.8) / 640) = 96..110; 0.9 is capped at 0.4."""
    one = np.array([[[320, 240, 2]]], dtype=np.float64)
    p = frame_batch(BARE.with_(crop_shift=0.1), one)
    x1, y1 = p.crop_start.T
    assert x1.min() == 96 and x1.max() == 110 and y1.min() == 16 and y1.max() == 19
    p = frame_batch(BARE.with_(crop_shift=0.9), one)
    x1 = p.crop_start[:, 0]                   # int(193 * [320, 499.2) / 640) = 96..150
    assert x1.min() == 96 and x1.max() == 150


def test_affine_about_the_frame_centre_then_crop():
    """A keypoint at the frame centre stays there under any zoom / rotation; one 100 px to
    its right ends 100 * zoom from it, at the drawn angle."""
    c = ((FRAME[0] - 1) / 2, (FRAME[1] - 1) / 2)
    kp = np.array([[[c[0], c[1], 2], [c[0] + 100, c[1], 2]]])
    cfg = BARE.with_(affine_distribution="uniform", affine_prob=0.5, rotate_factor=30.0,
                     scale_range=(0.8, 2.0))
    p = frame_batch(cfg, kp)
    got = p.keypoints[:, 0, :, :2].astype(np.float64)
    np.testing.assert_allclose(got[:, 0], np.array(c) - p.crop_start, atol=1e-3)
    d = got[:, 1] - got[:, 0]
    np.testing.assert_allclose(np.hypot(*d.T), 100 / p.scale, rtol=1e-5)
    ang = np.rad2deg(np.arctan2(-d[:, 1], d[:, 0]))   # counter-clockwise on screen
    np.testing.assert_allclose(ang, p.rotation, atol=1e-3)


def test_small_frames_are_padded_centred():
    """200x160 frame, 256x256 crop: PadIfNeeded adds (28, 48) on the left / top; the window
    is the padded frame (start 0)."""
    kp = np.array([[[50, 40, 2], [150, 120, 2]]])
    p = frame_batch(BARE.with_(crop_size=(256, 256), crop_sampling="hybrid"), kp, b=200,
                    sizes=(200, 160), input_size=(256, 256))
    assert (p.crop_start == 0).all()
    want = np.broadcast_to(kp[0, :, :2] + [28, 48], (200, 2, 2))
    np.testing.assert_allclose(p.keypoints[:, 0, :, :2], want, atol=1e-4)


def test_zoom_rotate_matrix_hand_worked():
    """Zoom 2, rotation 90 deg about (10, 20): (x, y) -> c + 2 * (dy, -dx)."""
    m = zoom_rotate_matrices(np.array([[10.0, 20.0]]), np.array([2.0]), np.array([90.0]))[0]
    np.testing.assert_allclose(m @ [13, 20, 1], [10, 14, 1], atol=1e-12)
    np.testing.assert_allclose(m @ [10, 25, 1], [20, 20, 1], atol=1e-12)


# -- the uniform affine draws ----------------------------------------------------------------
def test_uniform_affine_draws_as_albumentations():
    """rotation ~ U(-30, 30): std 30 / sqrt(3); zoom 1 / scale ~ U(0.5, 1.25): mean 0.875,
    std 0.75 / sqrt(12); one draw (p = 0.5) for both; the truncated normal stays the default."""
    cfg = BARE.with_(affine_distribution="uniform", affine_prob=0.5, rotate_factor=30.0,
                     scale_range=(0.8, 2.0))
    p = frame_batch(cfg, LAYOUT)
    on = p.rotation != 0
    assert abs(on.mean() - 0.5) < 0.03
    assert ((p.scale != 1) == on).all()
    rot, zoom = p.rotation[on], 1 / p.scale[on]
    assert np.abs(rot).max() <= 30 and np.abs(rot).max() > 29.5
    assert abs(rot.mean()) < 3 * 17.32 / np.sqrt(on.sum())
    assert abs(rot.std() - 30 / np.sqrt(3)) < 0.5
    assert zoom.min() >= 0.5 - 1e-12 and zoom.max() <= 1.25 + 1e-12
    assert abs(zoom.mean() - 0.875) < 3 * 0.2165 / np.sqrt(on.sum())
    assert abs(zoom.std() - 0.75 / np.sqrt(12)) < 0.01


# -- vectorised: the host calls do not grow with the batch ------------------------------------
def count_calls(fn) -> int:
    calls = 0

    def prof(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_deeplabcut_recipe_sampling_is_vectorised():
    cfg = AugmentConfig.deeplabcut_default()
    spec = GraphSpec.choose("cpu", CROP, paths=["a.png"], motion_noise=True)
    fields = graph_fields(spec)[1:]

    def one(b):
        def run():
            p = frame_batch(cfg, LAYOUT, b=b)
            feed_fields(fields, None, np.zeros((b, 1), np.int64), p, np.tile(FRAME, (b, 1)),
                        CROP, False)
        return run

    small, large = count_calls(one(8)), count_calls(one(64))
    assert large - small < 64 - 8, (small, large)


# -- the OpenCV stage against the DALI-ops graph -----------------------------------------------
@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("dlcaug"), n_images=8, k=4, size=(200, 160))


def loader_images(table, cfg, **kw):
    loader = PoseLoader(table, [], mode="frame", input_size=(128, 96), batch_size=8,
                        schedule=cfg, device="cpu", num_threads=1, image_dtype="uint8", seed=4,
                        **kw)
    try:
        img = batches(loader, 1)[0]["image"].numpy().transpose(0, 2, 3, 1).astype(np.float64)
        return img, loader.source.batch(0, 0)[1]
    finally:
        loader.close()


PATHS = [dict(), dict(cache="host"), dict(cpu_backend="dali")]
PATH_IDS = ["cv-png", "cv-cache", "dali-ops"]


def test_motion_blur_same_on_both_paths_and_as_filter2d(table):
    """No affine (the warp is a whole-pixel translation, exact on both paths): the crop
    blurred by ``cv2.filter2D`` with the sampled kernel, on the OpenCV stage and DALI's filter."""
    import cv2

    base = AugmentConfig.deeplabcut_default((128, 96)).with_(affine_prob=0.0, noise_prob=0.0)
    plain, _ = loader_images(table, base.with_(motion_blur_prob=0.0))
    blurred = []
    for kw in PATHS:
        img, p = loader_images(table, base.with_(motion_blur_prob=1.0), **kw)
        assert p.motion.all()
        for b in range(len(img)):
            ref = cv2.filter2D(plain[b].astype(np.uint8), -1, p.motion_kernel[b])
            assert np.abs(img[b] - ref).max() <= 1, (kw, b)
        blurred.append(img)
    assert np.abs(blurred[0] - blurred[2]).max() <= 1
    assert np.abs(blurred[0] - plain).mean() > 0.5


@pytest.mark.parametrize("kw", PATHS, ids=PATH_IDS)
def test_noise_strength_on_both_paths(table, kw):
    """Per sample, on the grey background (60, far from the clip limits): noisy - clean is
    trunc(60 + n) - 60, mean -0.5, variance std**2 + 1/12 (both paths: DALI rounds, so
    posefeed adds mean -0.5 there)."""
    base = AugmentConfig.deeplabcut_default((128, 96)).with_(affine_prob=0.0, motion_blur_prob=0.0)
    clean, _ = loader_images(table, base.with_(noise_prob=0.0), **kw)
    noisy, p = loader_images(table, base.with_(noise_prob=1.0), **kw)
    checked = 0
    for b in range(len(noisy)):
        bg = (clean[b] == 60).all(axis=2)
        if bg.sum() < 2000 or p.noise_std[b] < 2:
            continue
        r = (noisy[b] - clean[b])[bg]
        s2 = float(p.noise_std[b]) ** 2 + 1 / 12
        n = r.size
        assert abs(r.mean() + 0.5) < 5 * np.sqrt(s2 / n), (b, r.mean())
        assert abs(r.var() - s2) < 6 * s2 * np.sqrt(2 / n), (b, r.var(), s2)
        checked += 1
    assert checked >= 4


def test_a_smaller_input_resizes_the_window():
    """Crop 448, input 224: the window is halved about its centre, 223.5 -> 111.5, so
    x_in = 0.5 * (x - x1) - 0.25."""
    p = frame_batch(BARE, LAYOUT, b=200, input_size=(224, 224))
    want = 0.5 * (LAYOUT[0, :4, :2][None] - p.crop_start[:, None]) - 0.25
    np.testing.assert_allclose(p.keypoints[:, 0, :4, :2], want, atol=1e-4)


def test_visibility_follows_deeplabcut_window_rule():
    """A keypoint 0.2 px left of the window (x = -0.2) is dropped (DeepLabCut NaNs anything
    outside 0 <= x < 448); posefeed's own rule [-0.5, w - 0.5) would keep it. Anchor (100, 100)
    -> x1 = int(193 * 100 / 640) = 30, so the keypoint at x = 29.8 lands at -0.2."""
    kp = np.array([[[100, 100, 2], [29.8, 100, 2]]], dtype=np.float64)
    p = frame_batch(BARE, kp, b=400)
    on_a = p.crop_start[:, 0] == 30
    assert on_a.any() and (~on_a).any()
    np.testing.assert_allclose(p.keypoints[on_a, 0, 1, 0], -0.2, atol=1e-4)
    assert (p.keypoints[on_a, 0, 1, 2] == 0).all() and (p.keypoints[on_a, 0, 0, 2] == 2).all()
    assert (p.keypoints[~on_a, 0, :, 2] == 2).all()     # x1 = int(193 * 29.8 / 640) = 8
