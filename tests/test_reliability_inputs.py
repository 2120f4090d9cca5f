"""Annotation and codec inputs as users produce them: COCO files with several keypoint
categories, keypoints with a visibility outside COCO/DeepLabCut's values."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from posefeed.datasets import AnnotationError, load_coco, load_dataset


def two_categories(coco_json, tmp_path, *, dog_annotations: int, person_first: bool = False):
    """coco-mini with a 'dog' keypoint category (id 7) listed before 'person' (unless
    ``person_first``) and ``dog_annotations`` dog annotations on the first image."""
    shutil.copytree(coco_json.parent, tmp_path, dirs_exist_ok=True)
    data = json.loads(coco_json.read_text())
    person = data["categories"][0]
    dog = {"id": 7, "name": "dog", "supercategory": "animal",
           "keypoints": ["nose", "tail_base", "tail_tip"], "skeleton": [[1, 2], [2, 3]]}
    data["categories"] = [person, dog] if person_first else [dog, person]
    first = data["annotations"][0]
    for i in range(dog_annotations):
        data["annotations"].append({"id": 5000 + i, "image_id": first["image_id"],
                                    "category_id": 7, "iscrowd": 0, "bbox": first["bbox"],
                                    "keypoints": [40 + i, 50, 2, 60, 70, 2, 80, 90, 1]})
    path = tmp_path / "two.json"
    path.write_text(json.dumps(data))
    return path, data


def test_unused_first_category_does_not_hide_the_annotated_one(coco_json, tmp_path):
    """'dog' listed first with no annotations: today categories[0] was taken and every
    person annotation dropped ("empty dataset"); the category with annotations is used."""
    path, data = two_categories(coco_json, tmp_path, dog_annotations=0)
    table = load_coco(path)
    person = data["categories"][1]
    assert list(table.bodyparts) == person["keypoints"]
    assert len(table) == len(load_coco(coco_json))


def test_several_annotated_categories_are_refused_naming_them(coco_json, tmp_path):
    path, data = two_categories(coco_json, tmp_path, dog_annotations=2, person_first=True)
    n_person = sum(a.get("category_id") == 1 for a in data["annotations"])
    with pytest.raises(AnnotationError) as e:
        load_coco(path)
    msg = str(e.value)
    assert f"'person' (id 1, {n_person} annotations)" in msg
    assert "'dog' (id 7, 2 annotations)" in msg
    assert "category=" in msg and "--category" in msg and e.value.field == "categories"


@pytest.mark.parametrize("choice", ["dog", 7, "7"])
def test_category_chosen_by_name_or_id(coco_json, tmp_path, choice):
    path, _ = two_categories(coco_json, tmp_path, dog_annotations=2, person_first=True)
    table = load_dataset(path, category=choice)
    assert list(table.bodyparts) == ["nose", "tail_base", "tail_tip"]
    assert len(table) == 2
    np.testing.assert_allclose(table.keypoints[:, :, 2], [[2, 2, 1], [2, 2, 1]])
    assert table.skeleton == [(0, 1), (1, 2)]


def test_unknown_category_is_refused_listing_the_file_s(coco_json, tmp_path):
    path, _ = two_categories(coco_json, tmp_path, dog_annotations=2)
    with pytest.raises(AnnotationError, match="no keypoint category 'cat'.*'dog'.*'person'"):
        load_coco(path, category="cat")


def test_category_for_a_deeplabcut_project_is_refused(dlc_project):
    with pytest.raises(AnnotationError, match="only COCO .json files have categories"):
        load_dataset(dlc_project, category="person")


def codecs():
    from posefeed.targets.dlc_heatmap import DLCHeatmap
    from posefeed.targets.gaussian_heatmap import GaussianHeatmap
    from posefeed.targets.simcc import SimCC
    from posefeed.targets.udp_heatmap import UDPHeatmap

    return [GaussianHeatmap((64, 64), (16, 16)), UDPHeatmap((64, 64), (16, 16)),
            SimCC((64, 64)), DLCHeatmap(4, (16, 16))]


@pytest.mark.parametrize("codec", codecs(), ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("v", [7.0, 3.0, -2.0, 0.5, np.inf])
def test_codecs_refuse_a_visibility_outside_the_conventions(codec, v):
    """v = 7 used to be drawn as visible (MMPose's min(1, v)); every codec refuses it,
    naming the entry."""
    kp = np.zeros((2, 1, 3, 3), np.float32)
    kp[..., :2] = 20.0
    kp[..., 2] = 2.0
    kp[1, 0, 2, 2] = v
    with pytest.raises(ValueError, match=r"keypoints\[1, 0, 2\] has visibility v = "):
        codec.encode(kp)


@pytest.mark.parametrize("codec", codecs(), ids=lambda c: type(c).__name__)
def test_codecs_accept_every_documented_visibility(codec):
    kp = np.zeros((1, 1, 5, 3), np.float32)
    kp[..., :2] = 20.0
    kp[0, 0, :, 2] = [-1, 0, 1, 2, np.nan]
    out = codec.encode(kp)
    assert all(np.isfinite(np.asarray(a)).all() for a in out.values())
