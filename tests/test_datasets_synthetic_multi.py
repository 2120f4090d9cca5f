"""``make_synthetic(..., animals=N)``: a multi-animal DeepLabCut project with identities
(the same N individuals in every frame, crowded so they overlap and occlude each other),
read back by ``load_dlc`` with the exact labels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from posefeed.datasets import load_dlc
from posefeed.pipelines import AugmentConfig, PoseLoader
from posefeed.datasets.synthetic import make_synthetic, synthetic_skeleton
from posefeed.targets import DEKR, PartAffinityField


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("crowd"), n_frames=12, n_keypoints=12,
                          image_size=(256, 192), seed=3, animals=3)


def test_project_is_multi_animal(crowd):
    cfg = yaml.safe_load((crowd.dlc_project / "config.yaml").read_text())
    names, parents, _ = synthetic_skeleton(12)
    assert cfg["multianimalproject"] is True
    assert cfg["individuals"] == ["individual0", "individual1", "individual2"]
    assert cfg["multianimalbodyparts"] == names and cfg["uniquebodyparts"] == []
    assert cfg["skeleton"] == [[names[p], names[j]] for j, p in enumerate(parents) if p >= 0]
    df = pd.read_hdf(crowd.dlc_h5)
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert df.columns.get_level_values("individuals").unique().tolist() == cfg["individuals"]
    assert len(df) == 12


def test_every_frame_has_every_identity_and_load_dlc_reads_it(crowd):
    t = crowd.table
    frames = t.frames()
    assert len(frames) == 12 and all(len(rows) == 3 for rows in frames)
    for rows in frames:
        assert [t.individuals[r] for r in rows] == ["individual0", "individual1", "individual2"]
    back = load_dlc(crowd.dlc_project)
    assert len(back) == len(t)
    key = lambda tab: sorted(zip(tab.frame[("image", "")], tab.individuals))  # noqa: E731
    assert key(back) == key(t)
    # exact labels: v > 0 rows come back at the same place (DLC has no occlusion flag: 2)
    order = {k: i for i, k in enumerate(zip(t.frame[("image", "")], t.individuals))}
    idx = [order[k] for k in zip(back.frame[("image", "")], back.individuals)]
    a, b = t.keypoints[idx], back.keypoints
    np.testing.assert_array_equal(a[..., 2] > 0, b[..., 2] > 0)
    np.testing.assert_allclose(np.where(a[..., 2:] > 0, a[..., :2], 0), np.where(b[..., 2:] > 0, b[..., :2], 0),
                               atol=1e-4)


def test_animals_overlap_and_occlude(crowd):
    t = crowd.table
    boxes = t.bboxes
    overlapping = 0
    for rows in t.frames():
        bx = boxes[rows]
        for i in range(3):
            for j in range(i + 1, 3):
                ix = min(bx[i, 0] + bx[i, 2], bx[j, 0] + bx[j, 2]) - max(bx[i, 0], bx[j, 0])
                iy = min(bx[i, 1] + bx[i, 3], bx[j, 1] + bx[j, 3]) - max(bx[i, 1], bx[j, 1])
                overlapping += ix > 0 and iy > 0
    assert overlapping >= 12  # on average at least one overlapping pair per frame
    v = t.keypoints[..., 2]
    assert (v == 1).sum() > 0 and (v == 2).sum() > (v == 1).sum()  # covered joints: v = 1


def test_identity_keeps_its_colour(crowd):
    # a visible joint's disc has the joint colour; the body colour of identity i is fixed:
    # sample the image halfway along a visible bone of each identity in every frame
    from PIL import Image  # noqa: PLC0415 - only this test reads pixels

    t = crowd.table
    _, parents, _ = synthetic_skeleton(12)
    hues: dict[str, list[float]] = {}
    for rows in t.frames():
        img = np.asarray(Image.open(crowd.root / t.frame[("image", "")].iloc[rows[0]]).convert("HSV"))
        for r in rows:
            kp = t.keypoints[r]
            for j, p in enumerate(parents):
                if p >= 0 and kp[j, 2] == 2 and kp[p, 2] == 2:
                    x, y = (kp[j, :2] * 0.5 + kp[p, :2] * 0.5).round().astype(int)
                    hues.setdefault(t.individuals[r], []).append(float(img[y, x, 0]))
    med = {k: float(np.median(v)) for k, v in hues.items()}
    assert len(med) == 3
    # identities are at evenly spaced hues 1/6, 1/2, 5/6 (PIL hue 0..255)
    for i, want in enumerate([255 / 6, 255 / 2, 255 * 5 / 6]):
        assert abs(med[f"individual{i}"] - want) < 12, med


def test_bad_animal_count(tmp_path):
    with pytest.raises(ValueError, match="animals"):
        make_synthetic(tmp_path / "b", n_frames=1, animals=0)


def test_frame_batches_carry_identities_and_multi_animal_targets(crowd):
    # the crowd through the frame-mode loader, with the multi-animal codecs in the graph:
    # identities follow the table rows, the targets equal encoding the batch's keypoints
    t = crowd.table
    _, parents, _ = synthetic_skeleton(12)
    graph = [(p, j) for j, p in enumerate(parents) if p >= 0]
    paf = PartAffinityField(graph, stride=8, heatmap_size=(16, 12))
    dekr = DEKR(12, stride=4, heatmap_size=(32, 24))
    loader = PoseLoader(t, [paf, dekr], mode="frame", input_size=(128, 96), batch_size=4,
                        device="cpu", num_threads=2, schedule=AugmentConfig.none(), shuffle=False)
    assert loader.individuals == ["individual0", "individual1", "individual2"]
    seen = 0
    for b in loader:
        rows = b["index"].numpy()
        ids = b["individual_ids"]
        assert ids.dtype == torch.int64 and ids.shape == rows.shape
        want = [[int(t.individuals[r][-1]) if r >= 0 else -1 for r in row] for row in rows]
        assert ids.tolist() == want
        kp = b["keypoints"].numpy()
        np.testing.assert_allclose(b["paf"].numpy(), paf.encode(kp)["paf"], atol=1e-6)
        # DEKR gets the table's areas (the synthetic boxes' w * h), scaled by the letterbox
        det = np.abs(np.linalg.det(b["affine"].numpy()[:, :, :2].astype(np.float64)))
        area = np.where(rows >= 0, t.areas[np.maximum(rows, 0)] / det[:, None], 0)
        np.testing.assert_allclose(b["area"].numpy(), area, rtol=1e-5)
        ref = dekr.encode(kp, area=area.astype(np.float32))
        for name in dekr.output_names:
            np.testing.assert_allclose(b[name].numpy(), ref[name], atol=1e-6, err_msg=name)
        seen += len(rows)
    assert seen == 12
