"""DeepLabCut loading: the real openfield project, hand-made multi-animal files in both
index forms, round trips, splits and every kind of bad input."""
from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from posefeed.datasets import (AnnotationError, PoseTable, load_dataset, load_dlc, write_coco,
                               write_dlc)

from helpers import GOOD_BODY, single_project, write_images

OPENFIELD_CSV = "labeled-data/m4s1/CollectedData_Pranav.csv"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk, read with struct."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


# -- the real project ---------------------------------------------------------------------
def test_openfield_values_match_the_csv(dlc_project):
    table = load_dlc(dlc_project)
    with open(dlc_project / OPENFIELD_CSV, newline="") as f:
        rows = list(csv.reader(f))
    header_bp, body = rows[1], rows[3:]
    bodyparts = list(dict.fromkeys(header_bp[1:]))
    assert table.bodyparts == bodyparts == ["snout", "leftear", "rightear", "tailbase"]
    assert len(table) == len(table.images) == len(body) == 116
    assert table.images == [r[0] for r in body]
    assert set(table.individuals) == {"individual0"}
    for j, name in enumerate(header_bp[1:]):
        coord = rows[2][1 + j]
        expected = np.array([float(r[1 + j]) for r in body])
        got = table.frame[(name, coord)].to_numpy(dtype=np.float64)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert (table.keypoints[..., 2] == 2).all()          # no NaN in this project
    assert table.flip_pairs == [(1, 2)]                   # leftear <-> rightear
    assert table.skeleton == []
    assert table.problems == []
    assert table.root == dlc_project
    for im, (w, h) in zip(table.frame[("image", "")], table.image_sizes):
        assert (w, h) == png_size(dlc_project / im)
    assert table.image_path(table.images[0]).is_file()


def test_openfield_bboxes_are_keypoints_plus_margin(dlc_project):
    table = load_dlc(dlc_project)
    with open(dlc_project / OPENFIELD_CSV, newline="") as f:
        body = list(csv.reader(f))[3:]
    for i, r in enumerate(body):
        xs = [float(r[c]) for c in (1, 3, 5, 7)]
        ys = [float(r[c]) for c in (2, 4, 6, 8)]
        x0, y0 = max(min(xs) - 20, -0.5), max(min(ys) - 20, -0.5)
        x1, y1 = min(max(xs) + 20, 639.5), min(max(ys) + 20, 479.5)
        np.testing.assert_allclose(table.frame.loc[i, "bbox"].to_numpy(dtype=float),
                                   [x0, y0, x1 - x0, y1 - y0], atol=1e-9)


def test_openfield_h5_csv_and_project_agree(dlc_project):
    project = load_dlc(dlc_project)
    h5 = load_dataset(dlc_project / "labeled-data/m4s1/CollectedData_Pranav.h5")
    csv_ = load_dataset(dlc_project / OPENFIELD_CSV)
    pd.testing.assert_frame_equal(project.frame, h5.frame)
    pd.testing.assert_frame_equal(project.frame, csv_.frame, check_exact=False, atol=1e-9)
    assert csv_.root == dlc_project


def test_openfield_round_trip(dlc_project, tmp_path):
    table = load_dlc(dlc_project)
    for suffix in (".h5", ".csv"):
        out = tmp_path / f"CollectedData_rt{suffix}"
        write_dlc(table, out)
        back = load_dlc(out, root=dlc_project)
        pd.testing.assert_frame_equal(back.frame, table.frame)
        assert back.bodyparts == table.bodyparts
    coco = write_coco(table, tmp_path / "rt.json")
    back = load_dataset(coco)
    assert [back.image_path(i).resolve() for i in back.images] == \
        [table.image_path(i).resolve() for i in table.images]
    np.testing.assert_array_equal(back.keypoints, table.keypoints)
    np.testing.assert_array_equal(back.bboxes, table.bboxes)


