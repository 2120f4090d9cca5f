"""DeepLabCut 3.0.2's default augmentation reproduced by posefeed, against the real
DeepLabCut / albumentations 1.4.3: a default shuffle maps with nothing left out and its
batches train; MotionBlur kernels, GaussNoise strength, KeypointAwareCrop window starts and
the Affine matrix compared with the libraries' own draws."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from posefeed.integrations.deeplabcut import make_loaders, map_augmentation
from posefeed.pipelines import AugmentConfig
from posefeed.pipelines.geometry import zoom_rotate_matrices
from posefeed.pipelines.opencv_ops import gauss_noise
from posefeed.pipelines.params import sample_batch

N = 20_000


def test_default_shuffle_maps_completely_and_trains(openfield_config):
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    dlc = DLCLoader(config=str(openfield_config), shuffle=1, trainset_index=0)
    train_cfg = dict(dlc.model_cfg["data"]["train"])
    assert train_cfg["motion_blur"] and train_cfg["gaussian_noise"] == 12.75
    assert train_cfg["crop_sampling"]["method"] == "hybrid"
    mapped = map_augmentation(train_cfg)
    assert mapped.dropped == [] and mapped.input_size == (448, 448)
    assert mapped.config == AugmentConfig.deeplabcut_default()
    # hflip as DeepLabCut reads it: no symmetries -> nothing swapped; symmetries -> those
    assert map_augmentation({**train_cfg, "hflip": True}).flip_pairs == []
    flip = map_augmentation({**train_cfg, "hflip": {"p": 0.3, "symmetries": [[1, 2]]}})
    assert flip.config.flip_prob == 0.3 and flip.flip_pairs == [(1, 2)]

    loaders = make_loaders(openfield_config, device="cpu", batch_size=4)
    assert loaders.dropped == []
    assert loaders.cache == "host"              # "auto": the frames fit, decoded once
    assert loaders.train.loader.graph.motion_noise
    torch.manual_seed(0)
    model = PoseModel.build(copy.deepcopy(dlc.model_cfg["model"]), pretrained_backbone=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    for i, batch in enumerate(loaders.train):
        assert batch["image"].shape == (4, 3, 448, 448)
        out = model(batch["image"])
        loss = model.get_loss(out, model.get_target(out, batch["annotations"]))["total_loss"]
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i == 1:
            break
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    loaders.train.close()
    loaders.test.close()


def padded(kernel: np.ndarray) -> np.ndarray:
    out = np.zeros((7, 7), np.float32)
    o = (7 - len(kernel)) // 2
    out[o:o + len(kernel), o:o + len(kernel)] = kernel
    return out


def frame_params(cfg, kp, b=N, sizes=(640, 480), seed=0):
    kp = np.broadcast_to(np.asarray(kp, np.float64), (b, *np.shape(kp))).copy()
    k = kp.shape[2]
    return sample_batch(np.random.default_rng([seed, 1]), cfg, "frame", kp, np.zeros((b, 4)),
                        np.tile(sizes, (b, 1)), cfg.crop_size, np.arange(k), np.ones(k, bool),
                        np.zeros(k, bool))


def test_motion_blur_kernels_distributed_as_albumentations():
    import albumentations as A
    import random

    random.seed(0)
    mb = A.MotionBlur(p=0.5)
    ref = np.stack([padded(mb.get_params()["kernel"]) for _ in range(N)])
    got = frame_params(AugmentConfig.deeplabcut_default(), np.zeros((1, 1, 3))).motion_kernel
    np.testing.assert_allclose(got.mean(axis=0), ref.mean(axis=0), atol=0.01)
    # line lengths (pixels on): the same histogram
    h_ref = np.bincount((ref > 0).sum(axis=(1, 2)), minlength=8)[:8] / N
    h_got = np.bincount((got > 0).sum(axis=(1, 2)), minlength=8)[:8] / N
    assert 0.5 * np.abs(h_ref - h_got).sum() < 0.03, (h_ref, h_got)


def test_gauss_noise_strength_as_albumentations():
    """Per-image variance of the noisy flat-128 image: albumentations and posefeed both
    uniform over 0..12.75**2 plus the truncation's 1/12, mean value 127.5."""
    import albumentations as A

    np.random.seed(0)
    import random
    random.seed(0)
    flat = np.full((24, 24, 3), 128, np.uint8)
    gn = A.GaussNoise(var_limit=(0, 12.75 ** 2), mean=0, per_channel=True, p=1.0)
    ref = np.stack([gn(image=flat)["image"] for _ in range(2000)]).astype(np.float64)
    p = frame_params(AugmentConfig.deeplabcut_default(), np.zeros((1, 1, 3)), b=2000)
    got = np.stack([gauss_noise(flat, float(s), int(seed))
                    for s, seed in zip(p.noise_std, p.noise_seed)]).astype(np.float64)
    v_ref, v_got = ref.var(axis=(1, 2, 3)), got.var(axis=(1, 2, 3))
    v = 12.75 ** 2
    for var, img in ((v_ref, ref), (v_got, got)):
        assert abs(var.mean() - (v / 2 + 1 / 12)) < 4.0
        assert abs(var.std() - v / np.sqrt(12)) < 3.0
        assert abs(img.mean() - 127.5) < 0.05
    assert abs(v_ref.mean() - v_got.mean()) < 5.0


