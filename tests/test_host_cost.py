"""No per-sample Python on the GPU path: the calls one batch makes on the host (counted with
``sys.setprofile`` by benchmarks/bench_host_cost.py, CUDA stubbed) must not grow with the
batch size. Per-sample code adds at least one call per sample."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpers import make_blob_table

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_host_cost.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_host_cost", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    # 8 images: every batch size reads all 8 files, so the uncached graph's per-file read
    # submissions (one pool task per file, not per sample) are the same at batch 8 and 32 and
    # the difference counts only what grows with the samples (16 images: 8 vs up to 16 files
    # read, ~3.5 calls each, made the count random across draws: +28 once)
    return make_blob_table(tmp_path_factory.mktemp("hostcost"), n_images=8, k=4)


@pytest.mark.parametrize("graph", ["uncached", "host_cache", "device_cache"])
def test_host_calls_do_not_grow_with_the_batch(bench, table, graph):
    small = bench.measure(graph, 8, batches=2, warmup=2, table=table)
    large = bench.measure(graph, 32, batches=2, warmup=2, table=table)
    grown = large["python_calls_per_batch"] - small["python_calls_per_batch"]
    assert grown < 32 - 8, (small, large)          # < one call per extra sample
    # the main thread's own calls (the feed's worker process prepares the parameters)
    main = large["main_calls_per_batch"] - small["main_calls_per_batch"]
    assert main < 32 - 8 and large["main_calls_per_batch"] < large["python_calls_per_batch"]
    assert large["host_waits_per_batch"] == 0      # no device synchronisation per batch
