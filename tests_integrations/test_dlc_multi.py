"""posefeed's multi-animal drop-ins against DeepLabCut 3.0.2's own ``PartAffinityFieldGenerator``
and ``DEKRGenerator``, both built through DeepLabCut's ``TARGET_GENERATORS`` by type name, on
crowded synthetic labels (3-5 animals overlapping, v in {-1, 0, 2}, keypoints leaving the
map) at strides 2, 4 and 8, and on the batches DeepLabCut's own data pipeline makes from the
multi-animal synthetic project (``make_synthetic(animals=3)`` -> ``create_training_dataset``
-> DLC's DataLoader, DEKR's centre keypoints and areas included). <= 1e-5, same dtypes,
shapes and devices; the generator parities on both CPU implementations (the compiled kernel,
the default, and ``kernel="numpy"``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import posefeed.integrations.deeplabcut  # noqa: F401  (registers the generators)
from deeplabcut.pose_estimation_pytorch.data.dataset import PoseDataset
from deeplabcut.pose_estimation_pytorch.models.target_generators import TARGET_GENERATORS

GRAPH = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [0, 5], [1, 4], [2, 2], [5, 0]]


def assert_same(got, ref, atol=1e-5):
    assert set(got) == set(ref)
    for head in ref:
        assert set(got[head]) == set(ref[head])
        for key, r in ref[head].items():
            g = got[head][key]
            assert g.dtype == r.dtype and g.shape == r.shape and g.device == r.device, (head, key)
            diff = (g.double() - r.double()).abs().max().item()
            assert diff <= atol, (head, key, diff)


def crowd(seed, b=3, n=4, k=6, image_hw=(128, 160)):
    rng = np.random.default_rng(seed)
    h, w = image_hw
    centre = rng.uniform([0.3 * w, 0.3 * h], [0.7 * w, 0.7 * h], (b, 1, 1, 2))
    xy = centre + rng.normal(0, 25, (b, n, k, 2))          # animals overlap; some leave the map
    v = rng.choice([-1.0, 0.0, 2.0], (b, n, k, 1), p=[0.1, 0.15, 0.75])
    return np.concatenate([xy, v], -1).astype(np.float32)


@pytest.mark.parametrize("kernel", ["auto", "numpy"])  # the compiled kernel (default), the array version
@pytest.mark.parametrize("stride", [2, 4, 8])
@pytest.mark.parametrize("width", [20.0, 7.0])
def test_paf_matches_deeplabcut(stride, width, kernel):
    dlc = TARGET_GENERATORS.build(dict(type="PartAffinityFieldGenerator", graph=GRAPH, width=width))
    pf = TARGET_GENERATORS.build(dict(type="PosefeedPartAffinityFieldGenerator", graph=GRAPH, width=width,
                                      kernel=kernel))
    for seed in range(3):
        kp = crowd(seed + 10 * stride)
        h, w = 128 // stride, 160 // stride
        outputs = {"heatmap": torch.zeros(3, 6, h, w), "paf": torch.zeros(3, 2 * len(GRAPH), h, w)}
        labels = {"keypoints": torch.from_numpy(kp)}
        ref = dlc(stride, outputs, labels)
        assert ref["paf"]["target"].abs().sum() > 0
        assert_same(pf(stride, outputs, labels), ref)
        assert pf.targets.codec(stride, (w, h))._cpu_kernel is (kernel == "auto")  # numba: a DLC dependency


@pytest.mark.parametrize("kernel", ["auto", "numpy"])
@pytest.mark.parametrize("stride", [2, 4, 8])
def test_dekr_matches_deeplabcut(stride, kernel):
    dlc = TARGET_GENERATORS.build(dict(type="DEKRGenerator", num_joints=6, pos_dist_thresh=17, bg_weight=0.1))
    pf = TARGET_GENERATORS.build(dict(type="PosefeedDEKRGenerator", num_joints=6, pos_dist_thresh=17,
                                      bg_weight=0.1, kernel=kernel))
    rng = np.random.default_rng(stride)
    for seed in range(3):
        kp = crowd(seed + 10 * stride, n=5)
        full = np.stack([PoseDataset.add_center_keypoints(s) for s in kp]).astype(np.float32)
        area = rng.choice([400.0, 900.0, 2500.0], (3, 5)).astype(np.float32)  # ties included
        h, w = 128 // stride, 160 // stride
        outputs = {"heatmap": torch.zeros(3, 7, h, w), "offset": torch.zeros(3, 12, h, w)}
        labels = {"keypoints": torch.from_numpy(full), "area": torch.from_numpy(area)}
        ref = dlc(stride, outputs, labels)
        assert ref["offset"]["weights"].abs().sum() > 0
        assert_same(pf(stride, outputs, labels), ref)
        assert pf.targets.codec(stride, (w, h))._cpu_kernel is (kernel == "auto")  # numba: a DLC dependency


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("stride", [2, 4])
def test_dekr_matches_deeplabcut_on_cell_centred_crowds(stride, kernel):
    # keypoints and centres exactly on cells (x_s integer): offsets of exactly (0, 0), which
    # DeepLabCut's "already set" test (offset != 0) counts as unset for the next animal
    dlc = TARGET_GENERATORS.build(dict(type="DEKRGenerator", num_joints=3, pos_dist_thresh=9, bg_weight=0.1))
    pf = TARGET_GENERATORS.build(dict(type="PosefeedDEKRGenerator", num_joints=3, pos_dist_thresh=9,
                                      bg_weight=0.1, kernel=kernel))
    rng = np.random.default_rng(stride)
    h, w = 8, 9  # crowded: the squares overlap
    for _ in range(6):
        kp = np.empty((2, 5, 4, 3), np.float32)
        kp[..., :2] = (rng.integers(1, [w - 1, h - 1], (2, 5, 4, 2)) * stride + stride / 2
                       + rng.choice([0, 0, 0.3], (2, 5, 4, 2)))
        kp[..., 2] = 2
        area = rng.choice([1.0, 4.0, 16.0], (2, 5)).astype(np.float32)  # ties included
        outputs = {"heatmap": torch.zeros(2, 4, h, w), "offset": torch.zeros(2, 6, h, w)}
        labels = {"keypoints": torch.from_numpy(kp), "area": torch.from_numpy(area)}
        ref = dlc(stride, outputs, labels)
        got = pf(stride, outputs, labels)
        assert_same(got, ref)
        for key in ("target", "weights"):
            assert torch.equal(got["offset"][key], ref["offset"][key]), key
        assert pf.targets.codec(stride, (w, h))._cpu_kernel is (kernel == "numba")


def switched(cfg):
    """A generator config with every DeepLabCut type that has a posefeed drop-in replaced."""
    from posefeed.integrations.dlc_config import DROP_INS  # noqa: PLC0415 - test helper

    if isinstance(cfg, dict):
        return {k: (DROP_INS.get(v, v) if k == "type" else switched(v)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [switched(v) for v in cfg]
    return cfg


@pytest.fixture(scope="module")
def crowd_project(tmp_path_factory):
    from posefeed.datasets.synthetic import make_synthetic  # noqa: PLC0415 - posefeed's data

    root = tmp_path_factory.mktemp("crowd")
    make_synthetic(root / "src", n_frames=8, n_keypoints=12, image_size=(256, 192), seed=3, animals=3)
    return root


@pytest.mark.parametrize("net_type, head, stride", [("dekr_w18", "bodypart", 4), ("resnet_50", "bodypart", 8)])
def test_deeplabcut_pipeline_batches_of_the_synthetic_crowd(crowd_project, net_type, head, stride):
    # DeepLabCut reads posefeed's multi-animal project (create_training_dataset), its own
    # train transforms and DataLoader make the batches; both generators get the same labels
    from conftest import make_shuffle  # noqa: PLC0415 - the integration tests' helper
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader  # noqa: PLC0415
    from deeplabcut.pose_estimation_pytorch.data.transforms import build_transforms  # noqa: PLC0415

    cfg = make_shuffle(crowd_project / "src", crowd_project / net_type, net_type=net_type)
    loader = DLCLoader(config=str(cfg), shuffle=1, trainset_index=0)
    gen_cfg = loader.model_cfg["model"]["heads"][head]["target_generator"]
    dlc = TARGET_GENERATORS.build(gen_cfg)
    pf = TARGET_GENERATORS.build(switched(gen_cfg))
    gens = getattr(dlc, "generators", [dlc])
    kinds = {type(g).__name__ for g in gens}
    assert kinds & {"DEKRGenerator", "PartAffinityFieldGenerator"}, kinds
    limbs = max([g.num_limbs for g in gens if hasattr(g, "num_limbs")], default=1)
    assert {type(g).__name__ for g in getattr(pf, "generators", [pf])} == {"Posefeed" + n for n in kinds}
    dset = loader.create_dataset(transform=build_transforms(loader.model_cfg["data"]["train"]),
                                 mode="train", task=loader.pose_task)
    torch.manual_seed(0)
    batches = torch.utils.data.DataLoader(dset, batch_size=4, shuffle=False)
    for i, batch in enumerate(batches):
        ann = batch["annotations"]
        b, _, ih, iw = batch["image"].shape
        k = ann["keypoints"].shape[2]
        h, w = ih // stride, iw // stride
        outputs = {"heatmap": torch.zeros(b, k, h, w), "locref": torch.zeros(b, 2 * k, h, w),
                   "offset": torch.zeros(b, 2 * (k - 1), h, w), "paf": torch.zeros(b, 2 * limbs, h, w)}
        ref = dlc(stride, outputs, ann)
        got = pf(stride, outputs, ann)
        assert_same(got, ref)
        if i == 1:
            break
