"""`use_generators` on a real shuffle: DeepLabCut's own PoseModel.build reads the switched
pytorch_config.yaml, its heads get posefeed's generators, and PoseModel.get_target / get_loss
give what DeepLabCut's generators give for a batch of DeepLabCut's own DataLoader."""
from __future__ import annotations

import copy
import shutil

import torch

import posefeed.integrations.deeplabcut as pfdlc
from conftest import pytorch_config_path


def test_switched_config_builds_posefeed_generators(openfield_config, tmp_path):
    from deeplabcut.core.config.utils import read_config_as_dict
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader, build_transforms
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from torch.utils.data import DataLoader

    src = pytorch_config_path(openfield_config)
    path = tmp_path / "pytorch_config.yaml"
    shutil.copy(src, path)
    assert [s.new for s in pfdlc.use_generators(path)] == ["PosefeedHeatmapGaussianGenerator"]
    ours, theirs = read_config_as_dict(path), read_config_as_dict(src)
    torch.manual_seed(0)
    # no network here: no ImageNet weights (PoseModel.build writes into the dict it is given)
    m_ours = PoseModel.build(copy.deepcopy(ours["model"]), pretrained_backbone=False)
    m_theirs = PoseModel.build(copy.deepcopy(theirs["model"]), pretrained_backbone=False)
    m_theirs.load_state_dict(m_ours.state_dict())
    assert type(m_ours.heads["bodypart"].target_generator).__name__ == "PosefeedHeatmapGaussianGenerator"
    assert type(m_theirs.heads["bodypart"].target_generator).__name__ == "HeatmapGaussianGenerator"

    loader = DLCLoader(config=str(openfield_config), shuffle=1, trainset_index=0)
    cfg = loader.model_cfg["data"]["train"]
    cfg["crop_sampling"] = {**cfg["crop_sampling"], "width": 128, "height": 128}  # small: fast on CPU
    ds = loader.create_dataset(transform=build_transforms(cfg), mode="train", task=loader.pose_task)
    torch.manual_seed(1)
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=True)))
    m_ours.eval(), m_theirs.eval()
    with torch.no_grad():
        out = m_ours(batch["image"].float())
        t_ours = m_ours.get_target(out, batch["annotations"])
        t_theirs = m_theirs.get_target(out, batch["annotations"])
        for head in ("heatmap", "locref"):
            for key in ("target", "weights"):
                a, b = t_ours["bodypart"][head][key], t_theirs["bodypart"][head][key]
                assert a.dtype == b.dtype and a.shape == b.shape
                assert (a.double() - b.double()).abs().max() <= 1e-5
        l_ours = m_ours.get_loss(out, t_ours)["total_loss"]
        l_theirs = m_theirs.get_loss(out, t_theirs)["total_loss"]
    assert torch.isfinite(l_ours) and abs(l_ours.item() - l_theirs.item()) <= 1e-6 * max(1.0, abs(l_theirs.item()))
    assert pfdlc.use_generators(path, undo=True)[0].new == "HeatmapGaussianGenerator"
    assert read_config_as_dict(path) == theirs
