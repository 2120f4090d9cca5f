"""DeepLabCut 3.0.2's boxes and top-down crop geometry (posefeed.integrations.dlc_boxes),
hand-worked from its rules (``utils.bbox_from_keypoints``, ``image.top_down_crop``,
``PoseDataset.__getitem__``; numbers checked against DeepLabCut's own items on openfield in
tests_integrations/test_dlc_topdown.py), and the crop coordinate conversion against
posefeed's own top-down crop."""
from __future__ import annotations

import numpy as np
import pytest

from posefeed.datasets import PoseTable
from posefeed.integrations.dlc_boxes import (crop_boxes, crop_offsets_scales, dlc_boxes,
                                             dlc_visible, region_boxes, to_dlc_crop,
                                             top_down_regions)
from posefeed.pipelines import AugmentConfig, PoseLoader

from helpers import batches, make_blob_table

# an openfield label (m4s1/img0010.png, 640 x 480) and DeepLabCut's numbers for it
LABEL = np.array([[[54.828, 339.728, 2], [64.051, 348.439, 2], [59.44, 329.48, 2],
                   [177.294, 326.405, 2]]])
SIZE = np.array([[640, 480]])


def test_box_and_area_from_the_visible_labels_with_the_margin():
    box, area = dlc_boxes(LABEL, SIZE, 20)
    np.testing.assert_allclose(box, [[34.828, 306.405, 162.466, 62.034]], atol=1e-9)
    assert area[0] == pytest.approx(162.466 * 62.034)
    # corners clipped to [0, w] x [0, h]; labels at x = 0 or x = w are not visible
    kp = np.array([[[5, 470, 2], [0, 100, 2], [30, 400, 0], [640, 10, 2]]], dtype=float)
    assert dlc_visible(kp, SIZE).tolist() == [[True, False, False, False]]
    box, area = dlc_boxes(kp, SIZE, 20)
    np.testing.assert_allclose(box, [[0, 450, 25, 30]])
    none = np.zeros((1, 3, 3))
    box, area = dlc_boxes(none, SIZE, 20)
    assert box.tolist() == [[0, 0, 0, 0]] and area.tolist() == [1.0]   # max(1, w h)


def test_top_down_regions_hand_worked():
    box, _ = dlc_boxes(LABEL, SIZE, 20)
    # int box (34, 306, 162, 62): centre (115, 337), widened to 162 x 162
    assert top_down_regions(box, (256, 256)).tolist() == [[34, 256, 196, 418]]
    boxes = np.array([[10, 20, 30, 21],     # cy - 15 = 15.5 -> 16, cy + 15 = 45.5 -> 46
                      [10, 20, 31, 20],     # cy -+ 15.5 = 14.5 -> 14, 45.5 -> 46: 31 x 32
                      [0.9, 0.9, 100.7, 100.2]])   # truncated to (0, 0, 100, 100)
    assert top_down_regions(boxes, (256, 256)).tolist() == [
        [10, 16, 40, 46], [10, 14, 41, 46], [0, 0, 100, 100]]
    # margin 5 on each side, a 192 x 256 crop: 110 x 110 -> 110 x 146.67 about (50, 50)
    assert top_down_regions(np.array([[0, 0, 100, 100]]), (192, 256), margin=5).tolist() == [
        [-5, -23, 105, 123]]
    o, s = crop_offsets_scales(np.array([[10, 14, 41, 46]]), (256, 256))
    assert o.tolist() == [[10, 14]] and s.tolist() == [[31 / 256, 32 / 256]]


def test_boxes_in_the_crop_hand_worked():
    box, _ = dlc_boxes(LABEL, SIZE, 20)
    o, s = crop_offsets_scales(top_down_regions(box, (256, 256)), (256, 256))
    boxes, area = crop_boxes(box, o, s, (256, 256))
    # int box (34, 306, 162, 62) -> (0, 79.0, 256.0, 97.98) truncated, clipped to 255
    assert boxes.tolist() == [[0, 79, 255, 97]] and area.tolist() == [255 * 97]


def test_to_dlc_crop_is_the_labels_through_offsets_and_scales(tmp_path):
    """posefeed's crop of DeepLabCut's region (``box_padding=1``, ``box_keep_aspect=False``),
    converted: ``x_d * scale + offset`` is the label, for regions of different aspects."""
    table = make_blob_table(tmp_path, n_images=3, k=4, bboxes="first")
    crop = (48, 40)
    boxes, _ = dlc_boxes(table.keypoints, table.image_sizes, 3)
    regions = top_down_regions(boxes, crop)
    assert len({tuple(r) for r in (regions[:, 2:] - regions[:, :2])}) > 1   # different sizes
    frame = table.frame.copy()
    for j, f in enumerate("xywh"):
        frame[("bbox", f)] = region_boxes(regions)[:, j]
    table = PoseTable(frame, table.bodyparts, root=table.root)
    cfg = AugmentConfig.none().with_(box_padding=1.0, box_keep_aspect=False)
    loader = PoseLoader(table, [], input_size=crop, batch_size=3, schedule=cfg, device="cpu",
                        num_threads=1, shuffle=False)
    b = batches(loader, 1)[0]
    kp, offsets, scales = to_dlc_crop(b["keypoints"].numpy(), b["affine"].numpy(), crop)
    want_o, want_s = crop_offsets_scales(regions, crop)
    assert offsets.tolist() == want_o.tolist()
    np.testing.assert_allclose(scales, want_s, rtol=1e-6)
    labels = table.keypoints[b["index"].numpy()[:, 0]].astype(np.float64)
    vis = kp[:, 0, :, 2] > 0
    assert vis.sum() >= 6
    back = kp[:, 0, :, :2] * want_s[:, None] + want_o[:, None]
    np.testing.assert_allclose(back[vis], labels[..., :2][vis], atol=2e-3)
    # (x - X1) / s directly
    direct = (labels[..., :2] - want_o[:, None]) / want_s[:, None]
    np.testing.assert_allclose(kp[:, 0, :, :2][vis], direct[vis], atol=2e-3)


def test_to_dlc_crop_hidden_and_out_of_crop_labels():
    # identity-scale crop starting at (10, 20): s = 1, t = o
    affine = np.array([[[1.0, 0, 10], [0, 1.0, 20]]])
    kp = np.array([[[[5.0, 5.0, 2], [7.0, 7.0, 0], [-0.2, 3.0, 2], [3.0, 40.5, 2]]]])
    out, o, s = to_dlc_crop(kp, affine, (40, 30))
    assert o.tolist() == [[10, 20]] and s.tolist() == [[1.0, 1.0]]
    np.testing.assert_allclose(out[0, 0, :, :2], [[5, 5], [-10, -20], [-0.2, 3], [3, 40.5]])
    # hidden stays 0; x < 0 -> 0; y = 40.5 > the crop's width 40 (DeepLabCut's order) -> 0
    assert out[0, 0, :, 2].tolist() == [2, 0, 0, 0]
    # a 2x downscale: x_d = j + 1/2 - 1/(2 s) = j + 1/4
    affine = np.array([[[2.0, 0, 10.5], [0, 2.0, 20.5]]])
    out, o, s = to_dlc_crop(np.array([[[[4.0, 6.0, 2]]]]), affine, (40, 30))
    assert o.tolist() == [[10, 20]]
    np.testing.assert_allclose(out[0, 0, 0, :2], [4.25, 6.25])
    # the same point in the image: 2 j + 10.5 = 2 x_d + 10
    assert 2 * 4.0 + 10.5 == 2 * 4.25 + 10