@pytest.mark.parametrize("s,x", [(3.0, 128), (12.75, 128), (12.75, 6), (12.75, 249)])
def test_gauss_noise_pixels_as_albumentations_at_a_fixed_std(s, x):
    """albumentations' ``GaussNoise`` with one variance against posefeed's integer draw on a
    flat image (clipping at 0 and 255 included for x = 6 and 249): the same distribution of
    output values (a two-sample chi-square bound over the values seen >= 20 times)."""
    import albumentations as A

    np.random.seed(1)
    flat = np.full((200, 200, 3), x, np.uint8)
    gn = A.GaussNoise(var_limit=(s * s, s * s), mean=0, per_channel=True, p=1.0)
    ref = gn(image=flat)["image"].ravel()
    got = gauss_noise(flat, s, 77).ravel()
    a, b = np.bincount(ref, minlength=256), np.bincount(got, minlength=256)
    keep = (a + b) >= 40
    chi2 = (((a - b) ** 2) / (a + b))[keep].sum()        # equal sample sizes
    dof = keep.sum() - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)
    assert abs(ref.astype(float).mean() - got.astype(float).mean()) < 6 * s / np.sqrt(ref.size)


@pytest.mark.parametrize("method,max_shift", [("keypoints", 0.0), ("density", 0.0),
                                              ("hybrid", 0.1), ("uniform", 0.1)])
def test_crop_window_starts_as_keypoint_aware_crop(method, max_shift):
    """DeepLabCut's KeypointAwareCrop on a hand-made layout (a 3-point cluster, a far point,
    an unlabelled one at (0, 0)) against posefeed's windows: the same distribution of
    ``get_random_crop_coords`` starts."""
    from albumentations.augmentations.crops.functional import get_random_crop_coords
    from deeplabcut.pose_estimation_pytorch.data.transforms import KeypointAwareCrop

    layout = np.array([[100, 100, 2], [105, 100, 2], [100, 105, 2], [500, 400, 2], [0, 0, 0]],
                      dtype=np.float64)
    np.random.seed(0)
    crop = KeypointAwareCrop(448, 448, max_shift, method)
    image = np.zeros((480, 640, 3), np.uint8)
    kpts = [(x, y, 0.0, 0.0) for x, y, _ in layout]
    ref = []
    for _ in range(5000):
        prm = crop.get_params_dependent_on_targets({"image": image, "keypoints": kpts})
        x1, y1, _, _ = get_random_crop_coords(480, 640, 448, 448, prm["h_start"], prm["w_start"])
        ref.append((x1, y1))
    ref = np.array(ref)
    cfg = AugmentConfig.none().with_(crop_size=(448, 448), crop_shift=max_shift,
                                     crop_sampling=method)
    got = frame_params(cfg, layout[None], b=5000).crop_start
    if max_shift == 0:
        keys = sorted(set(map(tuple, ref)) | set(map(tuple, got)))
        f_ref = np.array([(ref == k).all(axis=1).mean() for k in keys])
        f_got = np.array([(got == k).all(axis=1).mean() for k in keys])
        assert len(keys) == 5
        np.testing.assert_allclose(f_got, f_ref, atol=0.03)
    else:
        np.testing.assert_allclose(got.mean(axis=0), ref.mean(axis=0), atol=3.0)
        np.testing.assert_allclose(got.std(axis=0), ref.std(axis=0), rtol=0.08, atol=0.5)
        assert (got.min(axis=0) >= ref.min(axis=0) - 1).all()
        assert (got.max(axis=0) <= ref.max(axis=0) + 1).all()


def test_affine_matrix_equals_albumentations_affine():
    """albumentations Affine (DeepLabCut's arguments) for a drawn (scale, rotate): posefeed's
    zoom-rotate about the frame centre with zoom = scale and rotation = -rotate."""
    import albumentations as A
    import random

    random.seed(1)
    aff = A.Affine(scale=(0.5, 1.25), rotate=(-30, 30), translate_px=(0, 0), p=1.0,
                   keep_ratio=True)
    image = np.zeros((480, 640, 3), np.uint8)
    for _ in range(20):
        prm = aff.get_params_dependent_on_targets({"image": image})
        zoom, rot = prm["scale"]["x"], prm["rotate"]
        ours = zoom_rotate_matrices(np.array([[319.5, 239.5]]), np.array([zoom]), np.array([-rot]))[0]
        np.testing.assert_allclose(ours, prm["matrix"].params, atol=1e-9)
