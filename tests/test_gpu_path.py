"""The GPU path's host-side design on a real GPU: padded encoded bytes through nvJPEG, the slab
ring on a CUDA stream, zero-copy outputs that outlive the prefetch queue, no host waits per
batch, the trainer without per-step reads, cached kernel grids. Skipped without CUDA (the
CPU halves are in test_pipeline_feed.py, test_pipeline_slab.py, test_trainer_deferred.py);
run with ``make gpu-check``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posefeed.pipelines import AugmentConfig
from posefeed.pipelines.graph import PREFETCH
from helpers import batches, make_blob_table, make_loader

pytestmark = pytest.mark.gpu
INPUT = (64, 80)


@pytest.fixture(scope="module")
def jpeg_table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("gpupath"), n_images=12, k=4, ext="jpg")


def make(table, **kw):
    return make_loader(table, **{"input_size": INPUT, "device": "gpu", "num_threads": 2,
                                 "seed": 4, **kw})


def test_padded_bytes_decode_like_a_list_on_nvjpeg(jpeg_table):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    from posefeed.pipelines.images import pad_bytes

    files = [str(jpeg_table.image_path(i)) for i in jpeg_table.images[:4]]
    data = [np.fromfile(f, np.uint8) for f in files]
    dense = pad_bytes(data, np.arange(len(data)))
    outs = []
    for feed in (data, dense):
        @pipeline_def(batch_size=len(data), num_threads=1, device_id=0)
        def pipe():
            x = fn.external_source(source=lambda: feed, batch=True)
            return fn.decoders.image(x, device="mixed", output_type=types.RGB)

        p = pipe()
        p.build()
        (o,) = p.run()
        outs.append([np.array(o.as_cpu().at(i)) for i in range(len(data))])
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("cache", [None, "host", "device"])
def test_batch_n_outlives_the_prefetch_queue_on_the_gpu(jpeg_table, cache):
    from posefeed.targets import SimCC

    loader = make(jpeg_table, cache=cache, codecs=[SimCC(input_size=INPUT)], batch_size=2)
    it = iter(loader)
    first = next(it)
    copy = {k: v.clone() for k, v in first.items()}
    for _ in range(PREFETCH + 3):        # past the ring's depth - 1 for the caches
        next(it)
    torch.cuda.synchronize()
    for k in first:
        assert torch.equal(first[k], copy[k]), k


def test_no_host_wait_per_batch(jpeg_table, monkeypatch):
    loader = make(jpeg_table, cache="device", batch_size=2)
    it = iter(loader)
    next(it)

    def refuse(*a, **k):
        raise AssertionError("the loader waited for the device")

    monkeypatch.setattr(torch.cuda, "synchronize", refuse)
    monkeypatch.setattr(torch.cuda.Stream, "synchronize", refuse)
    monkeypatch.setattr(torch.cuda.Event, "synchronize", refuse)
    for _ in range(3):
        b = next(it)
    assert b["image"].is_cuda


def test_device_cache_slab_ring_equals_the_slab_rows(jpeg_table):
    loader = make(jpeg_table, cache="device", schedule=AugmentConfig.none(), image_dtype="uint8")
    batches(loader, 1)
    ring = loader.source.reader.ring
    slab = loader.source.reader.frames
    assert slab.data.is_cuda and slab.data.is_contiguous()
    ids = np.array([3, 1, 1, 0])
    ring.consumed()
    out = ring.gather(ids)
    torch.cuda.current_stream().wait_stream(ring.stream)
    assert torch.equal(out, slab.data[torch.as_tensor(ids, device=slab.data.device)])


def test_trainer_without_per_step_reads_on_cuda():
    from trainer_cases import train

    a, _, _ = train(1, device="cuda")
    b, _, _ = train(6, device="cuda")
    assert a.global_step == b.global_step and len(a.events) == len(b.events) == 4
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)


def test_kernel_grids_are_uploaded_once_per_device():
    import cupy as cp

    from posefeed.targets import DLCHeatmap
    from posefeed.targets.kernels import device_grids

    codec = DLCHeatmap(stride=8, heatmap_size=(8, 6))
    a, b = device_grids(codec), device_grids(codec)
    assert a[0] is b[0] and a[1] is b[1]
    assert cp.asnumpy(a[0]).tolist() == codec.grid_x.tolist()