def test_flip_pairs_override(dlc_project):
    assert load_dlc(dlc_project, flip_pairs=[]).flip_pairs == []
    assert load_dlc(dlc_project, flip_pairs=[("rightear", "leftear")]).flip_pairs == [(2, 1)]
    assert load_dlc(dlc_project, flip_pairs=[(0, 3)]).flip_pairs == [(0, 3)]


# -- hand-made projects ------------------------------------------------------------------
W, H = 80, 60
NAN = np.nan
MULTI_BP = ["snout", "leftear", "rightear", "tail"]
# frame -> individual -> {bodypart: (x, y)}; anything absent is NaN
MULTI_LABELS = {
    "img0.png": {"mus1": {"snout": (10.0, 12.5), "leftear": (8.0, 9.0), "rightear": (12.0, 9.0),
                          "tail": (30.25, 40.0)},
                 "mus2": {"snout": (50.0, 20.0), "rightear": (52.0, 18.0), "tail": (70.0, 44.0)},
                 "mus3": {},
                 "single": {"corner": (0.0, 59.0)}},
    "img1.png": {"mus1": {},
                 "mus2": {"snout": (5.5, 6.5), "leftear": (4.0, 4.0), "rightear": (7.0, 4.0),
                          "tail": (20.0, 30.0)},
                 "mus3": {"tail": (79.0, 0.0)},
                 "single": {}},
    "img2.png": {"mus1": {}, "mus2": {}, "mus3": {}, "single": {}},
}
# (image, individual) rows the loader must return, in frame-major, column order
MULTI_ROWS = [("img0.png", "mus1"), ("img0.png", "mus2"), ("img0.png", "single"),
              ("img1.png", "mus2"), ("img1.png", "mus3")]


def multi_frame(index_form: str) -> pd.DataFrame:
    cols, data = [], {}
    for ind in ["mus1", "mus2", "mus3", "single"]:
        for bp in (["corner"] if ind == "single" else MULTI_BP):
            for c in "xy":
                cols.append(("me", ind, bp, c))
    images = list(MULTI_LABELS)
    for col in cols:
        _, ind, bp, c = col
        data[col] = [MULTI_LABELS[im][ind].get(bp, (NAN, NAN))["xy".index(c)] for im in images]
    if index_form == "tuple":
        index = pd.MultiIndex.from_tuples([("labeled-data", "vidA", im) for im in images])
    else:
        index = pd.Index([f"labeled-data/vidA/{im}" for im in images])
    frame = pd.DataFrame(data, index=index)
    frame.columns = pd.MultiIndex.from_tuples(cols,
                                              names=["scorer", "individuals", "bodyparts", "coords"])
    return frame


