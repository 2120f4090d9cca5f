"""Sampled augmentation parameters: ranges per stage, probabilities, the schedule switch,
the order (seed, epoch, shard) - all without DALI."""
from __future__ import annotations

import numpy as np
import pytest

from posefeed.datasets import PoseTable
from posefeed.pipelines import AugmentConfig, config_for_epoch, rtmpose_schedule
from posefeed.pipelines.params import flip_permutation, half_body_sets, sample_batch
from posefeed.pipelines.source import (BatchSource, ImageReader, SourceSpec, epoch_order,
                                       num_batches, shard_batches)

B = 4000
INPUT = (192, 256)


def coco_like(b: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``b`` fully visible 17-keypoint people in 640x480 images, and their boxes."""
    xy = rng.uniform(100, 400, (b, 1, 17, 2))
    kp = np.concatenate([xy, np.full((b, 1, 17, 1), 2.0)], axis=3)
    lo, hi = xy[:, 0].min(axis=1), xy[:, 0].max(axis=1)
    boxes = np.concatenate([lo, hi - lo], axis=1)
    return kp, boxes, np.tile([640, 480], (b, 1))


def sample(cfg, seed=0, b=B):
    rng = np.random.default_rng(seed)
    kp, boxes, sizes = coco_like(b, rng)
    names = ["nose"] + [f"p{i}" for i in range(10)] + ["left_hip"] + [f"q{i}" for i in range(5)]
    upper, lower = half_body_sets(names)
    return sample_batch(np.random.default_rng([seed, 1]), cfg, "topdown", kp, boxes, sizes,
                        INPUT, flip_permutation(17, [(1, 2), (3, 4)]), upper, lower), kp


@pytest.mark.parametrize("stage", [1, 2])
def test_parameters_stay_in_stage_ranges(stage):
    cfg = AugmentConfig.rtmpose_stage1() if stage == 1 else AugmentConfig.rtmpose_stage2()
    p, _ = sample(cfg)
    lo, hi = cfg.scale_range
    assert p.scale.min() >= lo and p.scale.max() <= hi
    assert p.scale.max() - p.scale.min() > 0.8 * (hi - lo)
    assert np.abs(p.rotation).max() <= cfg.rotate_factor
    assert np.abs(p.rotation).max() > 0.9 * cfg.rotate_factor
    assert abs((p.rotation != 0).mean() - cfg.rotate_prob) < 0.03
    assert np.abs(p.shift).max() <= cfg.shift_factor + 1e-12
    if stage == 1:
        assert abs((p.shift != 0).any(axis=1).mean() - cfg.shift_prob) < 0.03
    else:
        assert (p.shift == 0).all()
    assert abs(p.flip.mean() - 0.5) < 0.03
    assert abs(p.dropout.mean() - cfg.dropout_prob) < 0.03
    assert abs(p.blur.mean() - 0.1) < 0.02 and abs(p.median.mean() - 0.1) < 0.02
    assert set(np.unique(p.blur_size)) == {3, 5, 7}
    # hole: 0.2-0.4 of the crop, inside it
    y, x, h, w = p.dropout_box.T
    assert h.min() >= int(0.2 * INPUT[1]) and h.max() <= int(0.4 * INPUT[1])
    assert w.min() >= int(0.2 * INPUT[0]) and w.max() <= int(0.4 * INPUT[0])
    assert (y >= 0).all() and (x >= 0).all()
    assert (y + h <= INPUT[1]).all() and (x + w <= INPUT[0]).all()
    # YOLOX HSV: integer gains within the deltas, each channel on with p=0.5
    for g, d in ((p.hue_gain, 5), (p.saturation_gain, 30), (p.value_gain, 30)):
        assert np.abs(g).max() <= d and np.abs(g).max() >= d - 1
        assert 0.45 < (g == 0).mean() < 0.6
    # half-body on ~30% of people with >= 9 visible keypoints
    assert abs(p.half_body.mean() - 0.3) < 0.03


def test_truncated_normal_shape():
    """Scale ~ mid + half * z with z ~ N(0,1) truncated to [-1, 1]: std ~0.54 * half."""
    p, _ = sample(AugmentConfig.rtmpose_stage1().with_(scale_prob=1.0))
    z = (p.scale - 1.0) / 0.4
    assert abs(z.mean()) < 0.03
    assert abs(z.std() - 0.5377) < 0.02   # std of N(0,1) truncated to [-1, 1]


def test_none_is_only_the_box_crop():
    p, kp = sample(AugmentConfig.none(), b=50)
    assert not p.flip.any() and not p.half_body.any() and not p.dropout.any()
    assert (p.rotation == 0).all() and (p.scale == 1).all() and (p.shift == 0).all()
    assert (p.hue_gain == 0).all() and not p.blur.any() and not p.median.any()


def test_half_body_needs_nine_visible():
    rng = np.random.default_rng(0)
    kp, boxes, sizes = coco_like(500, rng)
    kp[:, :, 8:, 2] = 0  # only 8 labelled
    upper, lower = half_body_sets(["nose"] + ["x"] * 10 + ["left_hip"] + ["y"] * 5)
    cfg = AugmentConfig().with_(half_body_prob=1.0)
    p = sample_batch(rng, cfg, "topdown", kp, boxes, sizes, INPUT, np.arange(17), upper, lower)
    assert not p.half_body.any()


def test_rtmpose_schedule_switches():
    sched = rtmpose_schedule(420)
    assert [e for e, _ in sched] == [0, 390]
    assert config_for_epoch(sched, 389) == AugmentConfig.rtmpose_stage1()
    assert config_for_epoch(sched, 390) == AugmentConfig.rtmpose_stage2()
    assert config_for_epoch(sched, 419).rotate_factor == 60.0
    assert rtmpose_schedule(10, switch_epoch=4)[1][0] == 4


def small_table(n=40) -> PoseTable:
    rng = np.random.default_rng(1)
    kp, boxes, sizes = coco_like(n, rng)
    return PoseTable.from_arrays([f"im{i % 7}.jpg" for i in range(n)], kp[:, 0],
                                 [f"k{i}" for i in range(17)], sizes, bboxes=boxes)


def test_source_switches_stage_at_epoch_boundary():
    table = small_table(200)
    spec = SourceSpec(mode="topdown", input_size=INPUT, batch_size=200,
                      schedule=rtmpose_schedule(5, switch_epoch=3), seed=0, shuffle=True,
                      drop_last=True, rank=0, world=1, on_bad_image="raise")
    src = BatchSource(table, spec, ImageReader(table))
    for epoch in range(5):
        _, p = src.batch(epoch, 0, check_images=False)
        strong = epoch < 3
        assert (np.abs(p.rotation).max() > 60) == strong
        assert (p.shift != 0).any() == strong
        assert (p.scale.min() < 0.75) == strong


def test_same_seed_same_parameters_other_seed_differs():
    table = small_table()
    def params(seed, epoch):
        spec = SourceSpec("topdown", INPUT, 8, [(0, AugmentConfig())], seed, True, True, 0, 1,
                          "raise")
        rows, p = BatchSource(table, spec, ImageReader(table)).batch(epoch, 1, check_images=False)
        return rows, p
    r1, p1 = params(0, 0)
    r2, p2 = params(0, 0)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(p1.forward, p2.forward)
    np.testing.assert_array_equal(p1.keypoints, p2.keypoints)
    r3, p3 = params(1, 0)
    r4, p4 = params(0, 1)
    assert not np.array_equal(p1.forward, p3.forward)
    assert not np.array_equal(r1, r4)


@pytest.mark.parametrize("n,world,bs,drop", [(103, 2, 8, True), (103, 3, 8, False),
                                             (64, 4, 16, True), (5, 2, 4, False)])
def test_shards_are_disjoint_and_cover(n, world, bs, drop):
    order = epoch_order(n, seed=3, epoch=2, shuffle=True)
    shards = [shard_batches(order, r, world, bs, drop) for r in range(world)]
    lens = {len(s) for s in shards}
    assert lens == {num_batches(n, world, bs, drop)}
    ids = [np.concatenate(s) if s else np.zeros(0, int) for s in shards]
    if drop:
        flat = np.concatenate(ids)
        assert len(flat) == len(set(flat.tolist()))          # disjoint
        assert len(flat) >= n - world * bs - world           # covers up to drop_last
    else:
        assert set(np.concatenate(ids).tolist()) == set(range(n))   # covers all
        for a in range(world):                                # disjoint except the padding
            for b in range(a + 1, world):
                assert len(set(ids[a]) & set(ids[b])) <= world
