"""Photometric ops of the CPU graph against an independent OpenCV/NumPy re-implementation of
the MMPose / albumentations recipe (YOLOX HSV, Blur, MedianBlur, CoarseDropout)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from posefeed.pipelines import AugmentConfig, PoseLoader
from helpers import batches, make_blob_table

INPUT = (64, 80)
#: every photometric op with a high probability, plus geometry
STRONG = AugmentConfig().with_(blur_prob=0.5, median_blur_prob=0.5, dropout_prob=0.7)


def yolox_hsv(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """YOLOXHSVRandomAug with fixed integer gains (hue, sat, val), on an RGB image."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("photo"), n_images=8, k=4)


@pytest.mark.parametrize("variant", [dict(), dict(opencv_png=False, roi_decode=True),
                                     dict(opencv_png=False, roi_decode=False),
                                     dict(cache="host")],
                         ids=["cv-png", "cv-roi", "cv-full", "cv-cache-rgba"])
def test_opencv_graph_matches_reference_recipe(table, variant):
    loader = PoseLoader(table, [], input_size=INPUT, batch_size=8, schedule=STRONG, device="cpu",
                        num_threads=1, image_dtype="uint8", seed=2, cpu_backend="opencv",
                        **variant)
    batch = batches(loader, 1)[0]
    rows, p = loader.source.batch(0, 0)          # the parameters the graph was fed
    np.testing.assert_array_equal(rows, batch["index"].numpy())
    got = batch["image"].numpy().transpose(0, 2, 3, 1).astype(int)
    ops = {"hsv": 0, "blur": 0, "median": 0, "dropout": 0}
    for b in range(len(got)):
        name = table.frame[("image", "")][int(rows[b, 0])]
        frame = np.asarray(Image.open(table.image_path(name)).convert("RGB"))
        ref = cv2.warpAffine(frame, p.forward[b, :2], INPUT, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        gains = np.array([p.hue_gain[b], p.saturation_gain[b], p.value_gain[b]])
        if gains.any():
            ref = yolox_hsv(ref, gains)
            ops["hsv"] += 1
        if p.blur[b]:
            ref = cv2.blur(ref, (int(p.blur_size[b]),) * 2)
            ops["blur"] += 1
        if p.median[b]:
            ref = cv2.medianBlur(ref, int(p.median_size[b]))
            ops["median"] += 1
        if p.dropout[b]:
            y, x, h, w = p.dropout_box[b]
            ref[y:y + h, x:x + w] = 0
            assert (got[b, y:y + h, x:x + w] == 0).all()
            ops["dropout"] += 1
        diff = np.abs(got[b] - ref.astype(int))
        assert diff.mean() < 0.5, b
        assert np.percentile(diff, 99.5) <= 4, b
    assert all(v > 0 for v in ops.values()), ops


def test_dali_ops_graph_runs_every_op(table):
    """The DALI-op path (the GPU graph's ops, on CPU): dropout hole is black; colours move."""
    plain = PoseLoader(table, [], input_size=INPUT, batch_size=8, device="cpu", num_threads=1,
                       image_dtype="uint8", seed=2, cpu_backend="dali",
                       schedule=STRONG.with_(hue_delta=0, saturation_delta=0, value_delta=0,
                                             blur_prob=0, median_blur_prob=0, dropout_prob=0))
    strong = PoseLoader(table, [], input_size=INPUT, batch_size=8, device="cpu", num_threads=1,
                        image_dtype="uint8", seed=2, cpu_backend="dali", schedule=STRONG)
    a = batches(plain, 1)[0]["image"].numpy().astype(int)
    b = batches(strong, 1)[0]["image"].numpy().astype(int)
    _, p = strong.source.batch(0, 0)
    changed = 0
    for i in range(len(b)):
        if p.dropout[i]:
            y, x, h, w = p.dropout_box[i]
            assert (b[i, :, y:y + h, x:x + w] == 0).all()
        photometric = p.hue_gain[i] or p.saturation_gain[i] or p.value_gain[i] or p.blur[i] \
            or p.median[i]
        if photometric and not p.dropout[i]:
            changed += int(np.abs(a[i] - b[i]).mean() > 0.5)
    assert changed > 0