def make_multi_project(root: Path, index_form: str, suffix: str) -> Path:
    cfg = {"Task": "t", "scorer": "me", "multianimalproject": True,
           "individuals": ["mus1", "mus2", "mus3"], "multianimalbodyparts": MULTI_BP,
           "uniquebodyparts": ["corner"], "bodyparts": "MULTI!",
           "skeleton": [["snout", "tail"], ["leftear", "rightear"]]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    folder = root / "labeled-data" / "vidA"
    write_images(folder, MULTI_LABELS)
    frame = multi_frame(index_form)
    path = folder / f"CollectedData_me{suffix}"
    if suffix == ".h5":
        frame.to_hdf(path, key="df_with_missing", mode="w")
    else:
        frame.to_csv(path)
    return root


@pytest.mark.parametrize("suffix", [".h5", ".csv"])
@pytest.mark.parametrize("index_form", ["tuple", "string"])
def test_multi_animal_project(tmp_path, index_form, suffix):
    root = make_multi_project(tmp_path / "proj", index_form, suffix)
    table = load_dlc(root)
    bodyparts = MULTI_BP + ["corner"]
    assert table.bodyparts == bodyparts
    assert table.unique_bodyparts == ["corner"]
    assert table.skeleton == [(0, 3), (1, 2)]
    assert table.flip_pairs == [(1, 2)]
    assert list(zip([Path(i).name for i in table.frame[("image", "")]], table.individuals)) \
        == MULTI_ROWS
    assert table.images == ["labeled-data/vidA/img0.png", "labeled-data/vidA/img1.png"]
    assert (table.image_sizes == [W, H]).all()
    kp = table.keypoints
    for r, (im, ind) in enumerate(MULTI_ROWS):
        for k, bp in enumerate(bodyparts):
            xy = MULTI_LABELS[im][ind].get(bp)
            if xy is None:
                assert tuple(kp[r, k]) == (0.0, 0.0, 0.0)
            else:
                assert tuple(kp[r, k]) == (xy[0], xy[1], 2.0)
    assert table.problems == []


def test_multi_animal_round_trip_and_formats(tmp_path):
    root = make_multi_project(tmp_path / "proj", "tuple", ".h5")
    table = load_dlc(root)
    for suffix in (".h5", ".csv"):
        out = root / "labeled-data" / "vidA" / f"CollectedData_me{suffix}"
        out.unlink(missing_ok=True)
        write_dlc(table, out, scorer="me")
        raw = pd.read_hdf(out) if suffix == ".h5" else pd.read_csv(out, header=[0, 1, 2, 3],
                                                                   index_col=[0, 1, 2])
        assert raw.columns.nlevels == 4
        assert isinstance(raw.index, pd.MultiIndex)
        back = load_dlc(out)
        pd.testing.assert_frame_equal(back.frame, table.frame)
        assert back.unique_bodyparts == ["corner"]
        out.unlink()


def test_single_animal_csv_keeps_all_nan_first_row(tmp_path):
    folder = tmp_path / "labeled-data" / "v"
    write_images(folder, ["img0.png", "img1.png"])
    (folder / "CollectedData_me.csv").write_text(
        "scorer,me,me,me,me\n"
        "bodyparts,paw_L,paw_L,paw_R,paw_R\n"
        "coords,x,y,x,y\n"
        "labeled-data/v/img0.png,,,,\n"
        "labeled-data/v/img1.png,10.5,20.25,30,40\n")
    table = load_dlc(folder / "CollectedData_me.csv")
    assert table.images == ["labeled-data/v/img0.png", "labeled-data/v/img1.png"]
    np.testing.assert_array_equal(table.keypoints[0], np.zeros((2, 3)))
    np.testing.assert_array_equal(table.keypoints[1], [[10.5, 20.25, 2], [30, 40, 2]])
    assert table.flip_pairs == [(0, 1)]
    # a frame with nothing labelled gets the whole image as its box
    np.testing.assert_allclose(table.bboxes[0], [-0.5, -0.5, W, H])
    # written back, the NaN row survives the CSV round trip too
    write_dlc(table, folder / "CollectedData_me.csv")
    pd.testing.assert_frame_equal(load_dlc(folder / "CollectedData_me.csv").frame, table.frame)


def test_single_animal_bare_file_names_and_keypoints_outside(tmp_path):
    folder = tmp_path / "labeled-data" / "v"
    write_images(folder, ["a.png", "b.png"])
    (folder / "CollectedData_me.csv").write_text(
        "scorer,me,me,me,me\n"
        "bodyparts,nose,nose,tail,tail\n"
        "coords,x,y,x,y\n"
        "a.png,1,2,79.5,3\n"
        "b.png,-0.6,2,79.4,59.4\n")
    table = load_dlc(folder / "CollectedData_me.csv")
    assert table.images == ["labeled-data/v/a.png", "labeled-data/v/b.png"]
    # 79.5 is past the right edge (W - 0.5 = 79.5 is the edge itself: inside); -0.6 is outside
    kp = table.keypoints
    np.testing.assert_array_equal(kp[0], [[1, 2, 2], [79.5, 3, 2]])
    np.testing.assert_array_equal(kp[1, 0], [0, 0, 0])
    np.testing.assert_allclose(kp[1, 1], [79.4, 59.4, 2], rtol=1e-6)
    assert len(table.problems) == 1
    line = table.problems[0]
    assert "CollectedData_me.csv" in line and "labeled-data/v/b.png" in line and "'nose'" in line


def test_split_by_image(tmp_path):
    root = make_multi_project(tmp_path / "proj", "tuple", ".h5")
    table = load_dlc(root)
    train, test = table.split(0.5, seed=3)
    assert len(train) + len(test) == len(table)
    assert not set(train.images) & set(test.images)
    for part in (train, test):
        for im in part.images:                       # every instance of an image together
            assert (part.frame[("image", "")] == im).sum() == (table.frame[("image", "")] == im).sum()


def test_split_openfield_like_dlc(dlc_project):
    table = load_dlc(dlc_project)
    train, test = table.split(0.95, seed=1)
    assert len(train.images) == round(0.95 * 116) == 110
    assert len(test.images) == 6
    assert set(train.images) | set(test.images) == set(table.images)
    again, _ = table.split(0.95, seed=1)
    assert again.images == train.images
    other, _ = table.split(0.95, seed=2)
    assert set(other.images) != set(train.images)
    # rows keep the table's order
    order = {im: i for i, im in enumerate(table.images)}
    assert [order[i] for i in train.images] == sorted(order[i] for i in train.images)
    full, empty = table.split(1.0, seed=0)
    assert len(full) == 116 and len(empty) == 0
    with pytest.raises(ValueError):
        table.split(1.5)


# -- bad input -------------------------------------------------------------------------
def test_error_missing_images_lists_all(tmp_path):
    path = single_project(tmp_path, GOOD_BODY + "labeled-data/v/img2.png,1,1,1,1\n"
                          "labeled-data/v/img3.png,1,1,1,1\n")
    with pytest.raises(AnnotationError) as e:
        load_dlc(path.parents[2])
    err = e.value
    assert err.file == str(path) and err.field == "image" and err.row == "labeled-data/v/img2.png"
    assert len(err.problems) == 2
    assert "img2.png" in err.problems[0] and "img3.png" in err.problems[1]
    assert "img2.png" in str(err) and "img3.png" in str(err)


def test_error_unreadable_image_header(tmp_path):
    path = single_project(tmp_path, GOOD_BODY)
    (path.parent / "img1.png").write_bytes(b"this is not a png at all")
    with pytest.raises(AnnotationError) as e:
        load_dlc(path)
    assert e.value.file == str(path) and e.value.row == "labeled-data/v/img1.png"
    assert e.value.field == "image"
    (path.parent / "img1.png").write_bytes(b"")
    with pytest.raises(AnnotationError, match="zero-byte"):
        load_dlc(path)


def test_error_inf_coordinate(tmp_path):
    path = single_project(tmp_path, "labeled-data/v/img0.png,1,2,3,4\n"
                                    "labeled-data/v/img1.png,5,inf,7,8\n")
    with pytest.raises(AnnotationError) as e:
        load_dlc(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "labeled-data/v/img1.png",
                                                          "nose/y")


def test_error_inf_in_h5(tmp_path):
    root = make_multi_project(tmp_path / "proj", "tuple", ".h5")
    path = root / "labeled-data/vidA/CollectedData_me.h5"
    frame = multi_frame("tuple")
    frame.loc[("labeled-data", "vidA", "img1.png"), ("me", "mus2", "tail", "x")] = -np.inf
    frame.to_hdf(path, key="df_with_missing", mode="w")
    with pytest.raises(AnnotationError) as e:
        load_dlc(root)
    assert (e.value.file, e.value.row, e.value.field) == (
        str(path), "labeled-data/vidA/img1.png", "mus2/tail/x")


def test_error_duplicated_rows(tmp_path):
    path = single_project(tmp_path, GOOD_BODY + "labeled-data/v/img0.png,1,2,3,4\n")
    with pytest.raises(AnnotationError) as e:
        load_dlc(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "labeled-data/v/img0.png",
                                                          "index")


def test_error_bodyparts_disagree_with_config(tmp_path):
    path = single_project(tmp_path, GOOD_BODY, bodyparts=("nose", "tailbase"))
    with pytest.raises(AnnotationError) as e:
        load_dlc(path.parents[2])
    assert e.value.file == str(path) and e.value.field == "bodyparts"
    assert "'tail'" in str(e.value) and "'tailbase'" in str(e.value)


def test_error_multi_bodyparts_disagree_with_config(tmp_path):
    root = make_multi_project(tmp_path / "proj", "string", ".csv")
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    cfg["multianimalbodyparts"] = ["snout", "leftear", "rightear", "tailtip"]
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(AnnotationError) as e:
        load_dlc(root)
    assert e.value.file.endswith("CollectedData_me.csv") and e.value.field == "bodyparts"


@pytest.mark.parametrize("header", [
    "scorer,me,me,me,me\ncoords,x,y,x,y\n",                       # 2 levels
    "scorer,me,me,me,me\nindividuals,a,a,a,a\nbodyparts,nose,nose,tail,tail\n"
    "extra,q,q,q,q\ncoords,x,y,x,y\n",                            # 5 levels
    "labeled-data/v/img9.png,1,2,3,4\n",                          # no header at all
])
def test_error_wrong_header_depth_csv(tmp_path, header):
    path = single_project(tmp_path, GOOD_BODY, header=header)
    with pytest.raises(AnnotationError) as e:
        load_dlc(path)
    assert e.value.file == str(path) and e.value.field == "header"


def test_error_wrong_header_depth_h5(tmp_path):
    path = single_project(tmp_path, GOOD_BODY)
    h5 = path.with_suffix(".h5")
    frame = pd.DataFrame([[1.0, 2.0]], index=["labeled-data/v/img0.png"],
                         columns=pd.MultiIndex.from_tuples([("nose", "x"), ("nose", "y")],
                                                           names=["bodyparts", "coords"]))
    frame.to_hdf(h5, key="df_with_missing", mode="w")
    with pytest.raises(AnnotationError) as e:
        load_dlc(h5)
    assert e.value.file == str(h5) and e.value.field == "header"
    # a 4-level file in a single-animal project
    make = multi_frame("string")
    make.to_hdf(h5, key="df_with_missing", mode="w")
    with pytest.raises(AnnotationError) as e:
        load_dlc(h5)
    assert e.value.file == str(h5) and e.value.field == "header"


def test_error_h5_without_table_or_wrong_key(tmp_path):
    import tables

    path = single_project(tmp_path, GOOD_BODY)
    h5 = path.with_suffix(".h5")
    with tables.open_file(h5, "w") as f:
        f.create_array("/", "junk", np.arange(3))
    with pytest.raises(AnnotationError) as e:
        load_dlc(h5)
    assert e.value.file == str(h5) and e.value.field == "key"
    frame = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    frame.to_hdf(h5, key="first", mode="w")
    frame.to_hdf(h5, key="second", mode="a")
    with pytest.raises(AnnotationError) as e:
        load_dlc(h5)
    assert e.value.file == str(h5) and e.value.field == "key" and "first" in str(e.value)
    assert len(load_dlc(h5, key="second")) == 2
    with pytest.raises(AnnotationError) as e:
        load_dlc(h5, key="df_with_missing")
    assert e.value.field == "key"


def test_error_empty_dataset(tmp_path):
    root = tmp_path / "proj"
    (root / "labeled-data" / "v").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"bodyparts": ["a"]}))
    with pytest.raises(AnnotationError, match="empty dataset") as e:
        load_dlc(root)
    assert e.value.file == str(root)
    # a multi-animal file where nothing is labelled
    root = make_multi_project(tmp_path / "multi", "tuple", ".h5")
    path = root / "labeled-data/vidA/CollectedData_me.h5"
    frame = multi_frame("tuple") * np.nan
    frame.to_hdf(path, key="df_with_missing", mode="w")
    with pytest.raises(AnnotationError, match="empty dataset"):
        load_dlc(root)
    # a header with no rows
    path = single_project(tmp_path / "s", "")
    with pytest.raises(AnnotationError, match="empty dataset"):
        load_dlc(path)


