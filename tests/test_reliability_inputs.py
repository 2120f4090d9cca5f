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


# ------------------------------------------------------------ unreadable images at load time
@pytest.fixture()
def dlc_with_bad_frames(dlc_project, tmp_path):
    """The openfield project with frame 3 emptied (zero bytes) and frame 7 replaced by text."""
    project = tmp_path / "openfield"
    shutil.copytree(dlc_project, project)
    frames = project / "labeled-data" / "m4s1"
    (frames / "img0003.png").write_bytes(b"")
    (frames / "img0007.png").write_text("not an image\n")
    return project


BAD = ["labeled-data/m4s1/img0003.png", "labeled-data/m4s1/img0007.png"]


def test_unreadable_images_refuse_the_dataset_by_default(dlc_with_bad_frames):
    with pytest.raises(AnnotationError, match="2 images have unreadable headers") as e:
        load_dataset(dlc_with_bad_frames)
    assert any("zero-byte" in p for p in e.value.problems)
    assert "on_bad_image='skip'" in str(e.value)        # the way on is named in the error


@pytest.mark.parametrize("which", ["project", "csv", "h5"])
def test_skip_leaves_unreadable_images_out_and_lists_them(dlc_project, dlc_with_bad_frames,
                                                          which, caplog):
    path = {"project": dlc_with_bad_frames,
            "csv": dlc_with_bad_frames / "labeled-data/m4s1/CollectedData_Pranav.csv",
            "h5": dlc_with_bad_frames / "labeled-data/m4s1/CollectedData_Pranav.h5"}[which]
    with caplog.at_level("WARNING", logger="posefeed.datasets"):
        table = load_dataset(path, on_bad_image="skip")
    assert len(table) == 116 - 2
    assert not set(BAD) & set(table.images)
    assert table.skipped_images == [str(table.root / b) for b in BAD]
    lines = [p for p in table.problems if "left out image" in p]
    assert len(lines) == 2
    assert "zero-byte" in lines[0] and BAD[0] in lines[0] and "CollectedData_Pranav" in lines[0]
    assert "cannot identify image file" in lines[1] and BAD[1] in lines[1]
    assert any("leaving out 2 of 116 images" in r.getMessage() for r in caplog.records)
    # the other rows are untouched: the same labels as the complete project's rows
    clean = load_dataset(dlc_project)
    keep = [i for i, im in enumerate(clean.frame[("image", "")]) if im not in BAD]
    np.testing.assert_array_equal(table.keypoints, clean.keypoints[keep])


def test_skip_with_every_image_unreadable_still_refuses(dlc_with_bad_frames):
    for f in (dlc_with_bad_frames / "labeled-data" / "m4s1").glob("*.png"):
        f.write_bytes(b"")
    with pytest.raises(AnnotationError, match="116 images have unreadable headers") as e:
        load_dataset(dlc_with_bad_frames, on_bad_image="skip")
    assert "on_bad_image" not in str(e.value)    # skipping every image is no way on


def test_coco_skip_drops_the_annotations_of_an_empty_jpeg(coco_json, tmp_path):
    shutil.copytree(coco_json.parent, tmp_path, dirs_exist_ok=True)
    data = json.loads(coco_json.read_text())
    victim = data["images"][1]
    (tmp_path / victim["file_name"]).write_bytes(b"")
    path = tmp_path / coco_json.name
    with pytest.raises(AnnotationError, match="unreadable headers"):
        load_coco(path)
    table = load_coco(path, on_bad_image="skip")
    full = load_coco(coco_json)
    on_victim = [a for a in data["annotations"] if a["image_id"] == victim["id"]]
    assert len(table) == len(full) - len([r for r in full.frame[("image", "")]
                                          if r == victim["file_name"]])
    assert victim["file_name"] not in table.images
    line = next(p for p in table.problems if "left out image" in p)
    assert victim["file_name"] in line and f"(id {on_victim[0]['id']})" in line


def test_loaders_refuse_an_unknown_on_bad_image(dlc_project, coco_json):
    with pytest.raises(ValueError, match="on_bad_image must be 'raise' or 'skip'"):
        load_dataset(dlc_project, on_bad_image="ignore")
    with pytest.raises(ValueError, match="on_bad_image must be 'raise' or 'skip'"):
        load_coco(coco_json, on_bad_image="drop")


# ------------------------------------------------------------ DeepLabCut files as users have them
CSV = "labeled-data/m4s1/CollectedData_Pranav.csv"
H5 = "labeled-data/m4s1/CollectedData_Pranav.h5"


@pytest.fixture()
def project_copy(dlc_project, tmp_path):
    project = tmp_path / "openfield"
    shutil.copytree(dlc_project, project)
    return project


def test_csv_saved_by_excel_with_a_bom_loads(project_copy, dlc_project):
    """Excel's "CSV UTF-8" starts the file with EF BB BF: it used to be refused as "wrong
    header depth" (the first cell read '\\ufeffscorer')."""
    f = project_copy / CSV
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    table = load_dataset(f)
    np.testing.assert_array_equal(table.keypoints, load_dataset(dlc_project / CSV).keypoints)


