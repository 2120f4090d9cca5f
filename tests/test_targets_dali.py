"""Each codec's ``dali_function``: called directly with ragged per-sample N, and inside a
real CPU DALI pipeline (``fn.external_source`` -> ``fn.python_function`` with
``batch_processing=True``); outputs must equal ``codec.encode`` on the padded batch.
DALI 2.4 runs python_function with the default executor and with ``exec_dynamic=True``;
``exec_async=False, exec_pipelined=False`` is not needed."""
from __future__ import annotations

import numpy as np
import pytest

from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC, UDPHeatmap

CODECS = {
    "simcc": lambda: SimCC(input_size=(48, 64), sigma=(2.0, 2.5)),
    "gaussian": lambda: GaussianHeatmap(input_size=(48, 64), heatmap_size=(12, 16)),
    "gaussian_unbiased": lambda: GaussianHeatmap(input_size=(48, 64), heatmap_size=(12, 16), unbiased=True),
    "udp": lambda: UDPHeatmap(input_size=(48, 64), heatmap_size=(12, 16)),
    "dlc": lambda: DLCHeatmap(stride=4, heatmap_size=(12, 16)),
    "dlc_plateau_nolocref": lambda: DLCHeatmap(stride=3, heatmap_size=(16, 21), mode="plateau", locref=False),
}
K = 5
NS = (1, 3, 0, 2)


def ragged_samples(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for n in NS:
        s = np.empty((n, K, 3), np.float32)
        s[..., 0] = rng.uniform(-5, 53, (n, K))
        s[..., 1] = rng.uniform(-5, 69, (n, K))
        s[..., 2] = rng.choice([-1, 0, 1, 2], (n, K), p=[0.1, 0.1, 0.2, 0.6])
        out.append(s)
    return out


def padded(samples: list[np.ndarray]) -> np.ndarray:
    n_max = max(max(s.shape[0] for s in samples), 1)
    batch = np.zeros((len(samples), n_max, K, 3), np.float32)
    for i, s in enumerate(samples):
        batch[i, : s.shape[0]] = s
    return batch


@pytest.mark.parametrize("name", sorted(CODECS))
def test_dali_function_ragged(name):
    codec = CODECS[name]()
    samples = ragged_samples(0)
    outs = codec.dali_function()(samples)
    assert len(outs) == len(codec.output_names)
    ref = codec.encode(padded(samples))
    for out_name, per_sample in zip(codec.output_names, outs):
        assert len(per_sample) == len(samples)
        for i, a in enumerate(per_sample):
            assert a.flags.c_contiguous and a.dtype == np.float32
            np.testing.assert_array_equal(a, ref[out_name][i])
    # the empty sample (N = 0) draws nothing
    assert not outs[0][2].any()


@pytest.mark.parametrize("name", sorted(CODECS))
def test_dali_cpu_pipeline(name):
    from nvidia.dali import fn, pipeline_def, types  # noqa: PLC0415

    codec = CODECS[name]()
    batches = [ragged_samples(1), ragged_samples(2)]
    it = iter(batches)

    def source():
        return next(it)

    @pipeline_def(batch_size=len(NS), num_threads=1, device_id=None, exec_dynamic=True)
    def pipe():
        kpts = fn.external_source(source=source, batch=True, dtype=types.FLOAT)
        outs = fn.python_function(kpts, function=codec.dali_function(), batch_processing=True,
                                  num_outputs=len(codec.output_names))
        return tuple(outs) if isinstance(outs, (list, tuple)) else (outs,)

    p = pipe()
    p.build()
    for batch in batches:
        outs = p.run()
        ref = codec.encode(padded(batch))
        for out_name, tl in zip(codec.output_names, outs):
            got = tl.as_array()
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, ref[out_name])


def _buffer_ranges(func):
    """(start, end) byte addresses of every buffer the adapter keeps."""
    ranges = []
    for bufs, _ in func.encoder._sets.values():
        for a in bufs.values():
            ranges.append((a.ctypes.data, a.ctypes.data + a.nbytes))
    return ranges


@pytest.mark.parametrize("exec_dynamic", [True, False])
@pytest.mark.parametrize("name", ["dlc", "dlc_plateau_nolocref", "simcc", "gaussian"])
def test_dali_copies_the_reused_buffers(name, exec_dynamic):
    """The adapter encodes every batch into the same kept buffers; DALI must copy a
    python_function's outputs (else consecutive iterations would alias): run several
    iterations, let DALI prefetch ahead, and check each iteration's outputs equal the fresh
    ``encode`` of its own batch and live outside the adapter's buffers."""
    from nvidia.dali import fn, pipeline_def, types  # noqa: PLC0415

    codec = CODECS[name]()
    func = codec.dali_function()
    assert func.encoder is not None
    batches = [ragged_samples(s) for s in (11, 12, 13, 14)]
    it = iter(batches)

    def source():
        return next(it)

    @pipeline_def(batch_size=len(NS), num_threads=1, device_id=None, exec_dynamic=exec_dynamic,
                  prefetch_queue_depth=2)
    def pipe():
        kpts = fn.external_source(source=source, batch=True, dtype=types.FLOAT)
        outs = fn.python_function(kpts, function=func, batch_processing=True,
                                  num_outputs=len(codec.output_names))
        return tuple(outs) if isinstance(outs, (list, tuple)) else (outs,)

    p = pipe()
    p.build()
    results = []
    if exec_dynamic:  # outputs stay valid: run every iteration first, read them afterwards
        runs = [p.run() for _ in batches]
    else:  # the legacy executor recycles its own outputs at the next run: read each at once
        runs = []
    for i, batch in enumerate(batches):
        outs = runs[i] if exec_dynamic else p.run()
        ranges = _buffer_ranges(func)
        assert ranges, "the adapter kept no buffers"
        got = {}
        for out_name, tl in zip(codec.output_names, outs):
            for s in range(len(tl)):
                ptr = tl[s].data_ptr()
                assert not any(lo <= ptr < hi for lo, hi in ranges), f"{out_name}[{s}] aliases a kept buffer"
            got[out_name] = tl.as_array()
        ref = codec.encode(padded(batch))
        for out_name in codec.output_names:
            np.testing.assert_array_equal(got[out_name], ref[out_name])
        results.append(got)
    # consecutive iterations really differ (so aliasing could not hide)
    first = codec.output_names[0]
    for a, b in zip(results, results[1:]):
        assert not np.array_equal(a[first], b[first])


def test_dali_function_without_reuse_and_codec_without_out():
    """``reuse_buffers=False`` and codecs that do not implement ``output_shapes`` (plain
    ``encode(keypoints)``) both still work through the adapter."""
    from posefeed.targets.base import Codec  # noqa: PLC0415

    class Plain(Codec):
        name = "plain"

        @property
        def output_names(self):
            return ("vis",)

        def encode(self, keypoints):
            return {"vis": (keypoints[..., 2] > 0).sum(axis=1).astype(np.float32)}

        def decode(self, *outputs):
            raise NotImplementedError

    samples = ragged_samples(3)
    for codec, kw in ((CODECS["dlc"](), {"reuse_buffers": False}), (Plain(), {})):
        outs = codec.dali_function(**kw)(samples)
        ref = codec.encode(padded(samples))
        for out_name, per_sample in zip(codec.output_names, outs):
            for i, a in enumerate(per_sample):
                np.testing.assert_array_equal(a, ref[out_name][i])
