"""PoseLoader behaviour: batch contract, determinism, resume, shards, codecs inside the graph,
cache, bad images, and the real datasets in ../shared/datasets."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from posefeed.pipelines import (AugmentConfig, BadImageError, PipelineError, PoseLoader,
                                rtmpose_schedule)
from posefeed.pipelines.graph import MEAN, STD
from posefeed.targets.base import Codec

from helpers import batches, check_blobs, make_blob_table, make_loader
from oracles import mmpose_loop, mmpose_udp_loop, simcc_loop

INPUT = (48, 64)


class CountCodec(Codec):
    """A tiny codec: per keypoint, x + 1000 y where v > 0, else -1 (B, K); and the number of
    instances where each keypoint is visible (B, K)."""

    name = "count"

    @property
    def output_names(self):
        return ("code", "visible")

    def encode(self, keypoints):
        kp = keypoints[:, 0]
        code = np.where(kp[..., 2] > 0, kp[..., 0] + 1000 * kp[..., 1], -1).astype(np.float32)
        return {"code": code, "visible": (keypoints[..., 2] > 0).sum(axis=1).astype(np.float32)}

    def decode(self, *outputs):
        raise NotImplementedError


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("loader"), n_images=10, k=4)


def make(table, **kw):
    return make_loader(table, **{"input_size": INPUT, "seed": 11, **kw})


def test_batch_contract_full_recipe(table):
    """The default (RTMPose stage 1) recipe runs every op; shapes and dtypes as documented."""
    loader = make(table, codecs=[CountCodec()], drop_last=False)
    assert len(loader) == 3
    out = batches(loader)
    assert [len(b["image"]) for b in out] == [4, 4, 2]
    b = out[0]
    assert b["image"].shape == (4, 3, INPUT[1], INPUT[0]) and b["image"].dtype == torch.float32
    assert b["keypoints"].shape == (4, 1, 4, 3) and b["keypoints"].dtype == torch.float32
    assert b["index"].shape == (4, 1) and b["index"].dtype == torch.int64
    assert b["affine"].shape == (4, 2, 3) and b["affine"].dtype == torch.float32
    assert b["code"].shape == (4, 4) and b["visible"].shape == (4, 4)
    # normalised: a black (dropout / border) pixel is -mean/std
    black = torch.tensor([-m / s for m, s in zip(MEAN, STD)])
    flat = b["image"].permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.isclose(flat, black, atol=1e-4).all(dim=1).any()
    assert set(np.concatenate([x["index"].numpy().ravel() for x in out])) == set(range(len(table)))


def test_codec_outputs_equal_codec_on_keypoints(table):
    from posefeed.targets.gaussian_heatmap import GaussianHeatmap
    from posefeed.targets.simcc import SimCC

    from posefeed.targets import UDPHeatmap

    codecs = [SimCC(input_size=INPUT), GaussianHeatmap(input_size=INPUT, heatmap_size=(12, 16)),
              UDPHeatmap(input_size=INPUT, heatmap_size=(12, 16)), CountCodec()]
    loader = make(table, codecs=codecs)
    assert "simcc/keypoint_weight" in loader.names and "heatmap/keypoint_weight" in loader.names
    for b in batches(loader, 2):
        kp = b["keypoints"].numpy()
        for codec in codecs:
            ref = codec.encode(kp)
            for name in codec.output_names:
                key = name if name in b else f"{codec.name}/{name}"
                np.testing.assert_array_equal(b[key].numpy(), ref[name])


def test_loader_targets_match_the_mmpose_oracles(table):
    """Beside the test above (codecs in the graph equal the same codecs outside it): the
    targets in a batch equal MMPose's per-sample loops on the batch's keypoints."""
    from posefeed.targets import GaussianHeatmap, SimCC, UDPHeatmap

    s, g = SimCC(input_size=INPUT), GaussianHeatmap(input_size=INPUT, heatmap_size=(12, 16))
    u = UDPHeatmap(input_size=INPUT, heatmap_size=(12, 16))
    for b in batches(make(table, codecs=[s, g, u]), 2):
        kp = b["keypoints"].numpy()
        tx, ty, wt = simcc_loop(s, kp)
        np.testing.assert_allclose(b["x_labels"].numpy(), tx, atol=1e-6, rtol=0)
        np.testing.assert_allclose(b["y_labels"].numpy(), ty, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(b["simcc/keypoint_weight"].numpy(), wt)
        for codec, loop in ((g, mmpose_loop), (u, mmpose_udp_loop)):
            hm, wt = loop(codec, kp)
            np.testing.assert_allclose(b[f"{codec.name}/heatmap"].numpy(), hm, atol=1e-6, rtol=0)
            np.testing.assert_array_equal(b[f"{codec.name}/keypoint_weight"].numpy(), wt)


def test_same_seed_same_batches_and_epochs_differ(table):
    a = batches(make(table, codecs=[CountCodec()]))
    b = batches(make(table, codecs=[CountCodec()]))
    for x, y in zip(a, b):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    loader = make(table)
    e0 = [x["index"] for x in batches(loader)]
    e1 = [x["index"] for x in batches(loader)]          # auto-advanced to epoch 1
    assert loader.epoch == 2
    assert not all(torch.equal(u, v) for u, v in zip(e0, e1))


def test_resume_mid_epoch_continues_exactly(table):
    full = make(table)
    full.set_epoch(1)
    ref = batches(full)
    first = make(table)
    first.set_epoch(1)
    got = batches(first, 1)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batch"] == 1
    resumed = make(table)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)            # a training loop calls this again: position is kept
    got += batches(resumed)
    assert len(got) == len(ref) == len(full)
    for x, y in zip(got, ref):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    # the abandoned loader can iterate again: it continues from its own position
    assert torch.equal(batches(first, 1)[0]["index"], ref[1]["index"])


@pytest.mark.parametrize("cpu_backend,lookahead", [("opencv", "thread"), ("dali", "process")])
def test_close_during_iteration_is_a_clear_error_and_loses_nothing(table, cpu_backend,
                                                                   lookahead):
    """``close()`` while an iteration is suspended: its next batch is an error saying so (was:
    "the pipeline failed in epoch ..." after decoding the batches' files again), the position
    is the batches yielded, and the next iteration gives the rest of the epoch."""
    kw = dict(cpu_backend=cpu_backend, lookahead=lookahead)
    ref = make(table, **kw)
    want = batches(ref)
    ref.close()
    ld = make(table, **kw)
    it = iter(ld)
    got = [{k: v.clone() for k, v in next(it).items()}]
    ld.close()
    with pytest.raises(PipelineError, match=r"^the loader was closed during iteration \(after "
                                            r"epoch 0 batch 0\); iterate again to continue "
                                            r"from state_dict \(epoch 0, batch 1\)$"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert (ld.state_dict()["epoch"], ld.state_dict()["batch"]) == (0, 1)
    got += batches(ld)
    ld.close()
    assert len(got) == len(want) == len(ld) >= 2
    for x, y in zip(got, want):
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_mid_epoch_resume_refuses_a_different_order(table):
    """A mid-epoch state only fits a loader with the same order; the error names each
    difference. At an epoch boundary the batch size or world size may change."""
    first = make(table)                  # batch 4, 2 batches per epoch
    first.set_epoch(2)
    batches(first, 1)
    state = first.state_dict()
    assert state["batch"] == 1 and state["batch_size"] == 4 and state["shard"] == (0, 1)
    for kw, word in ((dict(batch_size=2), "batch_size 4 (saved) vs 2"),
                     (dict(shard=(1, 2)), "world size 1 (saved) vs 2"),
                     (dict(shuffle=False), "shuffle True (saved) vs False")):
        other = make(table, **kw)
        with pytest.raises(ValueError, match=re.escape(word)):
            other.load_state_dict(state)
    # DDP: every rank loads the state rank 0 saved and continues its own shard
    r0, r1 = make(table, shard=(0, 2), batch_size=2), make(table, shard=(1, 2), batch_size=2)
    r0.set_epoch(2)
    batches(r0, 1)
    r1.load_state_dict(r0.state_dict())
    assert (r1.state_dict()["epoch"], r1.state_dict()["batch"]) == (2, 1)
    ref1 = make(table, shard=(1, 2), batch_size=2)
    ref1.set_epoch(2)
    assert torch.equal(batches(r1)[0]["index"], batches(ref1)[1]["index"])
    # a state saved as JSON (tuples become lists) still matches its own loader
    same = make(table)
    same.load_state_dict(json.loads(json.dumps(state)))
    assert same.state_dict()["epoch"] == 2 and same.state_dict()["batch"] == 1
    # epoch boundary: a new batch size is fine, the next epoch starts at its first batch
    first.set_epoch(3)
    boundary = first.state_dict()
    assert boundary["batch"] == 0
    smaller = make(table, batch_size=2)
    smaller.load_state_dict(boundary)
    assert smaller.state_dict()["epoch"] == 3 and len(batches(smaller)) == len(smaller) == 5
    # after the saved epoch's last batch: the next loader starts the following epoch
    done = make(table)
    done.set_epoch(4)
    batches(done)
    smaller = make(table, batch_size=2)
    smaller.load_state_dict(done.state_dict())
    assert (smaller.state_dict()["epoch"], smaller.state_dict()["batch"]) == (5, 0)


def test_two_shards_disjoint_and_cover(table):
    s0, s1 = make(table, shard=(0, 2), batch_size=2), make(table, shard=(1, 2), batch_size=2)
    assert len(s0) == len(s1) == 2
    i0 = torch.cat([b["index"] for b in batches(s0)]).ravel().tolist()
    i1 = torch.cat([b["index"] for b in batches(s1)]).ravel().tolist()
    assert not set(i0) & set(i1)
    assert len(set(i0) | set(i1)) == 8    # 10 rows, 2 shards x 2 batches x 2: drop_last


def test_schedule_switch_without_rebuild(table):
    loader = make(table, schedule=rtmpose_schedule(3, switch_epoch=1), batch_size=10)
    pipe_ids = []
    rot = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for b in loader:
            lin = b["affine"].numpy()[:, :, :2].astype(np.float64)
            # rotation angle of the (possibly mirrored) matrix
            det = np.linalg.det(lin)
            ang = np.degrees(np.arctan2(lin[:, 1, 0] * np.sign(det), lin[:, 0, 0] * np.sign(det)))
            rot.append(np.abs(ang).max())
        pipe_ids.append(id(loader._pipe))
    assert pipe_ids[0] == pipe_ids[1]
    assert rot[1] <= 60.0 + 1e-3


def test_host_cache_gives_identical_batches(table):
    a = batches(make(table, image_dtype="uint8"))
    loader = make(table, image_dtype="uint8", cache="host")
    assert loader.cache_bytes == 10 * 200 * 160 * 4  # RGBA frames for the OpenCV stage
    b = batches(loader)
    assert loader.source.reader.frames is not None
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["keypoints"], y["keypoints"])


def test_cache_refuses_when_too_big(table, monkeypatch):
    from posefeed.pipelines import CacheTooLarge, cache

    monkeypatch.setattr(cache, "available_host_bytes", lambda: 1000)
    with pytest.raises(CacheTooLarge, match="GiB"):
        make(table, cache="host")


def test_uint8_and_blobs_with_full_photometric_off(table):
    cfg = AugmentConfig.none().with_(flip_prob=0.5, rotate_factor=45.0, rotate_prob=1.0)
    for b in batches(make(table, image_dtype="uint8", schedule=cfg)):
        assert b["image"].dtype == torch.uint8
        check_blobs(table, b)


@pytest.fixture()
def bad_table(tmp_path):
    t = make_blob_table(tmp_path, n_images=6, k=4)
    (tmp_path / "img002.png").write_bytes(b"this is not an image")
    return t


def test_bad_image_raise_names_the_file(bad_table):
    with pytest.raises(BadImageError, match="img002.png"):
        batches(make(bad_table, shuffle=False, batch_size=2))


def test_bad_image_skip_replaces_and_counts(bad_table):
    loader = make(bad_table, on_bad_image="skip", shuffle=False, batch_size=2)
    out = batches(loader)
    assert len(out) == len(loader) == 3
    idx = torch.cat([b["index"] for b in out]).ravel().tolist()
    assert 2 not in idx and idx.count(3) == 2     # replaced by the next good row
    assert loader.skipped == 1


def test_errors_for_bad_arguments(table):
    with pytest.raises(ValueError):
        make(table, mode="video")
    with pytest.raises(ValueError):
        make(table, cache="disk")
    with pytest.raises(ValueError):
        make(table, shard=(2, 2))
    with pytest.raises(ValueError):
        make(table, schedule=[(1, AugmentConfig())])


def test_auto_device_needs_cupy_for_gpu_targets(table, monkeypatch):
    """A CUDA machine without CuPy: "auto" falls back to the CPU pipeline (the codecs would
    need CuPy on the GPU); an explicit "gpu" says what to install."""
    import posefeed.pipelines.loader as loader_mod
    from posefeed.targets.simcc import SimCC

    monkeypatch.setattr(loader_mod, "_cuda_ok", lambda: True)
    monkeypatch.setattr(loader_mod, "cupy_or_none", lambda: None)
    codec = SimCC(input_size=INPUT)
    assert make(table, codecs=[codec], device="auto").device == "cpu"
    with pytest.raises(RuntimeError, match="CuPy"):
        make(table, codecs=[codec], device="gpu")


# -- real datasets ---------------------------------------------------------------------------
def check_affine_back(table, b, atol=2e-2):
    kp = b["keypoints"].numpy().astype(np.float64)
    idx = b["index"].numpy()
    aff = b["affine"].numpy().astype(np.float64)
    flipped = np.linalg.det(aff[:, :, :2]) < 0
    perm = np.arange(table.num_keypoints)
    for a, c in table.flip_pairs:
        perm[a], perm[c] = c, a
    back = np.einsum("bij,bnkj->bnki", aff[:, :, :2], kp[..., :2]) + aff[:, None, None, :, 2]
    labels = table.keypoints.astype(np.float64)
    for i in range(len(kp)):
        for n in range(kp.shape[1]):
            if idx[i, n] < 0:
                continue
            lab = labels[idx[i, n]][perm if flipped[i] else np.arange(len(perm))]
            ok = lab[:, 2] > 0
            np.testing.assert_allclose(back[i, n][ok], lab[ok, :2], atol=atol)


def test_dlc_png_frames(dlc_project):
    from posefeed.datasets import load_dlc
    from posefeed.targets import DLCHeatmap
    from posefeed.targets.simcc import SimCC

    table = load_dlc(dlc_project)
    for mode in ("topdown", "frame"):
        codecs = [SimCC(input_size=(64, 48)), DLCHeatmap(stride=8, heatmap_size=(8, 6))]
        loader = PoseLoader(table, codecs, mode=mode, input_size=(64, 48), batch_size=4,
                            device="cpu", num_threads=2)
        b = batches(loader, 1)[0]
        assert b["image"].shape == (4, 3, 48, 64)
        assert b["x_labels"].shape == (4, 4, 128) and b["heatmap"].shape == (4, 4, 6, 8)
        check_affine_back(table, b)
        ref = codecs[1].encode(b["keypoints"].numpy())
        for name in codecs[1].output_names:
            np.testing.assert_array_equal(b[name].numpy(), ref[name])


def test_coco_jpegs(coco_json):
    from posefeed.datasets import load_coco

    table = load_coco(coco_json)
    loader = PoseLoader(table, [], input_size=(48, 64), batch_size=4, device="cpu", num_threads=2)
    for b in batches(loader):
        assert b["image"].shape == (4, 3, 64, 48)
        check_affine_back(table, b)
    frame = PoseLoader(table, [], mode="frame", input_size=(96, 64), batch_size=2, device="cpu",
                       num_threads=2)
    n_max = max(len(f) for f in table.frames())
    b = batches(frame, 1)[0]
    assert b["keypoints"].shape == (2, n_max, 17, 3)
    check_affine_back(table, b)


def test_shard_taken_from_torch_distributed(table, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    loader = make(table, batch_size=2)
    assert loader.state_dict()["shard"] == (1, 2)
    ref = make(table, batch_size=2, shard=(1, 2))
    assert [b["index"].tolist() for b in batches(loader)] == \
        [b["index"].tolist() for b in batches(ref)]


def test_state_dict_at_epoch_end_moves_to_next_epoch(table):
    loader = make(table)
    loader.load_state_dict({"epoch": 2, "batch": len(loader), "seed": 11})
    assert loader.epoch == 3 and loader.state_dict()["batch"] == 0
    with pytest.raises(ValueError, match="seed"):
        loader.load_state_dict({"epoch": 0, "batch": 0, "seed": 12})


def test_image_size_mismatch_is_a_bad_image(tmp_path):
    from PIL import Image

    t = make_blob_table(tmp_path, n_images=4, k=4)
    Image.new("RGB", (100, 80)).save(tmp_path / "img001.png")
    with pytest.raises(BadImageError, match="100x80 but the table says 200x160"):
        batches(make(t, shuffle=False, batch_size=2))


def test_resume_after_last_batch_of_epoch_does_not_replay_it(table):
    """Stopped right after the last batch of epoch 1 (generator not exhausted): the saved
    position is (1, len). A resumed loop calls set_epoch(1) again, as after a mid-epoch stop;
    nothing of epoch 1 is left, and epoch 2 then matches an uninterrupted loader."""
    full = make(table)
    full.set_epoch(2)
    ref2 = [b["index"] for b in batches(full)]
    first = make(table)
    first.set_epoch(1)
    assert len(batches(first, len(first))) == len(first)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batch"] == len(first)
    for loader in (first, make(table)):          # live, and resumed from the state
        if loader is not first:
            loader.load_state_dict(state)
        loader.set_epoch(1)
        assert batches(loader) == []             # epoch 1 is already complete
        assert loader.epoch == 2 and loader.state_dict()["batch"] == 0
        loader.set_epoch(2)
        got = [b["index"] for b in batches(loader)]
        assert len(got) == len(ref2) and all(torch.equal(u, v) for u, v in zip(got, ref2))


def test_host_cache_keeps_rgb_for_the_dali_backend(table):
    """Only the OpenCV stage gets RGBA frames; the DALI-ops graph keeps RGB (3 bytes/pixel)."""
    loader = make(table, image_dtype="uint8", cache="host", cpu_backend="dali")
    assert loader.cache_bytes == 10 * 200 * 160 * 3
    batches(loader)
    assert {f.shape[2] for f in loader.source.reader.frames} == {3}


class StackCodec(CountCodec):
    """CountCodec that records whether DALI's AutoGraph sits between DALI and the codec."""

    seen: list[bool] = []

    def encode(self, keypoints):
        import inspect

        files = [f.filename for f in inspect.stack(context=0)]
        StackCodec.seen.append(any("_autograph" in f or "__autograph_generated" in f for f in files))
        return super().encode(keypoints)


@pytest.mark.parametrize("cache", [None, "host"])
def test_per_batch_python_is_not_rewritten_by_autograph(table, cache):
    """With conditionals on, DALI's AutoGraph rewrites every function called inside the
    pipeline definition and everything those call at run time (it made the codec adapters
    25x slower); the codecs must run as plain Python."""
    StackCodec.seen = []
    batches(make(table, codecs=[StackCodec()], cache=cache), n=2)
    assert StackCodec.seen and not any(StackCodec.seen)
