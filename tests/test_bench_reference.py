"""The reference CPU loader: geometry, photometric helpers and targets against closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from posefeed.pipelines.augment import AugmentConfig  # noqa: E402
from posefeed.bench.reference import (  # noqa: E402
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    ReferenceTopdownDataset,
    affine_matrix,
    bbox_center_scale,
    coarse_dropout,
    fix_aspect,
    half_body_split,
    hsv_jitter,
    invert_affine,
    make_reference_loader,
    msra_heatmap,
    normalize_chw,
    simcc_targets,
    truncnorm,
)

IN = (48, 64)  # input (w, h)


def _apply(m, xy):
    return np.asarray(xy, float) @ m[:, :2].T + m[:, 2]


def test_bbox_center_scale_and_aspect():
    c, s = bbox_center_scale(np.array([10.0, 20.0, 40.0, 100.0]), padding=1.25)
    np.testing.assert_allclose(c, [30.0, 70.0])
    np.testing.assert_allclose(s, [50.0, 125.0])
    np.testing.assert_allclose(fix_aspect(s, 0.75), [93.75, 125.0])
    np.testing.assert_allclose(fix_aspect(np.array([300.0, 100.0]), 0.75), [300.0, 400.0])


def test_affine_matrix_closed_form():
    m = affine_matrix(np.array([100.0, 50.0]), np.array([96.0, 128.0]), 0.0, IN)
    # centre -> input centre, box edges -> input edges (scale w / box_w = 0.5)
    np.testing.assert_allclose(_apply(m, [[100, 50]]), [[23.5, 31.5]])
    np.testing.assert_allclose(_apply(m, [[100 - 48, 50 - 64], [100 + 48, 50 + 64]]),
                               [[-0.5, -0.5], [47.5, 63.5]])
    # +90 degrees (MMPose sign): a point above the centre lands left of the input centre
    r = affine_matrix(np.array([100.0, 50.0]), np.array([96.0, 128.0]), 90.0, IN)
    np.testing.assert_allclose(_apply(r, [[100, 40]]), [[23.5 - 5.0, 31.5]], atol=1e-9)
    np.testing.assert_allclose(_apply(invert_affine(r), _apply(r, [[7.0, 9.0]])), [[7.0, 9.0]])


def test_truncnorm_range_and_spread():
    z = truncnorm(np.random.default_rng(0), 20000)
    assert z.shape == (20000,) and np.abs(z).max() <= 1.0
    assert abs(z.mean()) < 0.02 and 0.5 < z.std() < 0.6  # std of N(0,1) cut at +-1 is 0.54


def _one_pixel_dataset(tmp_path, augment, codecs=("simcc", "heatmap"), flip_pairs=((0, 1),)):
    """A 100x80 black image with one white pixel at (30, 40) = keypoint 0, and a box whose
    padded size is exactly the input size (scale factor 1, integer shift: exact warp)."""
    img = np.zeros((80, 100, 3), np.uint8)
    img[40, 30] = 255
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), img)
    k = 4
    kp = np.zeros((1, k, 3), np.float32)
    kp[0, 0] = (30, 40, 2)
    kp[0, 1] = (40, 20, 2)
    kp[0, 2] = (500, 500, 2)  # far outside: leaves the crop
    # box centre (30.5, 40.5), size (38.4, 51.2) * 1.25 = (48, 64)
    bbox = np.array([[30.5 - 19.2, 40.5 - 25.6, 38.4, 51.2]])
    return ReferenceTopdownDataset([str(path)], bbox, kp, flip_pairs=flip_pairs, input_size=IN,
                                   codecs=codecs, augment=augment)


def test_dataset_geometry_and_targets_closed_form(tmp_path):
    ds = _one_pixel_dataset(tmp_path, AugmentConfig.none())
    s = ds[0]
    assert s["image"].shape == (3, 64, 48) and s["image"].dtype == np.float32
    # keypoint (30, 40) -> (30 - 30.5 + 23.5, 40 - 40.5 + 31.5) = (23, 31)
    np.testing.assert_allclose(s["keypoints"][0, 0], [23.0, 31.0, 2.0], atol=1e-5)
    assert s["keypoints"][0, 2, 2] == 0.0  # left the crop -> v = 0
    red = s["image"][0]
    assert np.unravel_index(np.argmax(red), red.shape) == (31, 23)
    np.testing.assert_allclose(red[31, 23], (255 - IMAGENET_MEAN_RGB[0]) / IMAGENET_STD_RGB[0], rtol=1e-5)
    np.testing.assert_allclose(red[0, 0], -IMAGENET_MEAN_RGB[0] / IMAGENET_STD_RGB[0], rtol=1e-5)
    # affine maps input pixels back to image pixels
    np.testing.assert_allclose(_apply(s["affine"].astype(float), [[23.0, 31.0]]), [[30.0, 40.0]], atol=1e-4)
    # SimCC: peak bins at round(x * 2); weight = visible and in range
    assert np.argmax(s["simcc/keypoint_weight"]) == 0
    assert np.argmax(s["x_labels"][0]) == 46 and np.argmax(s["y_labels"][0]) == 62
    np.testing.assert_allclose(s["simcc/keypoint_weight"], [1, 1, 0, 0])
    # heatmap (stride 4): peak at (int(23/4 + .5), int(31/4 + .5)) = (6, 8)
    hm = s["heatmap"][0]
    assert np.unravel_index(np.argmax(hm), hm.shape) == (8, 6) and hm.max() == 1.0
    np.testing.assert_allclose(s["heatmap/keypoint_weight"], [1, 1, 0, 0])


def test_dataset_flip_swaps_and_mirrors(tmp_path):
    ds = _one_pixel_dataset(tmp_path, AugmentConfig.none().with_(flip_prob=1.0),
                            codecs=("simcc",))
    s = ds[0]
    # flipped x = 99 - 30 = 69, flipped centre 99 - 30.5 = 68.5 -> input x 69 - 68.5 + 23.5 = 24;
    # keypoint 0 moves to channel 1 (flip pair (0, 1))
    np.testing.assert_allclose(s["keypoints"][0, 1, :2], [24.0, 31.0], atol=1e-5)
    red = s["image"][0]
    assert np.unravel_index(np.argmax(red), red.shape) == (31, 24)
    np.testing.assert_allclose(_apply(s["affine"].astype(float), [[24.0, 31.0]]), [[30.0, 40.0]], atol=1e-4)


def test_dataset_augmented_geometry_matches_image(tmp_path):
    """Under the full stage-1 recipe the white pixel still sits under keypoint 0 (when kept)."""
    aug = AugmentConfig.rtmpose_stage1().with_(hue_delta=0, saturation_delta=0, value_delta=0,
                                               blur_prob=0.0, median_blur_prob=0.0,
                                               dropout_prob=0.0, scale_range=(1.0, 1.4))
    ds = _one_pixel_dataset(tmp_path, aug, codecs=("simcc",), flip_pairs=())
    ds.seed_worker(0)
    checked = 0
    for _ in range(30):
        s = ds[0]
        x, y, v = s["keypoints"][0, 0]
        if v == 0 or not (1 <= x <= 46 and 1 <= y <= 62):
            continue
        red = s["image"][0]
        iy, ix = np.unravel_index(np.argmax(red), red.shape)
        assert abs(ix - x) <= 1.0 and abs(iy - y) <= 1.0
        checked += 1
    assert checked > 5


def test_simcc_closed_form_and_off_map():
    kp = np.array([[10.3, 20.7, 2], [5.0, 5.0, 0], [-40.0, 10.0, 2], [191.0, 255.0, 1]], np.float32)
    x, y, w = simcc_targets(kp, (192, 256), sigma=(4.9, 5.66), split_ratio=2.0)
    assert x.shape == (4, 384) and y.shape == (4, 512)
    mu = np.around(10.3 * 2)
    i = np.arange(384)
    np.testing.assert_allclose(x[0], np.exp(-(i - mu) ** 2 / (2 * 4.9 ** 2)), rtol=1e-5, atol=1e-7)
    assert np.argmax(y[0]) == np.around(20.7 * 2)
    # v = 0 -> weight 0; -80 + 14.7 + 1 < 0 -> off the axis -> weight 0; v = 1 counts as visible
    np.testing.assert_allclose(w, [1, 0, 0, 1])
    assert x[1].max() == 0 and x[2].max() == 0


def test_msra_heatmap_closed_form():
    kp = np.array([[20.0, 30.0, 2], [-100.0, 0.0, 2]], np.float32)
    hm, w = msra_heatmap(kp, (48, 64), sigma=2.0, stride=4.0)
    assert hm.shape == (2, 64, 48)
    cy, cx = int(30 / 4 + 0.5), int(20 / 4 + 0.5)
    assert hm[0, cy, cx] == 1.0
    np.testing.assert_allclose(hm[0, cy, cx + 2], math.exp(-4 / 8), rtol=1e-6)
    assert hm[0, cy, cx + 7] == 0.0  # outside the 3-sigma patch
    np.testing.assert_allclose(w, [1, 0])


def test_reference_targets_match_posefeed_codecs():
    targets = pytest.importorskip("posefeed.targets")
    rng = np.random.default_rng(1)
    kp = np.concatenate([rng.uniform(-20, [210, 270], (8, 17, 2)),
                         rng.choice([0.0, 1.0, 2.0], (8, 17, 1))], axis=-1).astype(np.float32)
    if hasattr(targets, "SimCC"):
        out = targets.SimCC(input_size=(192, 256)).encode(kp[:, None])
        for b in range(8):
            x, y, w = simcc_targets(kp[b], (192, 256))
            np.testing.assert_allclose(out["x_labels"][b], x, atol=1e-5)
            np.testing.assert_allclose(out["y_labels"][b], y, atol=1e-5)
            np.testing.assert_allclose(out["keypoint_weight"][b], w)
    if hasattr(targets, "GaussianHeatmap"):
        out = targets.GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64)).encode(kp[:, None])
        for b in range(8):
            hm, w = msra_heatmap(kp[b], (48, 64), 2.0, 4.0)
            np.testing.assert_allclose(out["heatmap"][b], hm, atol=1e-5)
            np.testing.assert_allclose(out["keypoint_weight"][b], w)


def test_photometric_helpers():
    img = np.full((64, 48, 3), (10, 20, 30), np.uint8)
    chw = normalize_chw(img)
    np.testing.assert_allclose(chw[:, 0, 0], (np.array([30, 20, 10]) - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB,
                               rtol=1e-6)
    assert hsv_jitter(img, np.zeros(3, np.int16)) is img
    brighter = hsv_jitter(img, np.array([0, 0, 30], np.int16))
    assert brighter.mean() > img.mean()
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = coarse_dropout(np.full((64, 48, 3), 7, np.uint8), rng, (0.2, 0.4))
        zero = np.argwhere(out[..., 0] == 0)
        hh = zero[:, 0].max() - zero[:, 0].min() + 1
        ww = zero[:, 1].max() - zero[:, 1].min() + 1
        assert 0.2 * 64 - 1 <= hh <= 0.4 * 64 + 1 and 0.2 * 48 - 1 <= ww <= 0.4 * 48 + 1
        assert len(zero) == hh * ww


#: RTMPose stage 1 / stage 2 as published (MMPose rtmpose-m_8xb256-420e_coco-256x192.py and
#: the defaults of RandomHalfBody, RandomBBoxTransform, YOLOXHSVRandomAug), typed from there
RTMPOSE_STAGE1 = dict(flip_prob=0.5, half_body_prob=0.3, half_body_min_keypoints=9,
                      half_body_min_upper=2, half_body_min_lower=3, half_body_padding=1.5,
                      half_body_upper_prob=0.7, shift_factor=0.16, shift_prob=0.3,
                      scale_range=(0.6, 1.4), scale_prob=1.0, rotate_factor=80.0,
                      rotate_prob=0.6, hue_delta=5, saturation_delta=30, value_delta=30,
                      blur_prob=0.1, median_blur_prob=0.1, dropout_prob=1.0,
                      dropout_size=(0.2, 0.4))
RTMPOSE_STAGE2 = {**RTMPOSE_STAGE1, "shift_factor": 0.0, "scale_range": (0.75, 1.25),
                  "rotate_factor": 60.0, "dropout_prob": 0.5}


@pytest.mark.parametrize("cfg, published", [(AugmentConfig.rtmpose_stage1(), RTMPOSE_STAGE1),
                                            (AugmentConfig.rtmpose_stage2(), RTMPOSE_STAGE2)],
                         ids=["stage1", "stage2"])
def test_reference_runs_the_published_recipe(tmp_path, cfg, published):
    """The reference takes posefeed's AugmentConfig itself (no second copy of the numbers);
    those numbers are RTMPose's."""
    ds = _one_pixel_dataset(tmp_path, cfg)
    assert {k: getattr(ds.augment, k) for k in published} == published
    assert ds.augment.blur_sizes == ds.augment.median_blur_sizes == (3, 5, 7)  # blur_limit 7
    off = _one_pixel_dataset(tmp_path, AugmentConfig.none()).augment
    assert off.flip_prob == 0 and off.rotate_prob == 0 and off.dropout_prob == 0


