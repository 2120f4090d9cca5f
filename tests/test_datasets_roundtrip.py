"""Property test: random tables survive DeepLabCut (.h5, .csv) and COCO round trips."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from posefeed.datasets import PoseTable, load_coco, load_dlc, write_coco, write_dlc
from posefeed.datasets.dlc.boxes import dlc_boxes
from posefeed.datasets.table import keypoint_columns

SIZES = {"labeled-data/v/a.png": (64, 48), "labeled-data/v/b.png": (33, 70),
         "labeled-data/v/c.png": (50, 50)}
BODYPARTS = ["nose", "left_ear", "right_ear", "tail"]


@st.composite
def tables(draw):
    images = draw(st.lists(st.sampled_from(sorted(SIZES)), min_size=1, max_size=3, unique=True))
    multi = draw(st.booleans())
    rows, kps = [], []
    for im in images:
        w, h = SIZES[im]
        n = draw(st.integers(1, 3)) if multi else 1
        for i in range(n):
            kp = np.zeros((len(BODYPARTS), 3))
            for k in range(len(BODYPARTS)):
                if draw(st.booleans()) or k == 0:
                    kp[k] = [draw(st.floats(-0.5, w - 0.5)), draw(st.floats(-0.5, h - 0.5)), 2]
            rows.append((im, f"individual{i}" if multi else "individual0"))
            kps.append(kp)
    return rows, np.stack(kps), multi


def make_images(root):
    for im, size in SIZES.items():
        (root / im).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(root / im)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=tables())
def test_round_trips(tmp_path, data):
    rows, kp, multi = data
    make_images(tmp_path)
    sizes = [SIZES[im] for im, _ in rows]
    table = PoseTable.from_arrays([r[0] for r in rows], kp, BODYPARTS, sizes,
                                  individuals=[r[1] for r in rows], root=tmp_path)
    for suffix in (".h5", ".csv"):
        path = tmp_path / "labeled-data" / "v" / f"CollectedData_x{suffix}"
        write_dlc(table, path, multianimal=multi)
        back = load_dlc(path)
        path.unlink()
        assert back.images == table.images and back.individuals == table.individuals
        # exact float64 equality of every value, bboxes recomputed identically; the areas
        # (unknown in the table, DLC files have none) are DeepLabCut's box areas
        area = ("area", "")
        pd.testing.assert_frame_equal(back.frame.drop(columns=[area]),
                                      table.frame.drop(columns=[area]), check_exact=True)
        np.testing.assert_array_equal(back.frame[area].to_numpy(),
                                      dlc_boxes(back.frame[keypoint_columns(BODYPARTS)].to_numpy(
                                          np.float64).reshape(len(back), -1, 3),
                                          back.image_sizes, 20)[1])
    back = load_coco(write_coco(table, tmp_path / "c.json"))
    np.testing.assert_array_equal(back.keypoints, table.keypoints)
    np.testing.assert_array_equal(back.bboxes, table.bboxes)
    assert [back.image_path(i) for i in back.images] == [table.image_path(i) for i in table.images]
