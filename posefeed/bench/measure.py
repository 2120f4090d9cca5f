"""The timed loop a runner runs inside its own process (`measure`) and the memory sampler
beside it (`Monitor`).

`measure` iterates a batch source: ``warmup`` batches untimed, then at least ``iters``
batches (or, when ``iters`` is None, until ``seconds`` have passed), and reports

- ``samples_per_s``: samples of timed batches / wall seconds of the timed loop,
- ``cpu_s_per_sample``: CPU seconds (user + system) of the whole process tree over the timed
  loop, read from ``/proc/PID/stat`` of the runner and every descendant (DataLoader workers,
  DALI threads, pools), plus the reaped children's times, divided by the samples,
- ``peak_rss_mb`` / ``peak_pss_mb``: the peak over the run of the sum of RSS (and of PSS, which
  splits shared pages between processes) over the tree, sampled every 0.25 s (PSS every 1 s);
  the sampling thread's own CPU time is taken out of ``cpu_s_per_sample``,
- ``gpu_mem_peak_mb``: peak device memory in use (``total - free``) while the runner ran, when
  the runner uses the GPU,
- ``startup_s``: seconds from the runner's start to the first batch (not in the rate),
- ``runner_threads_cores``: cores used by each thread (by name) of the runner process itself
  over the timed loop (DALI's thread pool, executor, the Python main thread...): where an
  in-process loader spends its CPU, and whether it keeps ``threads`` cores busy.
"""
from __future__ import annotations

import resource
import threading
import time
from typing import Any, Callable, Iterator

from posefeed.bench.proc import cpu_breakdown, thread_cpu_seconds, tree_cpu_seconds, tree_memory_mb


class Monitor:
    """Samples tree RSS every ``interval`` seconds (PSS every ``pss_every``-th sample, and GPU
    memory in use when ``gpu``) in a daemon thread; keeps the peaks. ``cpu_s`` is the CPU
    time the monitor thread itself used, which `measure` takes out of the runner's CPU."""

    def __init__(self, interval: float = 0.25, gpu: bool = False, pss_every: int = 4) -> None:
        self.interval = interval
        self.gpu = gpu
        self.pss_every = max(int(pss_every), 1)
        self.peak_rss = self.peak_pss = 0.0
        self.peak_gpu: float | None = None
        self.cpu_s = 0.0
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-monitor")

    def sample(self) -> None:
        rss, pss = tree_memory_mb(pss=self._n % self.pss_every == 0)
        self._n += 1
        self.peak_rss = max(self.peak_rss, rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if pss is not None:
            self.peak_pss = max(self.peak_pss, pss)
        if self.gpu:
            try:
                import torch  # only GPU runners read device memory; CPU ones may lack torch

                if torch.cuda.is_initialized():
                    free, total = torch.cuda.mem_get_info()
                    used = (total - free) / 2**20
                    self.peak_gpu = used if self.peak_gpu is None else max(self.peak_gpu, used)
            except Exception:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
            self.cpu_s = time.thread_time()

    def __enter__(self) -> "Monitor":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._n = 0
        self.sample()


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the first dimension of ``image`` (or of the first tensor)."""
    if isinstance(batch, dict):
        x = batch.get("image")
        if x is None:
            x = next(iter(batch.values()))
        return int(x.shape[0])
    if isinstance(batch, (list, tuple)):
        return batch_size_of(batch[0])
    return int(batch.shape[0])


def _shape(v: Any) -> list[int] | None:
    s = getattr(v, "shape", None)
    if s is None or callable(s):
        return None
    return [int(d) for d in s]


def shapes_of(batch: Any) -> dict[str, list[int]]:
    if isinstance(batch, dict):
        items = batch.items()
    elif isinstance(batch, (list, tuple)):
        items = enumerate(batch)
    else:
        items = [("0", batch)]
    return {str(k): s for k, v in items if (s := _shape(v)) is not None}


def dtypes_of(batch: Any) -> dict[str, str]:
    if isinstance(batch, dict):
        return {str(k): str(v.dtype).replace("torch.", "") for k, v in batch.items()
                if hasattr(v, "dtype")}
    return {}


def measure(source: Iterator[Any], *, warmup: int = 2, iters: int | None = None,
            seconds: float = 10.0, min_iters: int = 3, consume: Callable[[Any], Any] | None = None,
            sync: Callable[[], None] | None = None, samples_per_batch: int | None = None,
            started: float | None = None, gpu: bool = False) -> dict[str, Any]:
    """Time ``source``: ``warmup`` batches untimed, then ``iters`` batches (or, with
    ``iters=None``, batches until ``seconds`` passed and at least ``min_iters`` ran).
    ``consume`` is called on every batch (e.g. a training step); ``sync`` before each clock
    reading (e.g. ``torch.cuda.synchronize``)."""
    started = time.perf_counter() if started is None else started
    with Monitor(gpu=gpu) as mon:
        first = next(source)
        if consume is not None:
            consume(first)
        if sync is not None:
            sync()
        startup = time.perf_counter() - started
        shapes, dtypes = shapes_of(first), dtypes_of(first)
        per_batch = samples_per_batch or batch_size_of(first)
        for _ in range(max(warmup - 1, 0)):
            b = next(source)
            if consume is not None:
                consume(b)
        if sync is not None:
            sync()
        cpu0, mon0, thr0 = tree_cpu_seconds(), mon.cpu_s, thread_cpu_seconds()
        t0 = time.perf_counter()
        n = 0
        samples = 0
        while True:
            b = next(source)
            if consume is not None:
                consume(b)
            n += 1
            samples += samples_per_batch or batch_size_of(b)
            if iters is not None:
                if n >= iters:
                    break
            elif n >= min_iters and time.perf_counter() - t0 >= seconds:
                break
        if sync is not None:
            sync()
        wall = time.perf_counter() - t0
        cpu = tree_cpu_seconds() - cpu0 - (mon.cpu_s - mon0)
        threads = cpu_breakdown(thr0, thread_cpu_seconds(), wall)
    return {
        "samples_per_s": samples / wall if wall > 0 else None,
        "cpu_s_per_sample": cpu / samples if samples else None,
        "batches": n,
        "samples": samples,
        "batch_size": per_batch,
        "wall_s": wall,
        "cpu_s": cpu,
        "cores_busy": cpu / wall if wall > 0 else None,
        "runner_threads_cores": threads,
        "startup_s": startup,
        "warmup_batches": max(warmup, 1),
        "peak_rss_mb": mon.peak_rss,
        "peak_pss_mb": mon.peak_pss,
        "gpu_mem_peak_mb": mon.peak_gpu,
        "shapes": shapes,
        "dtypes": dtypes,
    }