def test_half_body_split():
    coco = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
            "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
            "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
    assert half_body_split(coco) == (tuple(range(11)), tuple(range(11, 17)))
    assert half_body_split([f"p{i}" for i in range(5)]) == ((0, 1, 2), (3, 4))


def test_loader_spawn_workers_batches(tmp_path):
    ds = _one_pixel_dataset(tmp_path, AugmentConfig.rtmpose_stage1(), codecs=("simcc",))
    loader = make_reference_loader(ds, batch_size=3, workers=1, num_samples=6)
    batches = list(loader)
    assert len(batches) == 2
    b = batches[0]
    assert tuple(b["image"].shape) == (3, 3, 64, 48)
    assert tuple(b["keypoints"].shape) == (3, 1, 4, 3)
    assert tuple(b["x_labels"].shape) == (3, 4, 96) and tuple(b["y_labels"].shape) == (3, 4, 128)
    assert tuple(b["keypoint_weight"].shape) == (3, 4)
    assert tuple(b["affine"].shape) == (3, 2, 3) and tuple(b["index"].shape) == (3, 1)
    # values, from the worker processes: each kept keypoint maps back (affine) to where it
    # is in the image (channels swap under a flip: det < 0), and its SimCC peak is at
    # round(2 x), round(2 y) (split ratio 2), or the nearest bin when that falls off the axis
    # (a kept keypoint may sit up to half a pixel outside the input: the workers seed from their
    # pid, so some runs put one at y in [-0.5, -0.25), whose Gaussian peaks in bin 0, not -1)
    src = np.array([[30, 40], [40, 20], [500, 500], [0, 0]], np.float64)
    for batch in batches:
        kp, aff = batch["keypoints"].numpy()[:, 0], batch["affine"].numpy().astype(np.float64)
        for i in range(len(kp)):
            flipped = np.linalg.det(aff[i, :, :2]) < 0
            for k in np.flatnonzero(kp[i, :, 2] > 0):
                orig = {0: 1, 1: 0}.get(k, k) if flipped else k
                np.testing.assert_allclose(_apply(aff[i], kp[i, k:k + 1, :2]), src[orig:orig + 1],
                                           atol=1e-3)
                for c, name in ((0, "x_labels"), (1, "y_labels")):
                    bins = batch[name].shape[-1]
                    peak = np.clip(np.around(kp[i, k, c] * 2), 0, bins - 1)
                    assert batch[name][i, k].argmax() == peak