def test_error_non_numeric_cell(tmp_path):
    path = single_project(tmp_path, "labeled-data/v/img0.png,1,2,abc,4\n")
    with pytest.raises(AnnotationError) as e:
        load_dlc(path)
    assert (e.value.file, e.value.row, e.value.field) == (str(path), "labeled-data/v/img0.png",
                                                          "tail/x")


def test_load_dataset_dispatch_errors(tmp_path):
    with pytest.raises(AnnotationError):
        load_dataset(tmp_path)                       # folder without config.yaml
    with pytest.raises(AnnotationError):
        load_dataset(tmp_path / "nothing.h5")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(AnnotationError, match="unknown dataset type"):
        load_dataset(tmp_path / "x.txt")


def test_from_arrays_table_is_a_posetable(dlc_project):
    table = load_dataset(dlc_project)
    assert isinstance(table, PoseTable)
    # row 0 as the CSV's first data line says (typed from the file), 640 x 480 PNG frames
    row = table.frame.iloc[0]
    assert row[("image", "")] == "labeled-data/m4s1/img0000.png"
    assert (row[("width", "")], row[("height", "")]) == (640, 480)
    assert [row[("snout", c)] for c in "xyv"] == pytest.approx([21.521, 265.428, 2.0])
    assert [row[("tailbase", c)] for c in "xyv"] == pytest.approx([87.11, 152.698, 2.0])
    # and it is exactly what from_arrays builds from its own arrays
    again = PoseTable.from_arrays(table.frame[("image", "")].tolist(), table.keypoints,
                                  table.bodyparts, table.image_sizes,
                                  individuals=table.individuals, bboxes=table.bboxes,
                                  areas=table.areas, flip_pairs=table.flip_pairs,
                                  skeleton=table.skeleton, root=table.root)
    pd.testing.assert_frame_equal(again.frame, table.frame.astype(again.frame.dtypes),
                                  check_exact=False, rtol=1e-6)


