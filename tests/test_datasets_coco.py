"""COCO loading: the real coco-mini file against a plain json parse, round trips and bad input."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from posefeed.datasets import AnnotationError, load_coco, load_dataset, write_coco, write_dlc

from helpers import tiny_coco, write

COCO_FLIPS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


def jpeg_size(path: Path) -> tuple[int, int]:
    """(width, height) from the first JPEG SOFn marker, read byte by byte."""
    data = path.read_bytes()
    i = 2
    while i < len(data):
        assert data[i] == 0xFF
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF):
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return w, h
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_coco_mini_matches_the_json(coco_json):
    raw = json.loads(coco_json.read_text())
    table = load_coco(coco_json)
    cat = raw["categories"][0]
    assert table.bodyparts == cat["keypoints"]
    assert table.skeleton == [(a - 1, b - 1) for a, b in cat["skeleton"]]
    assert table.flip_pairs == COCO_FLIPS
    images = {im["id"]: im for im in raw["images"]}
    usable = [a for a in raw["annotations"]
              if not a["iscrowd"] and any(v > 0 for v in a["keypoints"][2::3])]
    assert len(raw["annotations"]) == 14 and len(usable) == len(table) == 12
    for r, ann in enumerate(usable):
        im = images[ann["image_id"]]
        assert table.frame.loc[r, ("image", "")] == im["file_name"]
        kp = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        np.testing.assert_array_equal(table.keypoints[r], kp.astype(np.float32))
        np.testing.assert_array_equal(table.frame.loc[r, "bbox"].to_numpy(dtype=np.float64),
                                      ann["bbox"])
        w, h = jpeg_size(coco_json.parent / im["file_name"])
        assert (w, h) == (im["width"], im["height"])
        assert tuple(table.image_sizes[r]) == (w, h)
    assert table.root == coco_json.parent
    assert table.problems == []
    # individuals are numbered per image in annotation order
    assert table.individuals[:3] == ["individual0", "individual0", "individual1"]


def test_coco_round_trip(coco_json, tmp_path):
    table = load_coco(coco_json)
    out = write_coco(table, tmp_path / "sub" / "rt.json")
    back = load_dataset(out)
    assert [back.image_path(i).resolve() for i in back.images] == \
        [table.image_path(i).resolve() for i in table.images]
    np.testing.assert_array_equal(back.keypoints, table.keypoints)
    np.testing.assert_array_equal(back.bboxes, table.bboxes)
    assert back.bodyparts == table.bodyparts and back.skeleton == table.skeleton
    assert back.individuals == table.individuals
    written = json.loads(out.read_text())
    assert written["categories"][0]["skeleton"] == \
        json.loads(coco_json.read_text())["categories"][0]["skeleton"]
    # and through DeepLabCut's multi-animal format
    dlc = write_dlc(table, tmp_path / "CollectedData_x.h5")
    back = load_dataset(dlc, root=coco_json.parent)
    np.testing.assert_array_equal(back.keypoints[..., :2], table.keypoints[..., :2])
    assert ((back.keypoints[..., 2] > 0) == (table.keypoints[..., 2] > 0)).all()


def test_image_root_and_flip_override(coco_json, tmp_path):
    shutil.copy(coco_json, tmp_path / "a.json")
    table = load_coco(tmp_path / "a.json", image_root=coco_json.parent, flip_pairs=[])
    assert table.flip_pairs == [] and table.root == coco_json.parent
    with pytest.raises(AnnotationError) as e:
        load_coco(tmp_path / "a.json")                        # images not beside the json
    assert e.value.field == "image" and len(e.value.problems) == 4


# -- bad input ---------------------------------------------------------------------------
def test_tiny_coco(tmp_path):
    table = load_coco(write(tmp_path, tiny_coco(tmp_path)))
    assert len(table) == 2                                    # the crowd one is dropped
    assert table.flip_pairs == [(0, 1)] and table.skeleton == [(0, 2), (1, 2)]
    np.testing.assert_array_equal(table.keypoints[0], [[10, 20, 2], [30, 20, 1], [20, 5, 2]])
    np.testing.assert_array_equal(table.image_sizes, [[100, 80], [50, 40]])


@pytest.mark.parametrize("v", [-1, 3, 1.5])
def test_error_bad_visibility(tmp_path, v):
    data = tiny_coco(tmp_path)
    data["annotations"][1]["keypoints"][8] = v
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError) as e:
        load_coco(path)
    assert e.value.file == str(path)
    assert e.value.row == "annotations[1] (id 11)"
    assert e.value.field == "keypoints[8] (nose.v)"


@pytest.mark.parametrize("bbox", [[1, 2, 0, 40], [1, 2, 30, 0], [1, 2, -3, 5],
                                  [1, 2, 30, 1.6e-164]])    # > 0, but 0 in the float32 views
def test_error_zero_area_box(tmp_path, bbox):
    data = tiny_coco(tmp_path)
    data["annotations"][0]["bbox"] = bbox
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError, match="zero area") as e:
        load_coco(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "annotations[0] (id 10)",
                                                          "bbox")


def test_error_inf_coordinate(tmp_path):
    data = tiny_coco(tmp_path)
    data["annotations"][0]["keypoints"][3] = float("inf")
    path = write(tmp_path, data)                              # json writes Infinity
    with pytest.raises(AnnotationError) as e:
        load_coco(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "annotations[0] (id 10)",
                                                          "keypoints[3]")


def test_error_missing_images_lists_all(tmp_path):
    data = tiny_coco(tmp_path)
    (tmp_path / "a.jpg").unlink()
    (tmp_path / "b.jpg").unlink()
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError) as e:
        load_coco(path)
    assert e.value.file == str(path) and e.value.field == "image" and e.value.row == "a.jpg"
    assert len(e.value.problems) == 2 and "b.jpg" in e.value.problems[1]


def test_error_unknown_image_and_empty(tmp_path):
    data = tiny_coco(tmp_path)
    bad = copy.deepcopy(data)
    bad["annotations"][0]["image_id"] = 99
    path = write(tmp_path, bad)
    with pytest.raises(AnnotationError) as e:
        load_coco(path)
    assert (e.value.row, e.value.field) == ("annotations[0] (id 10)", "image_id")
    empty = copy.deepcopy(data)
    for a in empty["annotations"]:
        a["keypoints"] = [0] * 9
    with pytest.raises(AnnotationError, match="empty dataset"):
        load_coco(write(tmp_path, empty))
    wrong_len = copy.deepcopy(data)
    wrong_len["annotations"][1]["keypoints"] = [1, 2, 2]
    with pytest.raises(AnnotationError) as e:
        load_coco(write(tmp_path, wrong_len))
    assert (e.value.row, e.value.field) == ("annotations[1] (id 11)", "keypoints")
    skel = copy.deepcopy(data)
    skel["categories"][0]["skeleton"] = [[0, 1]]              # 0 is not a 1-based index
    with pytest.raises(AnnotationError) as e:
        load_coco(write(tmp_path, skel))
    assert e.value.field == "skeleton"


def test_keypoints_outside_image_are_flagged(tmp_path):
    data = tiny_coco(tmp_path)
    data["annotations"][1]["keypoints"][6:8] = [50, 4]       # x = 50 > 50 - 0.5
    path = write(tmp_path, data)
    table = load_coco(path)
    np.testing.assert_array_equal(table.keypoints[1, 2], [0, 0, 0])
    assert len(table.problems) == 1
    line = table.problems[0]
    assert str(path) in line and "annotations[1] (id 11)" in line and "'nose'" in line


def test_declared_size_mismatch_is_a_problem(tmp_path):
    data = tiny_coco(tmp_path)
    data["images"][0]["width"] = 101
    table = load_coco(write(tmp_path, data))
    assert tuple(table.image_sizes[0]) == (100, 80)
    assert len(table.problems) == 1 and "a.jpg" in table.problems[0]


def test_error_non_numeric_keypoint(tmp_path):
    data = tiny_coco(tmp_path)
    data["annotations"][1]["keypoints"][4] = "12"
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError) as e:
        load_coco(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "annotations[1] (id 11)",
                                                          "keypoints[4]")