def test_reference_matches_posefeed_without_augmentation(coco_json):
    """With augmentation off, the reference loader and posefeed's PoseLoader do the same work:
    same keypoints, same affine, same targets, images equal up to decoder rounding."""
    pipelines = pytest.importorskip("posefeed.pipelines")
    from posefeed.bench.data import load_table
    from posefeed.targets import SimCC

    table = load_table(coco_json)
    loader = pipelines.PoseLoader(table, [SimCC()], schedule=pipelines.AugmentConfig.none(),
                                  batch_size=4, shuffle=False, device="cpu", num_threads=1)
    batch = next(iter(loader))
    ds = ReferenceTopdownDataset.from_table(table, augment=AugmentConfig.none())
    for i in range(4):
        s = ds[int(batch["index"][i, 0])]
        np.testing.assert_allclose(s["keypoints"], batch["keypoints"][i].numpy(), atol=1e-3)
        np.testing.assert_allclose(s["affine"], batch["affine"][i].numpy(), atol=1e-3)
        np.testing.assert_allclose(s["x_labels"], batch["x_labels"][i].numpy(), atol=1e-5)
        np.testing.assert_allclose(s["y_labels"], batch["y_labels"][i].numpy(), atol=1e-5)
        np.testing.assert_allclose(s["keypoint_weight"], batch["keypoint_weight"][i].numpy())
        assert np.abs(s["image"] - batch["image"][i].numpy()).mean() < 0.05
