"""Flip pairs inferred from bodypart names."""
from __future__ import annotations

import pytest

from posefeed.datasets import AnnotationError, infer_flip_pairs
from posefeed.datasets.flip import resolve_flip_pairs


@pytest.mark.parametrize("left,right", [
    ("leftear", "rightear"), ("left_eye", "right_eye"), ("l_paw", "r_paw"),
    ("paw_L", "paw_R"), ("LeftHand", "RightHand"), ("ear_left", "ear_right"),
    ("front-l-paw", "front-r-paw"), ("hind_Left_foot", "hind_right_foot"),
    ("L_wrist", "r_wrist"), ("left ankle", "right ankle"),
])
def test_pairs_in_any_form(left, right):
    assert infer_flip_pairs(["snout", right, "tail", left]) == [(3, 1)]


def test_no_false_pairs():
    names = ["snout", "tail", "lr", "leftear", "lefteye", "r", "spine_l1", "spine_r2",
             "centre", "hind_l", "front_r"]
    assert infer_flip_pairs(names) == []


def test_coco_names():
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
             "right_shoulder"]
    assert infer_flip_pairs(names) == [(1, 2), (3, 4), (5, 6)]


def test_ambiguous_duplicates_are_skipped():
    # two names map to the same left key: no pair is made for it
    assert infer_flip_pairs(["left_ear", "Left_ear", "right_ear", "l_paw", "r_paw"]) == [(3, 4)]


def test_override_by_name_or_index():
    names = ["a", "b", "c"]
    assert resolve_flip_pairs(names, [("a", "c")]) == [(0, 2)]
    assert resolve_flip_pairs(names, [(1, 2)]) == [(1, 2)]
    assert resolve_flip_pairs(["left_x", "right_x"], None) == [(0, 1)]
    with pytest.raises(AnnotationError) as e:
        resolve_flip_pairs(names, [("a", "zz")])
    assert e.value.field == "flip_pairs"
    with pytest.raises(AnnotationError):
        resolve_flip_pairs(names, [(0, 3)])


def test_overlapping_flip_pairs_are_refused():
    """A keypoint in two pairs would make the flip permutation drop one channel and
    duplicate another; the table refuses it and names the field."""
    import numpy as np
    import pytest

    from posefeed.datasets import AnnotationError, PoseTable

    kp = np.zeros((1, 3, 3))
    for pairs in ([(0, 1), (1, 2)], [(1, 1)]):
        with pytest.raises(AnnotationError) as err:
            PoseTable.from_arrays(["a.png"], kp, ["a", "b", "c"], [(10, 10)], flip_pairs=pairs)
        assert err.value.field == "flip_pairs"
    ok = PoseTable.from_arrays(["a.png"], kp, ["a", "b", "c"], [(10, 10)], flip_pairs=[(0, 2)])
    assert ok.flip_pairs == [(0, 2)]
