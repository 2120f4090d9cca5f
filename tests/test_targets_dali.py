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
