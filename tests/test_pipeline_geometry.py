"""Geometry of the loader against independent references: coloured blobs drawn at each
keypoint, OpenCV's warpAffine, and the closed-form inverse affine."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from posefeed.datasets import PoseTable
from posefeed.pipelines import AugmentConfig, PoseLoader

from helpers import GEOMETRY, batches, check_blobs, expected_channel, make_blob_table

INPUT = (64, 80)  # (w, h)


@pytest.fixture(scope="module")
def blob_table(tmp_path_factory) -> PoseTable:
    return make_blob_table(tmp_path_factory.mktemp("blobs"))


#: CPU graph variants: OpenCV stage with cv2 PNG decode (default for PNG), with DALI's ROI /
#: full decode, and the DALI-op graph with ROI / full decode
BACKENDS = pytest.mark.parametrize("variant", [
    dict(cpu_backend="opencv"),
    dict(cpu_backend="opencv", opencv_png=False, roi_decode=True),
    dict(cpu_backend="opencv", opencv_png=False, roi_decode=False),
    dict(cpu_backend="dali", roi_decode=True),
    dict(cpu_backend="dali", roi_decode=False)], ids=["cv-png", "cv-roi", "cv-full", "dali-roi",
                                                      "dali-full"])


@BACKENDS
def test_blob_colours_under_keypoints_topdown(blob_table, variant):
    loader = PoseLoader(blob_table, [], input_size=INPUT, batch_size=4, schedule=GEOMETRY,
                        device="cpu", num_threads=1, image_dtype="uint8", seed=3, **variant)
    seen_flip = seen_plain = 0
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            check_blobs(blob_table, batch, min_checked=4)
            det = np.linalg.det(batch["affine"].numpy()[:, :, :2])
            seen_flip += int((det < 0).sum())
            seen_plain += int((det > 0).sum())
    assert seen_flip and seen_plain


@pytest.mark.parametrize("roi", [True, False])
def test_blob_colours_jpeg(tmp_path, roi):
    table = make_blob_table(tmp_path, n_images=4, k=4, ext="jpg")
    loader = PoseLoader(table, [], input_size=INPUT, batch_size=4, schedule=GEOMETRY,
                        device="cpu", num_threads=1, image_dtype="uint8", roi_decode=roi)
    for batch in loader:
        check_blobs(table, batch, min_checked=4)


def test_inverse_affine_maps_keypoints_back_to_labels(blob_table):
    loader = PoseLoader(blob_table, [], input_size=INPUT, batch_size=4, schedule=GEOMETRY,
                        device="cpu", num_threads=1, seed=5)
    labels = blob_table.keypoints
    for batch in loader:
        kp = batch["keypoints"].numpy()[:, 0]
        aff = batch["affine"].numpy().astype(np.float64)
        rows = batch["index"].numpy()[:, 0]
        back = np.einsum("bij,bkj->bki", aff[:, :, :2], kp[..., :2]) + aff[:, None, :, 2]
        flipped = np.linalg.det(aff[:, :, :2]) < 0
        chan = expected_channel(blob_table, flipped)
        want = labels[rows[:, None], chan][..., :2]
        np.testing.assert_allclose(back, want, atol=2e-3)


@BACKENDS
def test_image_matches_opencv_warp(blob_table, variant):
    """The crop equals cv2.warpAffine of the whole decoded frame with the forward matrix
    (inverse of ``affine``)."""
    loader = PoseLoader(blob_table, [], input_size=INPUT, batch_size=4, schedule=GEOMETRY,
                        device="cpu", num_threads=1, image_dtype="uint8", seed=7, shuffle=False,
                        **variant)
    batch = batches(loader, 1)[0]
    img = batch["image"].numpy().transpose(0, 2, 3, 1).astype(int)
    for b in range(len(img)):
        row = int(batch["index"][b, 0])
        src = np.asarray(Image.open(blob_table.image_path(blob_table.frame[("image", "")][row])))
        a = np.vstack([batch["affine"][b].numpy().astype(np.float64), [0, 0, 1]])
        fwd = np.linalg.inv(a)[:2]
        ref = cv2.warpAffine(src, fwd, INPUT, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(int)
        diff = np.abs(img[b] - ref)
        assert diff.mean() < 1.5
        assert np.percentile(diff, 99) <= 8


def test_keypoints_outside_the_crop_get_v0(tmp_path):
    table = make_blob_table(tmp_path, n_images=6, bboxes="first")
    cfg = AugmentConfig.none().with_(flip_prob=0.5, rotate_factor=30.0, rotate_prob=1.0)
    loader = PoseLoader(table, [], input_size=INPUT, batch_size=3, schedule=cfg, device="cpu",
                        num_threads=1, image_dtype="uint8")
    n_out = 0
    for batch in loader:
        kp = batch["keypoints"].numpy()[:, 0]
        x, y, v = kp[..., 0], kp[..., 1], kp[..., 2]
        inside = (x >= -0.5) & (x < INPUT[0] - 0.5) & (y >= -0.5) & (y < INPUT[1] - 0.5)
        np.testing.assert_array_equal(v, np.where(inside, 2.0, 0.0))
        flipped = np.linalg.det(batch["affine"].numpy()[:, :, :2]) < 0
        holds_kp0 = expected_channel(table, flipped) == 0            # the box is around kp 0
        assert inside[holds_kp0].all()
        n_out += int((~inside).sum())
        check_blobs(table, batch)
    assert n_out > 0


def test_frame_mode_all_instances_and_padding(tmp_path):
    table = make_blob_table(tmp_path, n_images=6, k=3, instances=(1, 2), size=(240, 180))
    cfg = AugmentConfig.none().with_(rotate_factor=30.0, rotate_prob=1.0, flip_prob=0.5,
                                     scale_range=(0.8, 1.2))
    loader = PoseLoader(table, [], mode="frame", input_size=(96, 80), batch_size=3, schedule=cfg,
                        device="cpu", num_threads=1, image_dtype="uint8", shuffle=False)
    frames = table.frames()
    n = 0
    for batch in loader:
        kp, index = batch["keypoints"].numpy(), batch["index"].numpy()
        assert kp.shape[1:] == (2, 3, 3) and index.shape[1] == 2
        for b in range(len(kp)):
            rows = index[b][index[b] >= 0]
            assert any(set(rows) == set(f) for f in frames)
            assert (kp[b][index[b] < 0] == 0).all()   # padding rows
        check_blobs(table, batch, min_checked=3)
        # the inverse affine maps every instance back to its labels (no flip pairs for k=3)
        aff = batch["affine"].numpy().astype(np.float64)
        back = np.einsum("bij,bnkj->bnki", aff[:, :, :2], kp[..., :2]) + aff[:, None, None, :, 2]
        valid = index >= 0
        np.testing.assert_allclose(back[valid], table.keypoints[index[valid]][..., :2], atol=2e-3)
        n += len(kp)
    assert n == 6


def test_frame_mode_letterbox_keeps_aspect(tmp_path):
    """Without augmentation the whole frame fits the input, centred, aspect kept."""
    table = make_blob_table(tmp_path, n_images=2, k=3, size=(240, 120))
    loader = PoseLoader(table, [], mode="frame", input_size=(64, 64), batch_size=2,
                        schedule=AugmentConfig.none(), device="cpu", num_threads=1,
                        image_dtype="uint8", shuffle=False)
    batch = batches(loader, 1)[0]
    aff = batch["affine"].numpy()
    k = 240 / 64
    np.testing.assert_allclose(aff[:, :, :2], np.tile(np.eye(2) * k, (2, 1, 1)), rtol=1e-6)
    # input centre (31.5, 31.5) maps to the frame centre (119.5, 59.5)
    np.testing.assert_allclose(aff[:, :, 2] + k * 31.5, [[119.5, 59.5]] * 2, atol=1e-4)
    img = batch["image"].numpy()
    band = (64 - 120 / k) / 2            # black bars above and below
    assert (img[:, :, : int(band) - 1] == 0).all() and (img[:, :, -int(band) + 1:] == 0).all()


def test_frame_mode_keypoint_aware_crop(tmp_path):
    table = make_blob_table(tmp_path, n_images=6, k=3, instances=(1, 2), size=(320, 240))
    cfg = AugmentConfig.none().with_(crop_size=(80, 80), crop_shift=0.1)
    loader = PoseLoader(table, [], mode="frame", input_size=(64, 64), batch_size=3, schedule=cfg,
                        device="cpu", num_threads=1, image_dtype="uint8")
    for batch in loader:
        aff = batch["affine"].numpy()
        np.testing.assert_allclose(aff[:, :, :2], np.tile(np.eye(2) * 80 / 64, (3, 1, 1)),
                                   rtol=1e-6)
        kp = batch["keypoints"].numpy()
        assert (kp[..., 2] > 0).reshape(3, -1).any(axis=1).all()   # a keypoint in every crop
        # the crop stays inside the frame
        corners = aff[:, :, 2][:, None, :] + np.array([[-0.5, -0.5], [63.5, 63.5]]) * 80 / 64
        assert (corners >= -0.5 - 1e-4).all()
        assert (corners[..., 0] <= 319.5 + 1e-4).all() and (corners[..., 1] <= 239.5 + 1e-4).all()
        check_blobs(table, batch, min_checked=3)


def test_no_augmentation_affine_closed_form(tmp_path):
    """AugmentConfig.none(): the padded box (x 1.25, aspect fixed to the input) fills the crop:
    ``affine = [[s, 0, cx - s (w-1)/2], [0, s, cy - s (h-1)/2]]``, s = box width / w."""
    table = make_blob_table(tmp_path, n_images=3, k=4, bboxes="first")
    loader = PoseLoader(table, [], input_size=INPUT, batch_size=3, schedule=AugmentConfig.none(),
                        device="cpu", num_threads=1, shuffle=False)
    b = batches(loader, 1)[0]
    box = table.bboxes.astype(np.float64)                  # 24 x 24 boxes
    w, h = INPUT
    cx, cy = box[:, 0] + box[:, 2] / 2, box[:, 1] + box[:, 3] / 2
    bw = np.maximum(box[:, 2] * 1.25, box[:, 3] * 1.25 * w / h)  # aspect w/h fixed
    s = bw / w
    want = np.stack([np.stack([s, 0 * s, cx - s * (w - 1) / 2], 1),
                     np.stack([0 * s, s, cy - s * (h - 1) / 2], 1)], 1)
    np.testing.assert_allclose(b["affine"].numpy(), want, rtol=1e-5, atol=1e-3)
    kp = b["keypoints"].numpy()[:, 0]
    # keypoint 0 is the box centre: it lands on the crop centre
    np.testing.assert_allclose(kp[:, 0, :2], [[(w - 1) / 2, (h - 1) / 2]] * 3, atol=1e-3)


def test_stretched_box_crop_is_a_resize_of_the_region(tmp_path):
    """``box_padding=1, box_keep_aspect=False`` (DeepLabCut's top-down crop): the box region
    is resized to the input, each axis on its own: ``affine = [[sx, 0, x0 + sx/2 - 1/2],
    [0, sy, y0 + sy/2 - 1/2]]`` with ``sx = box_w / w``, ``sy = box_h / h`` (input pixel j's
    centre -> image x0 - 1/2 + (j + 1/2) sx: the sampling of cv2.resize INTER_LINEAR), and the
    crop equals cv2.resize of the region (integer box, inside the image)."""
    table = make_blob_table(tmp_path, n_images=3, k=4, bboxes="first")
    # integer regions [X1, X2) x [Y1, Y2) of different aspects, as posefeed boxes (corner at -0.5)
    regions = np.array([[3, 5, 40, 30], [10, 2, 50, 55], [0, 0, 33, 47]], dtype=np.float64)
    frame = table.frame.copy()
    for j, f in enumerate("xywh"):
        frame[("bbox", f)] = regions[:, j] - (0.5 if f in "xy" else 0.0)
    table = PoseTable(frame, table.bodyparts, root=table.root)
    cfg = AugmentConfig.none().with_(box_padding=1.0, box_keep_aspect=False)
    loader = PoseLoader(table, [], input_size=INPUT, batch_size=3, schedule=cfg, device="cpu",
                        num_threads=1, shuffle=False, image_dtype="uint8")
    b = batches(loader, 1)[0]
    w, h = INPUT
    sx, sy = regions[:, 2] / w, regions[:, 3] / h
    want = np.stack([np.stack([sx, 0 * sx, regions[:, 0] + sx / 2 - 0.5], 1),
                     np.stack([0 * sy, sy, regions[:, 1] + sy / 2 - 0.5], 1)], 1)
    np.testing.assert_allclose(b["affine"].numpy(), want, rtol=1e-6, atol=1e-4)
    img = b["image"].numpy().transpose(0, 2, 3, 1).astype(int)
    for i in range(3):
        row = int(b["index"][i, 0])
        src = np.asarray(Image.open(table.image_path(table.frame[("image", "")][row])))[..., :3]
        x0, y0, rw, rh = regions[i].astype(int)
        ref = cv2.resize(src[y0:y0 + rh, x0:x0 + rw], INPUT, interpolation=cv2.INTER_LINEAR)
        inner = np.abs(img[i] - ref.astype(int))[2:-2, 2:-2]   # the edges: cv2 replicates
        assert inner.mean() < 1.0 and inner.max() <= 6, (inner.mean(), inner.max())
    # keypoints move with the same matrix: back through the affine onto the labels
    kp = b["keypoints"].numpy()[:, 0].astype(np.float64)
    aff = b["affine"].numpy().astype(np.float64)
    back = np.einsum("bij,bkj->bki", aff[:, :, :2], kp[..., :2]) + aff[:, None, :, 2]
    rows = b["index"].numpy()[:, 0]
    lab = table.keypoints[rows]
    vis = kp[..., 2] > 0
    np.testing.assert_allclose(back[vis], lab[..., :2][vis], atol=2e-3)
