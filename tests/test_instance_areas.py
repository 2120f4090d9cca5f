"""Instance areas from the table through the loader to the DEKR codec: the table's ``area``
column (COCO ``area``; DeepLabCut's rule, hand-worked on an openfield label; NaN unknown),
the batch's ``area`` against an independent reference (the box corners moved by the crop,
shoelace formula: an affine map scales areas by ``|det|``), and DEKR's offset weights
``1 / sqrt(area)`` from it, with the keypoints' box where the area is unknown."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posefeed.datasets import AnnotationError, PoseTable, load_coco, load_dlc
from posefeed.datasets.coco import write_coco
from posefeed.pipelines import AugmentConfig, PoseLoader
from posefeed.targets import DEKR
from posefeed.targets.dekr import keypoint_areas

from helpers import GEOMETRY, batches, make_blob_table

OPENFIELD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "openfield-Pranav-2018-10-30"


def with_areas(table: PoseTable, areas) -> PoseTable:
    frame = table.frame.copy()
    frame[("area", "")] = np.asarray(areas, dtype=np.float64)
    return PoseTable(frame, table.bodyparts, table.flip_pairs, root=table.root)


def shoelace(poly: np.ndarray) -> np.ndarray:
    """Areas of polygons ``(..., P, 2)`` (vertices in order)."""
    x, y = poly[..., 0], poly[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1))


def test_table_areas_unknown_by_default_and_checked():
    kp = np.array([[[10, 10, 2], [20, 30, 2]]] * 2, dtype=float)
    t = PoseTable.from_arrays(["a.png", "b.png"], kp, ["p", "q"], [(64, 48)] * 2)
    assert np.isnan(t.areas).all() and t.areas.dtype == np.float32
    t = PoseTable.from_arrays(["a.png", "b.png"], kp, ["p", "q"], [(64, 48)] * 2,
                              areas=[100.0, np.nan])
    assert t.areas[0] == 100 and np.isnan(t.areas[1])
    assert t.subset([0]).areas.tolist() == [100.0]
    for bad in (0.0, -3.0, np.inf):
        with pytest.raises(AnnotationError, match="area") as e:
            PoseTable.from_arrays(["a.png", "b.png"], kp, ["p", "q"], [(64, 48)] * 2,
                                  areas=[100.0, bad])
        assert e.value.row == 1 and e.value.field == "area"


def test_coco_area_read_written_and_refused(tmp_path):
    table = with_areas(make_blob_table(tmp_path, n_images=3), [300.0, 1234.5, 77.0])
    write_coco(table, tmp_path / "c.json")
    back = load_coco(tmp_path / "c.json")
    np.testing.assert_allclose(back.areas, [300.0, 1234.5, 77.0])
    data = json.loads((tmp_path / "c.json").read_text())
    del data["annotations"][1]["area"]
    data["annotations"][2]["area"] = 0
    (tmp_path / "d.json").write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match="area") as e:
        load_coco(tmp_path / "d.json")
    assert e.value.field == "area"
    data["annotations"][2]["area"] = 9.0
    (tmp_path / "d.json").write_text(json.dumps(data))
    got = load_coco(tmp_path / "d.json").areas
    assert got[0] == 300 and np.isnan(got[1]) and got[2] == 9


@pytest.mark.skipif(not OPENFIELD.exists(), reason="shared openfield project not found")
def test_dlc_area_is_deeplabcuts_box_area():
    # m4s1/img0010.png: labels (54.828, 339.728), (64.051, 348.439), (59.44, 329.48),
    # (177.294, 326.405); DeepLabCut's box: +- 20 px, clipped to [0, 640] x [0, 480]:
    # (34.828, 306.405) - (197.294, 368.439), area 162.466 * 62.034 (DLC 3.0.2: 10078.4158)
    table = load_dlc(OPENFIELD)
    row = int(np.flatnonzero(table.frame[("image", "")].str.endswith("m4s1/img0010.png"))[0])
    assert table.areas[row] == pytest.approx(162.466 * 62.034, rel=1e-6)
    assert np.isfinite(table.areas).all() and (table.areas >= 1).all()


@pytest.mark.parametrize("mode", ["topdown", "frame"])
def test_batch_area_is_the_table_area_through_the_crop(tmp_path, mode):
    table = make_blob_table(tmp_path, n_images=6, instances=(1, 2))
    box = table.bboxes.astype(np.float64)
    table = with_areas(table, box[:, 2] * box[:, 3])      # the box's own area
    cfg = GEOMETRY if mode == "topdown" else AugmentConfig.none().with_(
        flip_prob=0.5, rotate_factor=40.0, rotate_prob=1.0, scale_range=(0.6, 1.2))
    loader = PoseLoader(table, [], mode=mode, input_size=(64, 80), batch_size=3, schedule=cfg,
                        device="cpu", num_threads=1, seed=1)
    seen_flip = 0
    for b in batches(loader, 2):
        rows, area, aff = b["index"].numpy(), b["area"].numpy(), b["affine"].numpy()
        assert area.shape == rows.shape and area.dtype == np.float32
        a = np.concatenate([aff.astype(np.float64), np.tile([[[0, 0, 1.0]]], (len(aff), 1, 1))], 1)
        fwd = np.linalg.inv(a)
        seen_flip += int((np.linalg.det(a[:, :2, :2]) < 0).sum())
        for i, j in zip(*np.nonzero(rows >= 0)):
            x, y, w, h = box[rows[i, j]]
            corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
            moved = corners @ fwd[i, :2, :2].T + fwd[i, :2, 2]
            assert area[i, j] == pytest.approx(shoelace(moved), rel=1e-4)
        assert (area[rows < 0] == 0).all()
    assert seen_flip > 0


def test_dekr_in_the_loader_weights_offsets_by_the_batch_area(tmp_path):
    table = make_blob_table(tmp_path, n_images=4, k=4)
    areas = np.array([900.0, 2500.0, 400.0, 1600.0])
    cfg = AugmentConfig.none().with_(rotate_factor=30.0, rotate_prob=1.0, scale_range=(0.7, 1.3))
    for known in (True, False):
        t = with_areas(table, areas if known else np.full(4, np.nan))
        codec = DEKR(4, stride=4, heatmap_size=(25, 20))
        loader = PoseLoader(t, codec, mode="frame", input_size=(100, 80), batch_size=2,
                            schedule=cfg, device="cpu", num_threads=1, seed=2)
        assert loader.graph.dense_targets               # a codec taking areas runs after the graph
        for b in batches(loader, 2):
            kp = b["keypoints"].numpy()
            if known:
                rows = b["index"].numpy()[:, 0]
                det = np.abs(np.linalg.det(b["affine"].numpy()[:, :, :2].astype(np.float64)))
                want = areas[rows] / det
                np.testing.assert_allclose(b["area"].numpy()[:, 0], want, rtol=1e-5)
            else:
                assert "area" not in b and not loader.has_areas   # a table without areas
                want = keypoint_areas(np, kp[..., 0], kp[..., 1], kp[..., 2])[:, 0]
            for i in range(len(kp)):
                w = b["offset_weight"].numpy()[i]
                assert (w > 0).any()
                np.testing.assert_allclose(np.unique(w[w > 0]), [1 / np.sqrt(want[i])], rtol=1e-5)
    with pytest.raises(ValueError, match="dense_targets"):
        PoseLoader(table, DEKR(4, stride=4, heatmap_size=(25, 20)), mode="frame",
                   input_size=(100, 80), batch_size=2, device="cpu", dense_targets=False)
