"""posefeed's drop-in generators against DeepLabCut 3.0.2's own, built through DeepLabCut's
``TARGET_GENERATORS`` registry by type name: synthetic multi-animal labels (2 individuals,
v in {-1, 0, 2}, overlaps) and real batches from DeepLabCut's own DataLoader on openfield
(augmented: keypoints leave the crop), strides 2, 4 and 8, Gaussian and plateau, locref on and
off, keypoint and individual modes, gradient masking; on CPU (posefeed's compiled kernel and
its torch version), and CUDA marked ``gpu``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import posefeed.integrations.deeplabcut  # noqa: F401  (registers the generators)
from deeplabcut.pose_estimation_pytorch.models.target_generators import TARGET_GENERATORS

PAIRS = [("HeatmapGaussianGenerator", "PosefeedHeatmapGaussianGenerator"),
         ("HeatmapPlateauGenerator", "PosefeedHeatmapPlateauGenerator")]


def build_pair(dlc_type, pf_type, kernel="auto", **kw):
    """DeepLabCut's generator and posefeed's (``kernel``: "numba", the compiled CPU kernel
    numba being one of DeepLabCut's dependencies, or "numpy", the torch version)."""
    return (TARGET_GENERATORS.build(dict(type=dlc_type, **kw)),
            TARGET_GENERATORS.build(dict(type=pf_type, kernel=kernel, **kw)))


def assert_same(got, ref, atol=1e-5):
    assert set(got) == set(ref)
    for head in ref:
        assert set(got[head]) == set(ref[head])
        for key, r in ref[head].items():
            g = got[head][key]
            assert g.dtype == r.dtype and g.shape == r.shape and g.device == r.device, (head, key)
            diff = (g.double() - r.double()).abs().max().item()
            assert diff <= atol, (head, key, diff)


def outputs_for(batch_size, c, image_hw, stride, device="cpu"):
    h, w = (int(np.ceil(image_hw[0] / stride)), int(np.ceil(image_hw[1] / stride)))
    return {"heatmap": torch.zeros(batch_size, c, h, w, device=device),
            "locref": torch.zeros(batch_size, 2 * c, h, w, device=device)}


def synthetic_labels(seed, b=3, n=2, k=6, image_hw=(240, 320)):
    rng = np.random.default_rng(seed)
    h, w = image_hw
    xy = rng.uniform(-10, [w + 10, h + 10], (b, n, k, 2))
    xy[:, 1] = xy[:, 0] + rng.normal(0, 6, (b, k, 2))   # the second animal overlaps the first
    v = rng.choice([-1.0, 0.0, 2.0], (b, n, k, 1), p=[0.15, 0.2, 0.65])
    kp = np.concatenate([xy, v], -1).astype(np.float32)
    ids = np.tile(np.arange(n), (b, 1))
    ids[0] = ids[0][::-1]
    ids[-1, -1] = -1
    return {"keypoints": torch.from_numpy(kp), "individual_ids": torch.from_numpy(ids)}


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("dlc_type,pf_type", PAIRS)
@pytest.mark.parametrize("stride", [2, 4, 8])
@pytest.mark.parametrize("locref", [True, False])
@pytest.mark.parametrize("heatmap_mode,gradient_masking", [("KEYPOINT", False), ("KEYPOINT", True),
                                                           ("INDIVIDUAL", False)])
def test_synthetic_two_individuals(dlc_type, pf_type, stride, locref, heatmap_mode, gradient_masking,
                                   kernel):
    labels = synthetic_labels(stride + 10 * locref)
    c = 6 if heatmap_mode == "KEYPOINT" else 2
    ref_gen, pf_gen = build_pair(dlc_type, pf_type, kernel, num_heatmaps=c, pos_dist_thresh=17,
                                 heatmap_mode=heatmap_mode, gradient_masking=gradient_masking,
                                 background_weight=0.3, generate_locref=locref, locref_std=7.2801)
    outputs = outputs_for(3, c, (240, 320), stride)
    for _ in range(2):  # the second call rewrites posefeed's kept buffers
        assert_same(pf_gen(stride, outputs, labels), ref_gen(stride, outputs, labels))
        labels = synthetic_labels(stride + 99)


@pytest.mark.parametrize("dlc_type,pf_type", PAIRS)
def test_real_batches_from_dlc_dataloader(openfield_config, dlc_type, pf_type):
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader, build_transforms
    from torch.utils.data import DataLoader

    loader = DLCLoader(config=str(openfield_config), shuffle=1, trainset_index=0)
    ds = loader.create_dataset(transform=build_transforms(loader.model_cfg["data"]["train"]),
                               mode="train", task=loader.pose_task)
    torch.manual_seed(0)
    np.random.seed(0)
    dl = DataLoader(ds, batch_size=4, shuffle=True)
    gen_cfg = loader.model_cfg["model"]["heads"]["bodypart"]["target_generator"]
    kw = {k: v for k, v in gen_cfg.items() if k != "type"}
    seen_hidden = 0
    for i, batch in zip(range(3), dl):
        labels = batch["annotations"]
        seen_hidden += int((labels["keypoints"][..., 2] <= 0).sum())
        for stride in (2, 4, 8):
            for locref in (True, False):
                ref_gen, pf_gen = build_pair(dlc_type, pf_type, "numba", **{**kw, "generate_locref": locref})
                outputs = outputs_for(len(batch["image"]), kw["num_heatmaps"], batch["image"].shape[-2:], stride)
                assert_same(pf_gen(stride, outputs, labels), ref_gen(stride, outputs, labels))
    assert seen_hidden > 0  # the augmented crops did drop some keypoints (v = 0)


@pytest.mark.gpu
@pytest.mark.parametrize("dlc_type,pf_type", PAIRS)
def test_cuda(dlc_type, pf_type):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    labels = {k: v.cuda() for k, v in synthetic_labels(7).items()}
    ref_gen, pf_gen = build_pair(dlc_type, pf_type, num_heatmaps=6, pos_dist_thresh=17)
    outputs = outputs_for(3, 6, (240, 320), 4, device="cuda")
    got = pf_gen(4, outputs, labels)
    assert got["heatmap"]["target"].device.type == "cuda"
    assert_same(got, ref_gen(4, outputs, labels))
