"""Property tests over hostile inputs (issue 7).

Ingestion: random DeepLabCut-like CSV files (NaN, inf, huge, negative, out-of-frame and
non-numeric cells, missing images, duplicated rows, broken headers) and random COCO
annotations either load into a PoseTable whose labelled keypoints are finite and inside
their image (with finite positive boxes), or raise AnnotationError - never another exception.

Codecs: random keypoints with NaN / inf / huge coordinates and ``v`` in {-1, 0, 1, 2} give
finite outputs of the documented shapes, heatmaps / labels / weights in [0, 1], and nothing
drawn for a keypoint that is not labelled or not finite. (tests/test_targets_*.py cover NaN
with in-range values against reference loops; inf and huge values are covered here.)"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from posefeed.datasets import AnnotationError, PoseTable, load_coco, load_dlc
from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC, UDPHeatmap

SIZES = {"img0.png": (40, 30), "img1.png": (25, 50), "img2.png": (60, 20),
         "img3.png": (33, 33)}                              # img9.png is never written
BODYPARTS = ["nose", "tail"]
#: ``REL_EXAMPLES=600`` for a longer search (CI runs the default)
SETTINGS = settings(max_examples=int(os.environ.get("REL_EXAMPLES", 60)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])



def mostly(good, bad, one_in: int = 6):
    """``good`` most of the time, ``bad`` about once in ``one_in`` draws (so that both
    valid tables and every kind of error come up)."""
    return st.integers(0, one_in - 1).flatmap(lambda i: bad if i == 0 else good)


CELLS = mostly(
    mostly(st.floats(-5, 60, allow_nan=False).map(lambda v: f"{v:.3f}"),    # in or just out
           st.just("")),                                                    # NaN: unlabelled
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e400", "-0.5",
                     "abc", " 7 ", "0x10", "1e-320", "-0"]), one_in=12)


def check_table(table: PoseTable) -> None:
    kp = table.keypoints.astype(np.float64)
    sizes = table.image_sizes
    lab = kp[..., 2] > 0
    assert set(np.unique(kp[..., 2])) <= {0.0, 1.0, 2.0}
    assert np.isfinite(kp[..., :2][lab]).all()
    w = np.broadcast_to(sizes[:, None, 0], lab.shape)[lab]
    h = np.broadcast_to(sizes[:, None, 1], lab.shape)[lab]
    x, y = kp[..., 0][lab], kp[..., 1][lab]
    assert ((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)).all()
    boxes = table.bboxes
    assert np.isfinite(boxes).all() and (boxes[:, 2] > 0).all() and (boxes[:, 3] > 0).all()


@st.composite
def dlc_csv(draw) -> str:
    header = ["scorer,me,me,me,me", "bodyparts,nose,nose,tail,tail", "coords,x,y,x,y"]
    mutation = draw(st.sampled_from(["none"] * 16 + ["drop", "extra", "rename", "short"]))
    if mutation == "drop":
        header.pop(draw(st.integers(0, 2)))
    elif mutation == "extra":
        header.insert(2, "individuals,a,a,a,a")
    elif mutation == "rename":
        header[1] = "bodyparts,nose,nose,1.5,1.5"
    elif mutation == "short":
        header[2] = "coords,x,y,x"
    rows = []
    images = sorted(SIZES)
    for _ in range(draw(mostly(st.integers(1, 4), st.just(0), 20))):
        image = draw(mostly(st.sampled_from(images), st.just("img9.png"), 10))
        cells = [draw(CELLS) for _ in range(draw(mostly(st.just(4), st.sampled_from([3, 5]),
                                                         one_in=15)))]
        rows.append(",".join([f"labeled-data/v/{image}"] + cells))
    return "\n".join(header + rows) + "\n"


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in SIZES.items():
        Image.new("RGB", size, (90, 60, 30)).save(folder / name)


@SETTINGS
@given(text=dlc_csv())
def test_dlc_csv_loads_valid_or_raises_annotation_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "labeled-data" / "v"
        write_images(folder)
        path = folder / "CollectedData_me.csv"
        path.write_text(text)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)     # no silent overflow either
            try:
                table = load_dlc(path)
            except AnnotationError as e:
                assert e.file is not None
                return
        check_table(table)
        assert len(table) >= 1 and len(table.bodyparts) == 2


COCO_VALUES = mostly(st.one_of(st.floats(-20, 70, allow_nan=False), st.integers(-3, 60)),
                     st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308,
                                      None, "3", True, [1]]), one_in=15)
VISIBILITY = mostly(st.sampled_from([0, 1, 2, 2]), st.one_of(COCO_VALUES, st.just(-1)), 15)


@st.composite
def coco_dict(draw) -> dict:
    anns = []
    for i in range(draw(st.integers(0, 3))):
        kp = []
        for _ in range(2):
            kp += [draw(COCO_VALUES), draw(COCO_VALUES), draw(VISIBILITY)]
        if draw(st.integers(0, 19)) == 0:
            kp = kp[:-1]
        ann = {"id": draw(mostly(st.just(i + 1), st.integers(1, 3), 10)),
               "image_id": draw(mostly(st.sampled_from([1, 2]), st.just(3), 10)),
               "category_id": 1, "keypoints": kp}
        if draw(st.booleans()):
            ann["bbox"] = [draw(COCO_VALUES) for _ in range(2)] + \
                [draw(mostly(st.floats(0.5, 40), COCO_VALUES, 8)) for _ in range(2)]
        anns.append(ann)
    return {"images": [{"id": 1, "file_name": "img0.png"}, {"id": 2, "file_name": "img1.png"},
                       {"id": 3, "file_name": "img9.png"}],
            "categories": [{"id": 1, "name": "x", "keypoints": BODYPARTS}],
            "annotations": anns}


@SETTINGS
@given(data=coco_dict())
def test_coco_loads_valid_or_raises_annotation_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp))
        path = Path(tmp) / "ann.json"
        path.write_text(json.dumps(data))
        try:
            table = load_coco(path)
        except AnnotationError as e:
            assert e.file == str(path)
            return
        check_table(table)


# -- codecs ----------------------------------------------------------------------------------
INPUT = (48, 64)
CODECS = {
    "simcc": lambda: SimCC(input_size=INPUT),
    "gaussian": lambda: GaussianHeatmap(input_size=INPUT, heatmap_size=(12, 16)),
    "udp": lambda: UDPHeatmap(input_size=INPUT, heatmap_size=(12, 16)),
    "dlc": lambda: DLCHeatmap(stride=4, heatmap_size=(12, 16)),
}
#: outputs bounded to [0, 1] (DLC's locref is an unbounded offset: finite only)
UNIT = {"heatmap", "keypoint_weight", "x_labels", "y_labels", "heatmap_weight", "locref_weight"}
SHAPES = {
    "simcc": lambda b, k: {"x_labels": (b, k, 96), "y_labels": (b, k, 128),
                           "keypoint_weight": (b, k)},
    "gaussian": lambda b, k: {"heatmap": (b, k, 16, 12), "keypoint_weight": (b, k)},
    "udp": lambda b, k: {"heatmap": (b, k, 16, 12), "keypoint_weight": (b, k)},
    "dlc": lambda b, k: {"heatmap": (b, k, 16, 12), "heatmap_weight": (b, k, 16, 12),
                         "locref": (b, 2 * k, 16, 12), "locref_weight": (b, 2 * k, 16, 12)},
}
COORD = st.one_of(st.floats(-100, 150, allow_nan=False, width=32),
                  st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e30, -1e30, 0.0]))


@st.composite
def keypoints(draw) -> np.ndarray:
    b, n, k = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    flat = draw(st.lists(st.tuples(COORD, COORD, st.sampled_from([-1.0, 0.0, 1.0, 2.0])),
                         min_size=b * n * k, max_size=b * n * k))
    return np.asarray(flat, dtype=np.float32).reshape(b, n, k, 3)


@SETTINGS
@given(kp=keypoints(), name=st.sampled_from(sorted(CODECS)))
def test_codec_outputs_are_finite_bounded_and_shaped(kp, name):
    codec = CODECS[name]()
    b, _, k, _ = kp.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # overflow inside is fine; outputs
        out = codec.encode(kp)                            # must not carry it
    assert set(out) == set(codec.output_names)
    for key, shape in SHAPES[name](b, k).items():
        assert out[key].shape == shape and out[key].dtype == np.float32, key
    for key, arr in out.items():
        assert np.isfinite(arr).all(), key
        if key in UNIT:
            assert arr.min() >= 0 and arr.max() <= 1, (key, arr.min(), arr.max())
    # a keypoint no instance labels with finite coordinates draws nothing
    finite = np.isfinite(kp[..., :2]).all(axis=-1)
    drawn = ((kp[..., 2] > 0) & finite).any(axis=1)                 # (B, K)
    maps = out.get("heatmap", out.get("x_labels"))
    assert not maps[~drawn].any()
