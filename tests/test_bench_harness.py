"""The benchmark harness: process-tree accounting, the timed loop, runner processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from posefeed.bench.harness import run_runner
from posefeed.bench.measure import measure, shapes_of
from posefeed.bench.proc import (cpu_breakdown, process_tree, thread_cpu_seconds,
                                 tree_cpu_seconds, tree_memory_mb)

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_tree_cpu_counts_children_live_and_reaped():
    before = tree_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", BUSY.format(s=0.4) + "time.sleep(5)"])
    try:
        deadline = time.time() + 30
        while time.time() < deadline and tree_cpu_seconds() - before < 0.3:
            time.sleep(0.05)
        assert child.pid in process_tree()
        assert tree_cpu_seconds() - before >= 0.3  # the live child's time is counted
    finally:
        child.kill()
        child.wait()
    # once reaped, its time moves to our cutime and is still counted
    assert tree_cpu_seconds() - before >= 0.3


def test_tree_memory_positive():
    rss, pss = tree_memory_mb()
    assert rss > 1 and pss > 1 and pss <= rss * 1.01
    rss2, none = tree_memory_mb(pss=False)
    assert rss2 > 1 and none is None


def test_measure_counts_batches_and_shapes():
    def source():
        while True:
            yield {"image": np.zeros((4, 3, 8, 6), np.float32), "x": np.zeros((4, 2))}

    consumed = []
    res = measure(source(), warmup=2, iters=5, consume=consumed.append)
    assert res["batches"] == 5 and res["samples"] == 20 and res["batch_size"] == 4
    assert len(consumed) == 2 + 5
    assert res["samples_per_s"] > 0 and res["cpu_s_per_sample"] >= 0 and res["wall_s"] > 0
    assert res["shapes"] == {"image": [4, 3, 8, 6], "x": [4, 2]}
    assert res["peak_rss_mb"] > 0 and res["gpu_mem_peak_mb"] is None


def test_measure_time_based_stops():
    def source():
        while True:
            time.sleep(0.01)
            yield {"image": np.zeros((2, 1))}

    res = measure(source(), warmup=1, iters=None, seconds=0.2, min_iters=3)
    assert res["batches"] >= 3 and 0.2 <= res["wall_s"] < 5


def test_shapes_of_skips_methods():
    class TL:
        def shape(self):
            return [(1, 2)]

    assert shapes_of({"a": TL(), "b": np.zeros((3,))}) == {"b": [3]}


def test_run_runner_in_subprocess():
    res = run_runner("sleep", {"batch_size": 3, "threads": 1, "iters": 4, "warmup": 1})
    assert res["error"] is None, res.get("log_tail")
    assert res["batches"] == 4 and res["samples"] == 12 and res["samples_per_s"] > 0
    assert res["runner"] == "sleep" and res["process_s"] > 0


def test_run_runner_reports_failure(tmp_path):
    res = run_runner("reference", {"data": str(tmp_path / "missing.json"), "batch_size": 2,
                                   "threads": 1, "iters": 1})
    assert res["error"] and "samples_per_s" not in res


def test_run_runner_timeout_kills_group():
    t0 = time.time()
    res = run_runner("sleep", {"batch_size": 1, "threads": 1, "iters": 10**9, "warmup": 1},
                     timeout=2.0)
    assert "timed out" in res["error"]
    assert time.time() - t0 < 30


def test_unknown_runner():
    res = run_runner("no_such_runner", {"threads": 1})
    assert "KeyError" in res["error"]
    assert os.getpid() in process_tree()


def test_thread_breakdown():
    snap = thread_cpu_seconds()
    assert snap and all(v >= 0 for v in snap.values())
    before = {"1 a": 1.0, "2 a": 1.0, "3 b": 0.0}
    after = {"1 a": 2.0, "2 a": 1.5, "3 b": 0.5, "4 c": 0.0}
    assert cpu_breakdown(before, after, wall=2.0) == {"a": 0.75, "b": 0.25}
