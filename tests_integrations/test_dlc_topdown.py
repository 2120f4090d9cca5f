"""make_loaders on top-down shuffles (``top_down_resnet_50``: DeepLabCut 3.0.2's pose model on
crops around each individual's box) and on a multi-animal bottom-up shuffle, against
DeepLabCut's own ``PoseDataset`` / DataLoader batches for the same images with augmentation
off: the same items, DeepLabCut's offsets, scales, boxes, areas and identities, keypoints in
DeepLabCut's crop convention, and the loss through DeepLabCut's real model and criterion.

Top-down: DeepLabCut normalises the whole frame, zero-pads it (the ImageNet mean colour)
and resizes the float crop; posefeed warps the uint8 frame (black outside it), normalises,
and to_dlc_batch adds DeepLabCut's padding back (``pad_with_mean``), so pixels differ by a
fraction of a grey level (uint8 warp vs float resize), inside the frame and outside it, and
the loss with posefeed's image agrees to 1e-3 (measured 1e-5-2e-4; 2.6e-3 with the black
padding, on crops that leave the frame); with DeepLabCut's image
and posefeed's labels the targets, so the loss, are DeepLabCut's (1e-6)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from posefeed.integrations.deeplabcut import UnsupportedAugmentation, make_loaders


@pytest.fixture(scope="module")
def crowd_src(tmp_path_factory):
    from posefeed.datasets.synthetic import make_synthetic  # noqa: PLC0415 - posefeed's data

    root = tmp_path_factory.mktemp("crowd_td")
    make_synthetic(root / "src", n_frames=8, n_keypoints=12, image_size=(256, 192), seed=3, animals=3)
    return root


def shuffle(src, dst, net_type):
    from conftest import make_shuffle  # noqa: PLC0415 - the integration tests' helper

    return make_shuffle(src, dst, net_type=net_type)


@pytest.fixture(scope="module")
def openfield_td(tmp_path_factory):
    from conftest import OPENFIELD  # noqa: PLC0415

    if not OPENFIELD.exists():
        pytest.skip(f"{OPENFIELD} not found")
    return shuffle(OPENFIELD, tmp_path_factory.mktemp("td") / "openfield", "top_down_resnet_50")


def dlc_batches(config, mode):
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader, build_transforms  # noqa: PLC0415

    dlc = DLCLoader(config=str(config), shuffle=1, trainset_index=0)
    ds = dlc.create_dataset(transform=build_transforms(dlc.model_cfg["data"]["inference"]),
                            mode=mode, task=dlc.pose_task)
    return dlc, list(torch.utils.data.DataLoader(ds, batch_size=1, shuffle=False))


def loss(model, image, annotations):
    with torch.no_grad():
        out = model(image)
        return model.get_loss(out, model.get_target(out, annotations))["total_loss"].item()


def build_model(dlc):
    from deeplabcut.pose_estimation_pytorch.models import PoseModel  # noqa: PLC0415

    torch.manual_seed(0)
    return PoseModel.build(copy.deepcopy(dlc.model_cfg["model"]), pretrained_backbone=False).eval()


def check_top_down(config, n_loss=3, min_outside=0):
    loaders = make_loaders(config, augment=False, device="cpu", batch_size=2)
    dlc, ref = dlc_batches(config, "test")
    assert str(dlc.pose_task.name) == "TOP_DOWN"
    key = lambda b: (b["path"][0], int(b["annotations"]["individual_ids"][0, 0]))  # noqa: E731
    ref = {key(b): b for b in ref}
    got = list(loaders.test)
    assert len(got) == len(ref) and {key(b) for b in got} == set(ref)   # one item per instance
    model = build_model(dlc)
    table = loaders.test.table
    paths = np.asarray([str(table.image_path(p)) for p in table.frame[("image", "")]])
    outside = 0            # crops of the n_loss checked that leave the frame
    for i, batch in enumerate(got):
        r = ref[key(batch)]
        assert set(r) <= set(batch) and set(r["annotations"]) == set(batch["annotations"])
        for k in ("image", "original_size", "offsets", "scales", "image_id"):
            assert batch[k].dtype == r[k].dtype and batch[k].shape == r[k].shape, k
        for k in ("original_size", "offsets", "scales"):
            assert torch.equal(batch[k], r[k]), (k, batch[k], r[k])
        ann, ra = batch["annotations"], r["annotations"]
        for k in ra:
            assert ann[k].dtype == ra[k].dtype and ann[k].shape == ra[k].shape, k
        for k in ("boxes", "area", "labels", "individual_ids", "is_crowd"):
            assert torch.equal(ann[k], ra[k]), (k, ann[k], ra[k])
        assert torch.equal(ann["keypoints"][..., 2], ra["keypoints"][..., 2])
        assert torch.allclose(ann["keypoints"], ra["keypoints"], atol=1e-4, rtol=0)
        # the conversion: DeepLabCut's crop keypoints map back onto the labels with its
        # offsets and scales (x = x_crop * s + o), posefeed's (x_crop - 1/2 + 1/(2 s)) with
        # the batch's affine
        kp = ann["keypoints"][0, 0].double()
        vis = kp[:, 2] > 0
        s, o = batch["scales"][0], batch["offsets"][0].double()
        labels = torch.as_tensor(table.keypoints, dtype=torch.float64)
        mine = labels[np.flatnonzero(paths == batch["path"][0])]
        back = kp[:, :2] * s + o
        match = [torch.allclose(back[vis], m[vis, :2], atol=1e-3) for m in mine]
        assert any(match), (back[vis], mine[..., :2])
        a = batch["affine"][0].double()
        pf = kp[:, :2] - 0.5 + 0.5 / s
        assert torch.allclose((pf @ a[:, :2].T + a[:, 2])[vis], back[vis], atol=1e-3)
        if i < n_loss:
            ref_loss = loss(model, r["image"], ra)
            assert loss(model, r["image"], ann) == pytest.approx(ref_loss, rel=1e-6, abs=1e-9)
            mine_loss = loss(model, batch["image"], ann)
            inside = _inside(batch, r["image"].shape[-2:])
            diff = (batch["image"] - r["image"]).abs().mean(1)[0]
            assert np.isfinite(mine_loss) and mine_loss == pytest.approx(ref_loss, rel=1e-3)
            # pixels agree (uint8 warp vs float resize), inside the frame and outside it
            # (DeepLabCut's padding, the normalised 0, reproduced by to_dlc_batch)
            assert diff[inside].mean() < 0.02, diff[inside].mean()
            if (~inside).any():
                outside += 1
                assert diff[~inside].mean() < 0.03, diff[~inside].mean()
                assert diff.mean() < 0.02, diff.mean()
    assert outside >= min_outside, outside
    return loaders, dlc


def _inside(batch, hw):
    """Crop pixels whose source (DeepLabCut's mapping) is well inside the frame."""
    h, w = hw
    s, o = batch["scales"][0], batch["offsets"][0]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    x, y = xs * s[0] + o[0], ys * s[1] + o[1]
    fh, fw = batch["original_size"][0, :2].tolist()
    return (x > 2) & (x < fw - 3) & (y > 2) & (y < fh - 3)


def test_top_down_openfield_matches_deeplabcut(openfield_td):
    loaders, dlc = check_top_down(openfield_td)
    batch = next(iter(loaders.train))                      # train crops: batches of 2
    assert batch["image"].shape == (2, 3, 256, 256)
    assert batch["annotations"]["keypoints"].shape == (2, 1, 4, 3)
    assert batch["offsets"].shape == (2, 2) and batch["scales"].dtype == torch.float64


def test_top_down_crowd_matches_deeplabcut(crowd_src):
    check_top_down(shuffle(crowd_src / "src", crowd_src / "td", "top_down_resnet_50"), n_loss=4)


def test_top_down_padding_is_deeplabcuts_mean_colour(crowd_src):
    """A wide top_down_crop margin (80 px on 256x192 frames): every crop leaves its frame,
    where DeepLabCut's crop is the normalised 0 (the mean colour, blended at the frame's
    edge) and posefeed's, after to_dlc_batch, too (black before: ~2 in normalised units)."""
    from conftest import pytorch_config_path  # noqa: PLC0415
    from deeplabcut.utils import auxiliaryfunctions as af  # noqa: PLC0415

    config = shuffle(crowd_src / "src", crowd_src / "td_pad", "top_down_resnet_50")
    path = pytorch_config_path(config)
    cfg = af.read_plainconfig(str(path))
    cfg["data"]["train"]["top_down_crop"] = {"width": 256, "height": 256, "margin": 80}
    af.write_plainconfig(str(path), cfg)
    check_top_down(config, n_loss=4, min_outside=3)     # the 3 test items


def test_top_down_default_recipe_mapping(openfield_td):
    # the default top-down recipe: affine (p 0.5, rotation 30, scaling 1, translation 0),
    # motion blur, Gaussian noise, top_down_crop 256 x 256
    with pytest.raises(UnsupportedAugmentation, match="affine.top_down_rotation"):
        make_loaders(openfield_td, device="cpu", ignore=("motion_blur.top_down", "gaussian_noise.top_down"))
    with pytest.raises(UnsupportedAugmentation, match="motion_blur.top_down"):
        make_loaders(openfield_td, device="cpu", ignore=("affine.top_down_rotation",))
    leave = ("affine.top_down_rotation", "motion_blur.top_down", "gaussian_noise.top_down")
    loaders = make_loaders(openfield_td, device="cpu", ignore=leave, batch_size=4)
    assert sorted(loaders.dropped) == sorted(leave)
    cfg = loaders.train.loader.schedule[0][1]
    assert (cfg.rotate_factor, cfg.rotate_prob, cfg.affine_distribution) == (30, 0.5, "uniform")
    assert cfg.scale_range == (1.0, 1.0) and cfg.crop_size is None   # scaling 1: not mapped
    assert cfg.motion_blur_prob == 0.5 and cfg.noise_prob == 0.5
    assert (cfg.box_padding, cfg.box_keep_aspect) == (1.0, False)
    batch = next(iter(loaders.train))
    assert batch["image"].shape == (4, 3, 256, 256)
    dlc, _ = dlc_batches(openfield_td, "test")
    model = build_model(dlc).train()
    out = model(batch["image"])
    total = model.get_loss(out, model.get_target(out, batch["annotations"]))["total_loss"]
    assert torch.isfinite(total)


@pytest.mark.parametrize("net_type, generator", [("resnet_50", "PartAffinityFieldGenerator"),
                                                  ("dekr_w18", "DEKRGenerator")])
def test_multi_animal_bottom_up_matches_deeplabcut(crowd_src, net_type, generator):
    # PAF (heatmaps, locref, limbs) and DEKR (centre keypoints appended, offsets weighted by
    # DeepLabCut's box areas): the same annotations and loss as DeepLabCut's own batches
    config = shuffle(crowd_src / "src", crowd_src / f"bu_{net_type}", net_type)
    loaders = make_loaders(config, augment=False, device="cpu", batch_size=2)
    dlc, ref = dlc_batches(config, "train")
    assert generator in str(dlc.model_cfg["model"]["heads"]["bodypart"]["target_generator"])
    ref = {b["path"][0]: b for b in ref}
    model = build_model(dlc)
    n = 0
    for batch in loaders.train:
        ann = batch["annotations"]
        assert ann["keypoints"].shape[:2] == (2, 3) and (ann["individual_ids"] >= 0).sum() >= 4
        assert ann["keypoints"].shape[2] == 12 + (net_type == "dekr_w18")
        both = {k: torch.cat([ref[p]["annotations"][k] for p in batch["path"]]) for k in ann}
        for k in both:
            assert ann[k].dtype == both[k].dtype and ann[k].shape == both[k].shape, k
        for k in ("individual_ids", "labels", "is_crowd", "with_center_keypoints"):
            assert torch.equal(ann[k], both[k]), k
        # centres: DeepLabCut's mean in float64, posefeed's of the float32 labels
        assert torch.allclose(ann["keypoints"], both["keypoints"], rtol=0, atol=2e-5)
        assert torch.equal(ann["keypoints"][..., 2], both["keypoints"][..., 2])
        for k in ("boxes", "area"):
            assert torch.allclose(ann[k], both[k], rtol=1e-5, atol=1e-3), k
        image = torch.cat([ref[p]["image"] for p in batch["path"]])
        assert (batch["image"] - image).abs().max() < 1e-5
        got, want = loss(model, batch["image"], ann), loss(model, image, both)
        assert np.isfinite(got) and got == pytest.approx(want, rel=1e-5, abs=1e-7)
        n += 1
        if n == 2:
            break
    assert n == 2