def test_project_with_several_folders_h5_first_then_csv(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump({"bodyparts": ["nose", "tail"]}))
    a, b = root / "labeled-data" / "a", root / "labeled-data" / "b"
    write_images(a, ["f0.png"])
    write_images(b, ["f0.png", "f1.png"], size=(40, 30))
    head = "scorer,me,me,me,me\nbodyparts,tail,tail,nose,nose\ncoords,x,y,x,y\n"
    (a / "CollectedData_me.csv").write_text(head + "labeled-data/a/f0.png,9,9,9,9\n")
    pd.DataFrame([[1.0, 2.0, 3.0, 4.0]], index=["labeled-data/a/f0.png"],
                 columns=pd.MultiIndex.from_tuples(
                     [("me", "nose", "x"), ("me", "nose", "y"), ("me", "tail", "x"),
                      ("me", "tail", "y")], names=["scorer", "bodyparts", "coords"])
                 ).to_hdf(a / "CollectedData_me.h5", key="keypoints", mode="w")
    (b / "CollectedData_me.csv").write_text(head + "labeled-data/b/f0.png,5,6,7,8\n"
                                            "labeled-data/b/f1.png,,,1,2\n")
    table = load_dlc(root)
    assert table.bodyparts == ["nose", "tail"]                 # config order, not file order
    assert table.images == ["labeled-data/a/f0.png", "labeled-data/b/f0.png",
                            "labeled-data/b/f1.png"]
    # folder a: the .h5 wins over the .csv; folder b: the .csv (tail listed first in it)
    np.testing.assert_array_equal(table.keypoints[:, :, :2],
                                  [[[1, 2], [3, 4]], [[7, 8], [5, 6]], [[1, 2], [0, 0]]])
    np.testing.assert_array_equal(table.keypoints[:, :, 2], [[2, 2], [2, 2], [2, 0]])
    np.testing.assert_array_equal(table.image_sizes, [[W, H], [40, 30], [40, 30]])
