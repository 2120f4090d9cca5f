"""Bad annotations (issue 7), the cases tests/test_datasets_*.py did not cover yet: each gives
the typed AnnotationError with file, row and field, or a documented repair.

Already covered there (not repeated): DLC inf in .csv/.h5, COCO inf keypoint, COCO negative /
unknown visibility, COCO zero-area boxes, DLC duplicated CSV rows, .h5 with a wrong key,
CSV with the wrong header depth, missing images (DLC and COCO)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest

from posefeed.datasets import AnnotationError, PoseTable, load_coco, load_dlc
from posefeed.pipelines import AugmentConfig, PoseLoader
from helpers import GOOD_BODY, single_project, tiny_coco, write


# -- COCO ----------------------------------------------------------------------------------
def test_coco_nan_keypoint(tmp_path):
    data = tiny_coco(tmp_path)
    data["annotations"][1]["keypoints"][6] = float("nan")
    path = write(tmp_path, data)                              # json writes NaN
    with pytest.raises(AnnotationError, match="non-finite") as e:
        load_coco(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "annotations[1] (id 11)",
                                                          "keypoints[6]")


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_coco_non_finite_box(tmp_path, value):
    data = tiny_coco(tmp_path)
    data["annotations"][0]["bbox"][2] = value
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError, match="non-finite") as e:
        load_coco(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "annotations[0] (id 10)",
                                                          "bbox[2]")


def test_coco_duplicated_rows(tmp_path):
    data = tiny_coco(tmp_path)
    dup_ann = copy.deepcopy(data)
    dup_ann["annotations"].append(copy.deepcopy(dup_ann["annotations"][0]))   # same id 10
    path = write(tmp_path, dup_ann)
    with pytest.raises(AnnotationError, match="duplicated annotation id 10") as e:
        load_coco(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "annotations[3] (id 10)",
                                                          "id")
    dup_img = copy.deepcopy(data)
    dup_img["images"].append({"id": 1, "file_name": "b.jpg", "width": 50, "height": 40})
    path = write(tmp_path, dup_img)
    with pytest.raises(AnnotationError, match="duplicated image id 1") as e:
        load_coco(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "images[2]", "id")


def test_coco_annotation_that_is_not_an_object(tmp_path):
    data = tiny_coco(tmp_path)
    data["annotations"][1] = [1, 2, 3]
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError) as e:
        load_coco(path)
    assert (e.value.file, e.value.row) == (str(path), "annotations[1]")


# -- DeepLabCut ------------------------------------------------------------------------------
def test_dlc_half_labelled_keypoint_is_repaired_to_missing(tmp_path):
    """Documented repair (posefeed/datasets/dlc.py): only one of x, y labelled -> v = 0."""
    path = single_project(tmp_path, "labeled-data/v/img0.png,1,,3,4\n"
                                    "labeled-data/v/img1.png,5,6,,8\n")
    table = load_dlc(path)
    kp = table.keypoints
    np.testing.assert_array_equal(kp[0, 0], [0, 0, 0])       # nose: x only
    np.testing.assert_array_equal(kp[0, 1], [3, 4, 2])
    np.testing.assert_array_equal(kp[1, 1], [0, 0, 0])       # tail: y only


def test_dlc_unknown_coords_such_as_a_visibility_column(tmp_path):
    header = "scorer,me,me,me,me\nbodyparts,nose,nose,nose,tail\ncoords,x,y,v,x\n"
    path = single_project(tmp_path, GOOD_BODY, header=header)
    with pytest.raises(AnnotationError, match="unknown coords") as e:
        load_dlc(path)
    assert e.value.file == str(path) and e.value.field == "coords"


def test_dlc_duplicated_rows_in_h5(tmp_path):
    path = single_project(tmp_path, GOOD_BODY)
    frame = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    frame = pd.concat([frame, frame.iloc[[1]]])
    h5 = path.with_suffix(".h5")
    frame.to_hdf(h5, key="df_with_missing", mode="w")
    with pytest.raises(AnnotationError, match="duplicated rows") as e:
        load_dlc(h5)
    assert (e.value.file, e.value.row, e.value.field) == (str(h5), "labeled-data/v/img1.png",
                                                          "index")


def test_dlc_single_keypoint_box_with_zero_margin_is_repaired(tmp_path):
    """Documented repair (`bbox_from_keypoints`): boxes are at least 1 pixel wide and high,
    so a lone keypoint with ``margin=0`` does not give a zero-area box (NaN crops)."""
    path = single_project(tmp_path, "labeled-data/v/img0.png,1,2,,\n"
                                    "labeled-data/v/img1.png,0,0,,\n")
    table = load_dlc(path, margin=0)
    boxes = table.bboxes
    assert (boxes[:, 2] >= 1).all() and (boxes[:, 3] >= 1).all()
    loader = PoseLoader(table, [], input_size=(16, 16), batch_size=2, device="cpu",
                        num_threads=1, schedule=AugmentConfig.none())
    batch = next(iter(loader))
    assert np.isfinite(batch["affine"].numpy()).all()
    assert np.isfinite(batch["keypoints"].numpy()).all()


# -- PoseTable built from arrays: the same invariants, row and field named -----------------
def small(kp=None, boxes=None):
    k = np.array([[[10.0, 12.0, 2.0], [20.0, 15.0, 1.0]]] * 3)
    if kp is not None:
        k[1] = kp
    return PoseTable.from_arrays(["a.png", "b.png", "c.png"], k, ["l", "r"], [(40, 30)] * 3,
                                 bboxes=boxes)


@pytest.mark.parametrize("box,field", [([1, 2, 0, 5], "bbox.w"), ([1, 2, 5, 0], "bbox.h"),
                                       ([1, 2, -3, 5], "bbox.w"),
                                       ([1, 2, 5, 1e-300], "bbox.h"),   # 0 in float32
                                       ([np.nan, 2, 5, 5], "bbox.x"),
                                       ([1, 2, np.inf, 5], "bbox.w")])
def test_table_rejects_bad_boxes(box, field):
    boxes = np.array([[0, 0, 30, 20]] * 3, dtype=float)
    boxes[2] = box
    with pytest.raises(AnnotationError) as e:
        small(boxes=boxes)
    assert (e.value.row, e.value.field) == (2, field)


@pytest.mark.parametrize("kp,field", [
    ([[10, 12, 3], [20, 15, 2]], "l.v"),              # unknown visibility
    ([[10, 12, 2], [20, 15, -2]], "r.v"),             # negative, not DLC's -1
    ([[10, 12, 2], [20, 15, np.nan]], "r.v"),
    ([[np.inf, 12, 2], [20, 15, 2]], "l.x/y"),        # labelled but not finite
    ([[10, 12, 2], [20, np.nan, 1]], "r.x/y"),
])
def test_table_rejects_bad_keypoints(kp, field):
    with pytest.raises(AnnotationError) as e:
        small(kp=np.asarray(kp, dtype=float))
    assert (e.value.row, e.value.field) == (1, field)


def test_table_accepts_ignore_and_unlabelled_nan():
    t = small(kp=np.array([[np.nan, np.nan, 0], [5, 6, -1]]))   # v=0 NaN, DLC's v=-1
    assert t.keypoints[1, 1, 2] == -1
    with pytest.raises(AnnotationError) as e:
        PoseTable.from_arrays(["a.png"], np.zeros((1, 1, 3)), ["l"], [(0, 30)])
    assert (e.value.row, e.value.field) == (0, "width")


def test_coco_json_value_types(tmp_path):
    """JSON null / strings where numbers belong name the field (not a TypeError)."""
    data = tiny_coco(tmp_path)
    data["annotations"][0]["bbox"][1] = None
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError) as e:
        load_coco(path)
    assert (e.value.row, e.value.field) == ("annotations[0] (id 10)", "bbox[1]")
    assert json.loads(path.read_text())["annotations"][0]["bbox"][1] is None
