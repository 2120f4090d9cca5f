"""The synthetic generator: labels checked against the rendered pixels, files read back by
the loaders, determinism."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from posefeed.datasets import (dataset_path, joint_colours, load_coco, load_dataset, load_dlc,
                               make_synthetic, render_frame, resolve_dataset,
                               synthetic_skeleton)


def pixel(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """The pixel containing (x, y) in the pixel-centre convention."""
    return img[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(123)
    return [render_frame(rng, 17, 3, (320, 240)) for _ in range(16)]


def test_visible_keypoints_sit_on_their_joint_colour(frames):
    colours = joint_colours(17)
    n_visible = 0
    for img, kps in frames:
        assert img.shape == (240, 320, 3) and img.dtype == np.uint8
        assert 1 <= len(kps) <= 3
        for kp in kps:
            for k, (x, y, v) in enumerate(kp):
                if v == 2:
                    n_visible += 1
                    assert (pixel(img, x, y) == colours[k]).all()
    assert n_visible > 100


def test_joint_discs_are_centred_on_the_label(frames):
    """The centroid of the joint-coloured pixels around a visible keypoint is the label: a
    half-pixel convention error would move it by 0.5 px per axis."""
    colours = joint_colours(17)
    errors = []
    ys, xs = np.mgrid[0:240, 0:320]
    for img, kps in frames:
        for kp in kps:
            for k, (x, y, v) in enumerate(kp):
                if v != 2:
                    continue
                near = (xs - x) ** 2 + (ys - y) ** 2 <= 7.0 ** 2
                same = near & (img == colours[k]).all(axis=2)
                errors.append((xs[same].mean() - x, ys[same].mean() - y))
    errors = np.asarray(errors)
    # no systematic shift (a corner/centre mix-up would give +-0.5 on both axes) ...
    assert np.abs(errors.mean(axis=0)).max() < 0.1
    # ... and most discs, pixelated at radius >= 2.5, are centred within a third of a pixel
    assert np.median(np.hypot(*errors.T)) < 0.3


def test_visibility_semantics(frames):
    colours = joint_colours(17)
    counts = {0: 0, 1: 0, 2: 0}
    covered_same_colour = 0
    for img, kps in frames:
        h, w = img.shape[:2]
        for kp in kps:
            assert (kp[:, 2] > 0).any()                    # every instance has a label
            for k, (x, y, v) in enumerate(kp):
                counts[int(v)] += 1
                if v == 0:
                    assert x == 0 and y == 0
                else:
                    assert -0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5
                if v == 1 and (pixel(img, x, y) == colours[k]).all():
                    covered_same_colour += 1
    assert counts[0] > 0 and counts[1] > 0 and counts[2] > counts[1]
    assert covered_same_colour <= 0.1 * counts[1]


def test_figure_stands_out_from_the_background(frames):
    """Pixels at visible keypoints are far (in colour) from the frame's median colour."""
    dists = []
    for img, kps in frames:
        median = np.median(img.reshape(-1, 3), axis=0)
        for kp in kps:
            for x, y, v in kp:
                if v == 2:
                    dists.append(np.abs(pixel(img, x, y).astype(float) - median).sum())
    assert np.median(dists) > 100


def test_skeleton_names_and_sizes():
    names, parents, rest = synthetic_skeleton(17)
    assert names[:3] == ["head", "neck", "left_shoulder"] and len(names) == 17
    assert all(parents[j] < j for j in range(1, 17)) and parents[0] == -1
    names20, parents20, _ = synthetic_skeleton(20)
    assert names20[17:] == ["tail1", "tail2", "tail3"]
    assert names20[:17] == names
    colours = joint_colours(17)
    assert (colours[names.index("left_wrist")] == colours[names.index("right_wrist")]).all()
    assert len({tuple(c) for c in colours}) == 10       # 7 left/right pairs share a colour
    img, kps = render_frame(np.random.default_rng(0), 20, 1, (160, 120))
    assert kps.shape == (1, 20, 3)
    img, kps = render_frame(np.random.default_rng(0), 3, 2, (160, 120))
    assert kps.shape[1:] == (3, 3)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn") / "multi", n_frames=10,
                          n_keypoints=17, max_instances=3, image_size=(320, 240), seed=5)


