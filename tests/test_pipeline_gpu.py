"""The GPU graph ("mixed" decode, DALI GPU ops, CuPy targets, device cache). Skipped without
CUDA; run with ``make test-gpu``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posefeed.pipelines import AugmentConfig
from helpers import GEOMETRY, batches, check_blobs, make_blob_table, make_loader

pytestmark = pytest.mark.gpu
INPUT = (64, 80)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("gpu"), n_images=8, k=4)


@pytest.fixture(scope="module")
def jpeg_table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("gpujpg"), n_images=8, k=4, ext="jpg")


def make(table, **kw):
    return make_loader(table, **{"input_size": INPUT, "device": "gpu", "num_threads": 2,
                                 "seed": 4, **kw})


@pytest.mark.parametrize("which", ["table", "jpeg_table"])
def test_gpu_blobs_and_device(which, request):
    t = request.getfixturevalue(which)
    for b in batches(make(t, schedule=GEOMETRY, image_dtype="uint8")):
        assert all(v.is_cuda for v in b.values())
        check_blobs(t, {k: v.cpu() for k, v in b.items()})


def test_gpu_matches_cpu_dali_graph(table):
    """Same seed: identical keypoints / affine; images equal up to rounding (PNG decode is the
    same on both; median blur off, as the CPU DALI graph substitutes a box blur)."""
    cfg = AugmentConfig().with_(median_blur_prob=0.0)
    g = batches(make(table, image_dtype="uint8", schedule=cfg))
    c = batches(make(table, image_dtype="uint8", schedule=cfg, device="cpu", cpu_backend="dali",
                     roi_decode=False))
    assert len(g) == len(c)
    for x, y in zip(g, c):
        assert torch.equal(x["keypoints"].cpu(), y["keypoints"])
        assert torch.equal(x["affine"].cpu(), y["affine"])
        diff = (x["image"].cpu().int() - y["image"].int()).abs().float()
        assert diff.mean() < 1.0


def test_gpu_codecs_equal_codec_on_keypoints(table):
    import cupy as cp

    from posefeed.targets.gaussian_heatmap import GaussianHeatmap
    from posefeed.targets.simcc import SimCC

    codecs = [SimCC(input_size=INPUT), GaussianHeatmap(input_size=INPUT, heatmap_size=(16, 20))]
    for b in batches(make(table, codecs=codecs), 2):
        kp = b["keypoints"].cpu().numpy()
        for codec in codecs:
            ref = codec.encode(kp)
            for name in codec.output_names:
                key = name if name in b else f"{codec.name}/{name}"
                np.testing.assert_allclose(b[key].cpu().numpy(), ref[name], atol=1e-5)
        assert cp.cuda.runtime.getDeviceCount() > 0


@pytest.mark.parametrize("cache", ["host", "device"])
def test_gpu_cache_same_batches(table, cache):
    a = batches(make(table, image_dtype="uint8"))
    b = batches(make(table, image_dtype="uint8", cache=cache))
    for x, y in zip(a, b):
        assert torch.equal(x["keypoints"], y["keypoints"])
        assert (x["image"].int() - y["image"].int()).abs().max() <= 1


def test_gpu_frame_mode(table):
    b = batches(make(table, mode="frame", schedule=AugmentConfig.none(), image_dtype="uint8"), 1)[0]
    assert b["image"].shape == (4, 3, INPUT[1], INPUT[0]) and b["image"].is_cuda
    check_blobs(table, {k: v.cpu() for k, v in b.items()})
