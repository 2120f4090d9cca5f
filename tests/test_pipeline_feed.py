"""The named feed (only the fields the graph reads, batch N+1 prepared ahead), file checks in
the read pool, zero-copy outputs and their lifetime, and the dense target stage."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nvidia.dali.tensors import TensorListCPU

from posefeed.pipelines import AugmentConfig, PipelineError
from posefeed.pipelines.graph import (CROP_INPUTS, PREFETCH, GraphSpec, graph_fields,
                                      graph_params)
from posefeed.pipelines.images import ImageReader, pad_bytes
from posefeed.pipelines.source import FIELDS, BatchSource, SourceSpec, dali_feed
from posefeed.targets import GaussianHeatmap, SimCC
from helpers import batches, make_blob_table, make_dataset, make_loader

INPUT = (48, 64)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("feed"), n_images=12, k=4)


def make(table, **kw):
    return make_loader(table, **{"input_size": INPUT, "seed": 5, **kw})


def spec(**kw):
    args = dict(mode="topdown", input_size=INPUT, batch_size=4,
                schedule=[(0, AugmentConfig())], seed=3, shuffle=True, drop_last=True,
                rank=0, world=1, on_bad_image="raise")
    args.update(kw)
    return SourceSpec(**args)


def test_graphs_declare_what_they_read():
    cpu = GraphSpec.choose("cpu", INPUT, paths=["a.jpg"])
    assert set(CROP_INPUTS) <= set(graph_fields(cpu)) and "warp" not in graph_fields(cpu)
    assert {"roi_anchor", "roi_shape"} <= set(graph_fields(cpu))          # ROI decode on CPU
    gpu = GraphSpec.choose("gpu", INPUT, paths=["a.jpg"])
    f = graph_fields(gpu)
    assert f[0] == "images" and "median_window" in f and "hsv_lut" not in f
    assert "roi_anchor" not in f and gpu.dense_targets
    ahead = GraphSpec.choose("cpu", INPUT, cache="host", paths=["a.png"])
    assert ahead.crop_ahead and not set(CROP_INPUTS) & set(graph_params(ahead))


def test_the_source_computes_only_the_fields_and_the_same_values(table):
    fields = graph_fields(GraphSpec.choose("gpu", INPUT, paths=["a.png"]))
    part = BatchSource(table, spec(), ImageReader(table), fields=fields, lookahead=False)
    full = BatchSource(table, spec(), ImageReader(table), lookahead=False)
    part.seek(0), full.seek(0)
    a, b = part(), full()
    assert set(a) == set(fields)
    assert set(b) == set(FIELDS)
    for k in fields:
        if k != "images":
            assert np.array_equal(a[k], b[k]), k
    # the tuple of all fields, as the feed was before it was named
    rows, p = full.batch(0, 1)
    legacy = dali_feed(None, rows, p, full._sizes[rows[:, 0]], INPUT, False)
    nxt = full()
    for name, value in zip(FIELDS[1:], legacy[1:]):
        assert np.array_equal(value, nxt[name]), name
    with pytest.raises(ValueError, match="unknown feed fields"):
        BatchSource(table, spec(), ImageReader(table), fields=("images", "nope"))


def test_look_ahead_gives_the_same_batches(table):
    """Batch N+1 prepared in a thread while N is used: the same numbers as prepared on
    demand (a pure function of seed, epoch, batch, rank), across an epoch boundary and a
    seek."""
    def run(lookahead):
        src = BatchSource(table, spec(), ImageReader(table), lookahead=lookahead)
        out = []
        for epoch in (0, 1):
            src.seek(epoch)
            while True:
                try:
                    out.append(src())
                except StopIteration:
                    break
        src.seek(1, 1)
        out.append(src())
        src.close()
        return out

    a, b = run(True), run(False)
    assert len(a) == len(b) == 2 * (12 // 4) + 1
    for x, y in zip(a, b):
        for k in FIELDS:
            if k == "images":
                assert all(np.array_equal(i, j) for i, j in zip(x[k], y[k]))
            else:          # area: NaN where the table has none
                assert np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f"), k


def test_parameters_fed_as_tensor_lists_give_the_same_batches(table):
    """The GPU path hands DALI its parameter fields as ``TensorListCPU``s built in the
    look-ahead (`BatchSource.tensor_lists`): run on the CPU with the DALI-ops graph (the GPU
    graph's operators), the batches equal those fed from NumPy arrays, field for field."""
    def run(tensor_lists):
        loader = make(table, cpu_backend="dali", codecs=[SimCC(input_size=INPUT)])
        fields = loader.packing.outputs                 # the DALI-ops graph: packed inputs
        loader.source.tensor_lists = fields if tensor_lists else ()
        out = batches(loader, 3)
        feed = loader.source.prepare(0, 0)     # what the source hands DALI
        loader.close()
        return out, fields, feed

    (a, fields, feed), (b, _, plain) = run(True), run(False)
    assert fields and all(isinstance(feed.feed[f], TensorListCPU) for f in fields)
    assert not any(isinstance(plain.feed[f], TensorListCPU) for f in fields)
    for f in fields:
        assert np.array_equal(np.asarray(feed.feed[f].as_tensor()), plain.feed[f]), f
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_each_file_is_read_once_and_checked_in_the_read_pool(table, monkeypatch):
    import threading

    reads, threads = {}, set()
    real = ImageReader._read

    def counting(self, image_id):
        reads[image_id] = reads.get(image_id, 0) + 1
        threads.add(threading.current_thread().name)
        return real(self, image_id)

    monkeypatch.setattr(ImageReader, "_read", counting)
    loader = make(table, shuffle=False, batch_size=6)
    batches(loader)
    assert sorted(reads) == list(range(12)) and set(reads.values()) == {1}
    assert all(not t.startswith("MainThread") for t in threads)


def test_padded_bytes_are_vectorised_and_exact():
    data = [np.frombuffer(b, np.uint8) for b in (b"abc", b"", b"hello")]
    out = pad_bytes(data, np.array([2, 0, 1, 0]))
    assert out.shape == (4, 5) and out.dtype == np.uint8
    assert bytes(out[0]) == b"hello" and bytes(out[1]) == b"abc\0\0"
    assert not out[2].any() and bytes(out[3]) == b"abc\0\0"


def test_batch_n_stays_intact_while_later_batches_are_produced(table):
    """Outputs are zero-copy views of DALI's buffers; DALI's default executor gives every
    iteration new buffers and keeps a buffer while it is referenced, so batch 0 is unchanged
    after the loader produced batches 1 .. PREFETCH + 1 (DALI ran up to PREFETCH beyond)."""
    loader = make(table, batch_size=2, codecs=[SimCC(input_size=INPUT)], drop_last=False)
    it = iter(loader)
    first = next(it)
    copy = {k: v.clone() for k, v in first.items()}
    later = [next(it) for _ in range(PREFETCH + 1)]
    for k in first:
        assert torch.equal(first[k], copy[k]), k
    ptrs = {b["image"].data_ptr() for b in [first] + later}
    assert len(ptrs) == len(later) + 1            # no buffer was handed out twice
    assert loader._pipe.exec_dynamic


def test_tensor_lists_are_told_apart_by_type(table):
    """``TensorListCPU`` has ``as_cpu`` too: a CPU output of any pipeline is read as host
    memory, never through the GPU branch."""
    loader = make(table)
    loader.device = "gpu"                       # what a GPU pipeline's CPU output looked like
    loader._pipe = None
    k = np.arange(2 * 1 * 4 * 3, dtype=np.float32).reshape(2, 1, 4, 3)
    outs = [TensorListCPU(np.zeros((2, 3, 4, 4), np.float32)), TensorListCPU(k),
            TensorListCPU(np.zeros((2, 1), np.int64)), TensorListCPU(np.zeros((2, 2, 3), np.float32))]
    b = loader._to_torch(outs)
    assert b["keypoints"].device.type == "cpu" and torch.equal(b["keypoints"], torch.from_numpy(k))


def test_dense_targets_equal_targets_inside_the_graph(table):
    codecs = lambda: [SimCC(input_size=INPUT), GaussianHeatmap(input_size=INPUT,  # noqa: E731
                                                               heatmap_size=(12, 16))]
    a = batches(make(table, codecs=codecs(), dense_targets=False))
    b = batches(make(table, codecs=codecs(), dense_targets=True))
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            assert torch.equal(x[k], y[k]), k
    # each dense output is the codec applied to the batch's keypoints (an independent call)
    ref = SimCC(input_size=INPUT).encode(b[0]["keypoints"].numpy())
    assert np.array_equal(b[0]["x_labels"].numpy(), ref["x_labels"])


def test_a_failing_dense_codec_is_a_pipeline_error(table):
    class Broken(SimCC):
        def encode(self, keypoints, out=None):
            raise ZeroDivisionError("codec bug")

    with pytest.raises(PipelineError, match="codec bug") as e:
        batches(make(table, codecs=[Broken(input_size=INPUT)], dense_targets=True))
    assert isinstance(e.value.__cause__, ZeroDivisionError)


def test_dali_threads_are_shared_by_the_ranks_of_a_node(monkeypatch):
    import os

    from posefeed.pipelines.loader import default_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_threads() == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cores))
    assert default_threads() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == max(cores // 2, 1)


def test_cache_headroom_on_the_cpu_host_cache(table, monkeypatch):
    from posefeed.pipelines import CacheTooLarge, cache

    need = cache.cache_bytes(table, 4)            # RGBA frames for the OpenCV stage
    monkeypatch.setattr(cache, "available_host_bytes", lambda: need + 1000)
    assert make(table, cache="host", cache_headroom=1000).cache_bytes == need
    with pytest.raises(CacheTooLarge, match="cache_headroom keeps 1001 free"):
        make(table, cache="host", cache_headroom=1001)


def test_packed_parameters_give_the_same_batches(table, monkeypatch):
    """The DALI-ops graph (the GPU graph's operators, here on the CPU) reads its parameters
    from two packed inputs (`fields.Packing`), sliced back by DALI ops: the batches equal
    those of the graph fed one input per field; packing round-trips every dtype exactly."""
    import dataclasses

    import posefeed.pipelines.graph as graph_mod
    from posefeed.pipelines.fields import PACKED, Packing

    def run(packed):
        monkeypatch.setattr(graph_mod, "PACK_PARAMS", packed)
        # motion blur too; no noise: DALI's noise generator is seeded per pipeline
        schedule = [(0, dataclasses.replace(AugmentConfig.deeplabcut_default(), noise_prob=0.0))]
        with make(table, cpu_backend="dali", codecs=[SimCC(input_size=INPUT)],
                  schedule=schedule) as loader:
            assert loader.graph.packed == packed and loader.graph.motion_noise
            names = loader.source.fed
            return batches(loader, 3), names

    (a, packed_names), (b, plain_names) = run(True), run(False)
    assert set(PACKED) <= set(packed_names) and not set(PACKED) & set(plain_names)
    assert len(packed_names) < 4 < len(plain_names)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k
    rng = np.random.default_rng(0)
    feed = {"f": rng.normal(size=(5, 2, 3)).astype(np.float32), "b": rng.random(5) < 0.5,
            "i": rng.integers(-9, 9, (5, 2)).astype(np.int32), "s": rng.normal(size=5).astype(
                np.float32), "l": rng.integers(-2**40, 2**40, (5, 1)), "d": rng.normal(size=5)}
    pk = Packing.of(feed, list(feed))
    packed = pk.pack(feed)
    assert set(packed) == {"packed_f32", "packed_i64", "d"} and pk.rest == ("d",)
    assert packed["packed_f32"].shape == (5, 6 + 1 + 1) and packed["packed_i64"].shape == (5, 3)
    back = pk.unpack(packed)
    for k, v in feed.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k


@pytest.mark.parametrize("cpu_backend", ["opencv", "dali"])
def test_an_epoch_of_no_batches_is_the_same_clear_error_on_both_graphs(tmp_path, cpu_backend):
    """6 images of one instance each, batch 8, drop_last: no batch. The DALI-ops graph packs
    its parameters from a sampled first batch, which raised a bare IndexError before the
    check; both graphs give the check's message."""
    table = make_dataset(tmp_path, {}, n=6)
    with pytest.raises(ValueError, match=r"^0 batches per epoch: 6 instances \(topdown mode\) "
                                         r"split over world size 1 leave 6 per shard, fewer "
                                         r"than batch_size 8 with drop_last=True"):
        make(table, batch_size=8, drop_last=True, cpu_backend=cpu_backend)


def test_a_prefetch_deeper_than_the_workers_slot_hold_is_refused(table):
    """The feed worker reuses a batch's slot ``HOLD`` (4) batches after the graph took it; the
    OpenCV stage's read-ahead reads it until DALI collects the batch, up to ``prefetch``
    iterations later, plus the running one and a spare: prefetch 3 with a worker is refused,
    prefetch 2 (the loader's) builds, and a thread look-ahead has no slots to outrun."""
    from posefeed.pipelines.graph import build_pipeline
    cpu = GraphSpec.choose("cpu", INPUT, paths=["a.png"])   # PNG: OpenCV decodes, crops ahead
    assert cpu.crop_ahead
    for lookahead, prefetch, refused in [("process", 3, True), ("process", 2, False),
                                         ("thread", 3, False)]:
        src = BatchSource(table, spec(), ImageReader(table), fields=graph_fields(cpu),
                          lookahead=lookahead)
        try:
            if refused:
                with pytest.raises(ValueError, match=r"prefetch 3 needs the feed worker to "
                                                     r"hold each batch's slot 5 batches "
                                                     r"\(feed_process.HOLD is 4\)"):
                    build_pipeline(cpu, src, (), 4, 1, None, prefetch=prefetch)
            else:
                pipe = build_pipeline(cpu, src, (), 4, 1, None, prefetch=prefetch)
                for r in pipe.posefeed_resources:
                    r.close()
        finally:
            src.close()
    assert PREFETCH == 2