def test_latin1_csv_names_the_file_and_the_encoding(project_copy):
    """A Latin-1 file (an accented bodypart name saved by an old editor) raised a raw
    UnicodeDecodeError naming no file."""
    f = project_copy / CSV
    text = f.read_text(encoding="utf-8").replace("snout", "museau_é")
    f.write_bytes(text.encode("latin-1"))
    with pytest.raises(AnnotationError) as e:
        load_dataset(f)
    msg = str(e.value)
    assert str(f) in msg and "not UTF-8" in msg and "b'\\xe9'" in msg
    assert "line 2" in msg and e.value.field == "encoding"


def test_absolute_windows_paths_resolve_by_the_labeled_data_tail(project_copy, dlc_project):
    """An old project labelled on Windows: index entries are absolute paths of that machine."""
    import pandas as pd

    f = project_copy / H5
    df = pd.read_hdf(f)
    df.index = [r"C:\Users\pranav\openfield-Pranav-2018-10-30" + "\\" + p.replace("/", "\\")
                for p in df.index]
    df.to_hdf(f, key="df_with_missing", mode="w")
    (project_copy / CSV).unlink()
    table = load_dataset(project_copy)
    clean = load_dataset(dlc_project)
    assert table.images == clean.images
    np.testing.assert_array_equal(table.keypoints, clean.keypoints)
    line = next(p for p in table.problems if "absolute paths" in p)
    assert "116 image paths" in line and "C:/Users/pranav" in line and "labeled-data" in line


def test_prediction_file_with_likelihood_says_it_is_ignored(project_copy):
    import pandas as pd

    f = project_copy / H5
    df = pd.read_hdf(f)
    scorer = df.columns.get_level_values(0)[0]
    cols = []
    for bp in dict.fromkeys(df.columns.get_level_values(1)):
        cols += [(scorer, bp, c) for c in ("x", "y", "likelihood")]
    pred = pd.DataFrame(index=df.index, columns=pd.MultiIndex.from_tuples(
        cols, names=df.columns.names), dtype=float)
    for c in cols:
        pred[c] = df[c] if c[2] != "likelihood" else 0.3
    pred.to_hdf(f, key="df_with_missing", mode="w")
    (project_copy / CSV).unlink()
    table = load_dataset(project_copy)
    assert any("'likelihood' column" in p and "ignored" in p for p in table.problems)


def test_h5_and_csv_that_differ_say_which_is_used(project_copy):
    f = project_copy / CSV
    lines = f.read_text(encoding="utf-8").splitlines()
    lines = lines[:3] + [lines[3].replace("21.521", "121.521")] + lines[4:-1]   # one value, one row
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = load_dataset(project_copy)
    line = next(p for p in table.problems if "differ" in p)
    assert "CollectedData_Pranav.h5 and CollectedData_Pranav.csv differ" in line
    assert "1 rows only in the .h5" in line and "1 values differ" in line
    assert "using the .h5" in line
    assert len(table) == 116


def test_identical_h5_and_csv_add_no_problem(dlc_project):
    assert load_dataset(dlc_project).problems == []


def test_a_frame_resized_after_labelling_is_said_in_inspect(project_copy):
    """Frame 5 replaced by a half-size copy while its labels (and the other 115 frames) are
    640x480: today only some "outside" lines (keypoints dropped) showed; now one line says
    what happened."""
    from PIL import Image

    from posefeed.cli import _register, app
    from typer.testing import CliRunner

    f = project_copy / "labeled-data/m4s1/img0005.png"
    with Image.open(f) as im:
        im.resize((320, 240)).save(f)
    table = load_dataset(project_copy)
    lines = [p for p in table.problems if "resized or replaced" in p]
    assert len(lines) == 1
    assert "'labeled-data/m4s1/img0005.png' is 320x240" in lines[0]
    assert "other 115 frames of 'labeled-data/m4s1' are 640x480" in lines[0]
    _register()
    res = CliRunner().invoke(app, ["inspect", str(project_copy)])
    assert "resized or replaced" in res.output


def test_frames_of_different_videos_may_differ_in_size(project_copy):
    """Two videos at two sizes are normal: no line."""
    from PIL import Image

    src = project_copy / "labeled-data" / "m4s1"
    other = project_copy / "labeled-data" / "small"
    other.mkdir()
    import pandas as pd

    df = pd.read_hdf(src / "CollectedData_Pranav.h5").iloc[:3]
    df.index = [p.replace("m4s1", "small") for p in df.index]
    df = df / 2
    for p in df.index:
        with Image.open(project_copy / p.replace("small", "m4s1")) as im:
            im.resize((320, 240)).save(project_copy / p)
    df.to_hdf(other / "CollectedData_Pranav.h5", key="df_with_missing", mode="w")
    table = load_dataset(project_copy)
    assert len(table) == 119
    assert not [p for p in table.problems if "resized or replaced" in p]