def test_files_read_back_as_the_truth(multi):
    truth = multi.table
    assert truth.images == [f"labeled-data/synthetic/img{i:05d}.jpg" for i in range(10)]
    cfg = yaml.safe_load((multi.dlc_project / "config.yaml").read_text())
    assert cfg["multianimalproject"] is True
    assert cfg["multianimalbodyparts"] == truth.bodyparts
    assert [list(p) for p in cfg["skeleton"]] == \
        [[truth.bodyparts[a], truth.bodyparts[b]] for a, b in truth.skeleton]
    raw = json.loads(multi.coco_json.read_text())
    assert len(raw["annotations"]) == len(truth)
    np.testing.assert_array_equal(
        np.array([a["keypoints"] for a in raw["annotations"]], dtype=np.float64),
        truth.frame[[c for c in truth.frame.columns if c[1] in ("x", "y", "v")
                     and c[0] != "bbox"]].to_numpy(dtype=np.float64))
    coco = load_coco(multi.coco_json)
    pd.testing.assert_frame_equal(coco.frame, truth.frame)
    assert coco.flip_pairs == truth.flip_pairs and len(truth.flip_pairs) == 7
    for path in (multi.dlc_project, multi.dlc_h5, multi.dlc_csv):
        dlc = load_dlc(path)
        assert dlc.images == truth.images and dlc.individuals == truth.individuals
        np.testing.assert_array_equal(dlc.keypoints[..., :2], truth.keypoints[..., :2])
        # DeepLabCut has no occlusion flag: v = 1 reads back as 2
        np.testing.assert_array_equal(dlc.keypoints[..., 2],
                                      np.where(truth.keypoints[..., 2] > 0, 2, 0))
        np.testing.assert_array_equal(dlc.bboxes, truth.bboxes)
        assert dlc.problems == []
    hdr = pd.read_hdf(multi.dlc_h5)
    assert hdr.columns.nlevels == 4


def test_jpeg_frames_keep_the_joint_colours(multi):
    colours = joint_colours(17).astype(int)
    truth = multi.table
    errs = []
    for r in range(len(truth)):
        im = Image.open(truth.image_path(truth.frame.loc[r, ("image", "")]))
        assert im.size == (320, 240) and im.format == "JPEG"
        img = np.asarray(im.convert("RGB")).astype(int)
        for k, (x, y, v) in enumerate(truth.keypoints[r]):
            if v == 2:
                errs.append(np.abs(pixel(img, x, y) - colours[k]).max())
    assert max(errs) < 45 and np.median(errs) < 15


def test_deterministic_in_seed(multi, tmp_path):
    again = make_synthetic(tmp_path / "again", n_frames=10, n_keypoints=17, max_instances=3,
                           image_size=(320, 240), seed=5)
    pd.testing.assert_frame_equal(again.table.frame, multi.table.frame)
    a = (again.root / again.table.images[3]).read_bytes()
    assert a == (multi.root / multi.table.images[3]).read_bytes()
    other = make_synthetic(tmp_path / "other", n_frames=3, n_keypoints=17, max_instances=3,
                           image_size=(320, 240), seed=6)
    assert not np.array_equal(other.table.keypoints[:1], multi.table.keypoints[:1])


def test_single_animal_is_written_in_single_animal_format(tmp_path):
    ds = make_synthetic(tmp_path / "one", n_frames=4, n_keypoints=6, max_instances=1,
                        image_size=(160, 120), seed=1)
    assert pd.read_hdf(ds.dlc_h5).columns.nlevels == 3
    cfg = yaml.safe_load((ds.root / "config.yaml").read_text())
    assert cfg["multianimalproject"] is False and cfg["bodyparts"] == ds.table.bodyparts
    table = load_dataset(ds.dlc_project)
    assert len(table) == 4 and table.flip_pairs == [(2, 3), (4, 5)]


def test_resolve_synthetic_generates_once(tmp_path):
    kwargs = dict(n_frames=3, n_keypoints=5, max_instances=2, image_size=(96, 64))
    path = dataset_path("synthetic", out=tmp_path / "s", **kwargs)
    assert path == tmp_path / "s" / "coco.json"
    stamp = path.stat().st_mtime_ns
    table = resolve_dataset("synthetic", out=tmp_path / "s", **kwargs)
    assert path.stat().st_mtime_ns == stamp                # reused, not regenerated
    assert table.bodyparts == synthetic_skeleton(5)[0] and len(table.images) == 3
    assert len(load_dataset("synthetic", out=tmp_path / "s", **kwargs)) == len(table)
    assert resolve_dataset(path).bodyparts == table.bodyparts
