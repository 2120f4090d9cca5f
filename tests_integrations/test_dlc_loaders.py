"""make_loaders against DeepLabCut 3.0.2's own data path on openfield: the shuffle's split,
batches in DeepLabCut's format (keys, dtypes, shapes), the coordinate convention (labels as
they are; the affine maps augmented keypoints back onto them), the same loss through
DeepLabCut's real model and criterion as DeepLabCut's own DataLoader batch with augmentation
off, and the augmentation mapping's errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from posefeed.integrations.deeplabcut import UnsupportedAugmentation, make_loaders, map_augmentation



def dlc_items(config, mode, transform_key):
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader, build_transforms
    from torch.utils.data import DataLoader

    dlc = DLCLoader(config=str(config), shuffle=1, trainset_index=0)
    ds = dlc.create_dataset(transform=build_transforms(dlc.model_cfg["data"][transform_key]),
                            mode=mode, task=dlc.pose_task)
    return dlc, {b["path"][0]: b for b in DataLoader(ds, batch_size=1, shuffle=False)}


def test_split_format_and_loss_equal_dlc_dataloader(openfield_config):
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    loaders = make_loaders(openfield_config, augment=False, device="cpu", batch_size=2)
    dlc, ref_test = dlc_items(openfield_config, "test", "inference")
    _, ref_train = dlc_items(openfield_config, "train", "inference")
    assert len(loaders.test) == len(ref_test) == 6
    test_paths = [b["path"][0] for b in loaders.test]
    assert sorted(test_paths) == sorted(ref_test)          # the shuffle's own test split
    train_paths = {p for b in loaders.train for p in b["path"]}
    assert train_paths <= set(ref_train) and not train_paths & set(ref_test)
    assert len(train_paths) == 2 * len(loaders.train) >= len(ref_train) - 1   # drop_last

    torch.manual_seed(0)
    model = PoseModel.build(copy.deepcopy(dlc.model_cfg["model"]), pretrained_backbone=False).eval()
    for i, batch in enumerate(loaders.test):
        ref = ref_test[batch["path"][0]]
        assert set(ref) <= set(batch) and set(ref["annotations"]) == set(batch["annotations"])
        for key in ("image", "original_size", "offsets", "scales", "image_id"):
            assert batch[key].dtype == ref[key].dtype and batch[key].shape == ref[key].shape, key
        for key, r in ref["annotations"].items():
            g = batch["annotations"][key]
            assert g.dtype == r.dtype and g.shape == r.shape, key
        assert (batch["original_size"] == ref["original_size"]).all()
        # the labels as they are (no coordinate conversion), the image as DLC normalises it
        assert torch.equal(batch["annotations"]["keypoints"], ref["annotations"]["keypoints"])
        assert (batch["image"] - ref["image"]).abs().max() < 1e-5
        if i < 3:
            with torch.no_grad():
                losses = []
                for b in (batch, ref):
                    out = model(b["image"])
                    losses.append(model.get_loss(out, model.get_target(out, b["annotations"]))["total_loss"].item())
            assert np.isfinite(losses[0]) and losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-7)
    for batch in loaders.train:                            # the train split: same labels per frame
        for j, p in enumerate(batch["path"]):
            assert torch.equal(batch["annotations"]["keypoints"][j], ref_train[p]["annotations"]["keypoints"][0])
        break


def test_default_recipe_mapping_errors_and_augmented_batches(openfield_config):
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    dlc = DLCLoader(config=str(openfield_config), shuffle=1, trainset_index=0)
    train_cfg = dict(dlc.model_cfg["data"]["train"])
    with pytest.raises(UnsupportedAugmentation, match="data.train.covering") as e:
        map_augmentation({**train_cfg, "covering": True})
    assert e.value.option == "covering"
    with pytest.raises(UnsupportedAugmentation, match="affine.translation"):
        map_augmentation({**train_cfg, "affine": {**train_cfg["affine"], "translation": 40}})
    left = map_augmentation({**train_cfg, "covering": True}, ignore=("covering",))
    assert left.dropped == ["covering"]
    mapped = map_augmentation(train_cfg)
    assert mapped.input_size == (448, 448) and mapped.config.crop_size == (448, 448)
    assert mapped.config.rotate_factor == 30 and mapped.config.affine_prob == 0.5
    assert mapped.config.scale_range == pytest.approx((1 / 1.25, 1 / 0.5))
    assert mapped.dropped == []

    loaders = make_loaders(openfield_config, device="cpu", batch_size=4)
    batch = next(iter(loaders.train))
    assert batch["image"].shape == (4, 3, 448, 448)
    labels = {p: r for p, r in dlc_items(openfield_config, "train", "inference")[1].items()}
    kp = batch["annotations"]["keypoints"]
    vis = kp[..., 2] > 0
    assert vis.any()
    for j, p in enumerate(batch["path"]):
        # the affine maps input pixels back onto the image: the labels exactly (DLC's convention)
        a = batch["affine"][j].double()
        back = kp[j, ..., :2].double() @ a[:, :2].T + a[:, 2]
        orig = labels[p]["annotations"]["keypoints"][0].double()
        assert torch.allclose(back[vis[j]], orig[..., :2][vis[j]], atol=1e-3)
        assert (kp[j][~vis[j]][:, :2] == 0).all()       # DeepLabCut's unlabelled (0, 0)
    torch.manual_seed(0)
    model = PoseModel.build(copy.deepcopy(dlc.model_cfg["model"]), pretrained_backbone=False)
    out = model(batch["image"])
    loss = model.get_loss(out, model.get_target(out, batch["annotations"]))["total_loss"]
    assert torch.isfinite(loss)
