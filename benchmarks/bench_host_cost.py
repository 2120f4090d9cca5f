"""Host cost of the GPU path: main-thread CPU time per batch of everything the GPU graph runs
in Python, measured on a CPU machine (the GPU is not needed for the host side).

What one batch costs the main thread (and DALI's Python-operator thread, which holds the GIL
and so is on the same critical path), for the three GPU graphs:

* ``uncached``: encoded JPEG bytes -> "mixed" decode in the graph;
* ``host_cache``: decoded frames in (pinned) host memory;
* ``device_cache``: decoded frames on the GPU.

Steps timed, in the order the GPU path runs them, with the loader's own code:

1. the feed: order, augmentation parameters, the fields the GPU graph reads, image bytes or
   frames (`BatchSource`), and DALI's conversion of what is fed into tensor lists;
2. the target launch: what the codecs' Python does around their kernels;
3. the loader's per-batch work on the pipeline outputs (``PoseLoader._to_torch``).

Stubbed, because they need CUDA (the Python around them is timed, the device work is not):
the codecs' kernels (``encode`` returns preallocated outputs), GPU tensor lists (small host
arrays behind the same methods, so ``from_dlpack`` / ``clone`` cost their Python only), the
device cache's frames (torch ``meta`` tensors, which have shapes and no storage; their
gather, ``index_select(out=)``, is checked for shapes and not run: on meta tensors torch runs
it through its Python reference implementation, ~190 us and ~450 calls a batch that the
CUDA kernel launch does not have, `meta_index_select`), ``torch.cuda`` stream calls (no-ops;
a host wait is counted in ``host_waits_per_batch``), and DALI's conversion of fed GPU
batches (run on CPU placeholders of the same structure: a list of samples or one dense
array; `feed_conversion`). The pipeline itself is not built: the loader is told that it
runs DALI's default ``exec_dynamic`` executor (`_ExecDynamic`), as the pipelines it builds
do, so its outputs are taken without a copy. The source runs with the GPU graph's spec (no
ROI decode on the GPU path).

Not timed: DALI's own work per fed input besides ``_prep_data_for_feed_input`` (the stream
lookup in ``Pipeline._feed_input``, ~2 us, and ``SetExternalTLInput``'s C++: together ~18 us
per input on this VM under load, docs/benchmarks.md), so trees that feed 14 parameter inputs
are undercounted by ~0.2 ms a batch against those that feed them packed in 2.

Counted: the main thread's CPU time per batch (``time.thread_time``), median
(``host_ms_per_batch``) and mean (``host_ms_per_batch_mean``) of ``--batches`` batches after
warm-up. The look-ahead runs beside it as the GPU loader runs it: a worker process by default
(``--lookahead process``; ``worker_ms_per_batch``: its CPU time per batch, measured in the
worker with ``time.thread_time`` and reported with each batch; not on the main thread), or a
thread (``--lookahead thread``, and trees before the worker process: its CPU time is not
told apart). ``serial_host_ms_per_batch``: the whole host path of a batch on one thread (the
look-ahead off: order, parameters, fields, images, feed, loader, targets).
``python_calls_per_batch``: the calls of that whole path (``sys.setprofile``, look-ahead
off); ``main_calls_per_batch``: the main thread's own calls with the look-ahead on. The file
reads of the uncached graph run in the reader's threads and are not counted. Run:
``python benchmarks/bench_host_cost.py [--json F] [--batches 30] [--lookahead L]``; it also
runs against an older tree (``PYTHONPATH=TREE``, from outside the checkout) for before /
after tables; `bench_host_cost_ab.py` alternates trees and modes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

GRAPHS = ("uncached", "host_cache", "device_cache")
BATCH_SIZES = (64, 256)
#: the GPU graph's targets: RTMPose's SimCC and an MSRA heatmap (input 192x256, K = 17)
INPUT_SIZE = (192, 256)


# ------------------------------------------------------------------------------------ stubs
class StubTensorListGPU:
    """Stands in for DALI's ``TensorListGPU``: the methods the loader calls, over a 1-element
    host array (the device copy a real one would start is GPU work, not timed)."""

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.float32):
        self.shape = shape
        self._a = np.zeros((1,) * len(shape), dtype=dtype)

    def as_tensor(self):
        return self._a

    def as_cpu(self):
        raise AssertionError("the GPU path must not copy outputs to the host")

    def __dlpack__(self, stream=None):
        return self._a.__dlpack__()

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class StubCuda:
    """``torch.cuda`` stream calls as no-ops that count host waits; and the device cache's
    gather on ``meta`` frames as one C++ dispatch, like the kernel launch it is on a GPU
    (`meta_index_select`)."""

    def __init__(self):
        self.waits = 0

    def patch(self):
        import torch  # noqa: PLC0415

        stub = self

        class _Stream:
            cuda_stream = 0

            def synchronize(self):
                stub.waits += 1

            def wait_stream(self, other):
                pass

            def record_event(self, event=None):
                return None

        stack = contextlib.ExitStack()
        for name, value in (("current_stream", lambda device=None: _Stream()),
                            ("is_available", lambda: True),
                            ("synchronize", lambda device=None: stub._wait())):
            stack.enter_context(_setattr(torch.cuda, name, value))
        stack.enter_context(_setattr(torch, "index_select", meta_index_select(torch.index_select)))
        return stack

    def _wait(self):
        self.waits += 1


def meta_index_select(index_select):
    """``torch.index_select`` that, for ``meta`` tensors with ``out=``, checks the shapes in
    Python and returns ``out``. On meta tensors torch runs ``index_select(out=...)`` through
    its Python reference implementation (``torch._refs``: ~190 us and ~450 Python calls a
    batch, all in the feed's thread), which a CUDA tensor does not (one C++ kernel launch);
    counted with it, the device cache made more calls than the host cache. Other tensors
    take the real function."""

    def stub(input, dim, index, *, out=None):
        if out is None or input.device.type != "meta":
            return index_select(input, dim, index, out=out)
        want = input.shape[:dim] + index.shape + input.shape[dim + 1:]
        if tuple(out.shape) != tuple(want) or out.dtype != input.dtype:
            raise RuntimeError(f"index_select: out {tuple(out.shape)} {out.dtype}, "
                               f"expected {tuple(want)} {input.dtype}")
        return out

    return stub


@contextlib.contextmanager
def _setattr(obj, name, value):
    had = hasattr(obj, name)
    old = getattr(obj, name, None)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


def stub_codec(codec, batch_size: int, num_keypoints: int):
    """``codec`` with ``encode`` replaced by a function that returns preallocated outputs of
    the right shapes (the kernel launch is GPU work)."""
    shapes = codec.output_shapes(batch_size, num_keypoints)
    outs = {n: np.zeros(shapes[n], dtype=np.float32) for n in codec.output_names}

    def encode(keypoints, out=None):
        return out if out is not None else outs

    codec.encode = encode
    return codec


# ------------------------------------------------------------------------------------- data
def make_table(n_rows: int):
    """The synthetic COCO-like dataset (640x480 JPEG, 17 keypoints), rows tiled to
    ``n_rows``."""
    from posefeed.bench.data import load_table, prepare_dataset, tile_table  # noqa: PLC0415

    return tile_table(load_table(prepare_dataset("synthetic")), n_rows)


# ------------------------------------------------------------------------------ the host step
def _placeholder(x):
    """A 1-byte CPU stand-in with the structure of a fed frame batch: a list of that many
    frames, or one dense batch (device frames are GPU memory, and DALI reads cached host
    frames in place, so only the per-sample bookkeeping is host work)."""
    if isinstance(x, list):
        return [np.zeros((1, 1, 1), np.uint8) for _ in x]
    return np.zeros((len(x), 1, 1, 1), np.uint8)


def feed_conversion(x, batch_size: int, frames: bool = False):
    """What DALI's ``external_source`` runs in Python on a fed batch (its own
    ``_prep_data_for_feed_input``: a loop over the samples of a list, or one tensor list for
    a dense array); ``frames``: decoded frames, converted as `_placeholder`."""
    from nvidia.dali.external_source import _prep_data_for_feed_input  # noqa: PLC0415

    from nvidia.dali.tensors import TensorListCPU  # noqa: PLC0415

    if frames:
        x = _placeholder(x)
    elif not isinstance(x, (list, TensorListCPU)):   # tensor lists go to DALI as they are
        x = np.asarray(x)
    return _prep_data_for_feed_input(x, batch_size, None)


def build_host_step(graph: str, batch_size: int, table: Any = None, lookahead: str = "auto"
                    ) -> tuple[Callable[[], Any], Callable[[], None], Any]:
    """``(step, close, counters)``: ``step()`` runs one batch of the GPU path's host work
    (``table``: default the synthetic set, tiled to 8 batches; ``lookahead``: where the
    next batches are prepared, "auto" = the GPU loader's default; older trees have a thread
    only)."""
    import torch  # noqa: PLC0415

    from posefeed.pipelines.loader import PoseLoader  # noqa: PLC0415
    from posefeed.targets import GaussianHeatmap, SimCC  # noqa: PLC0415

    if table is None:
        table = make_table(8 * batch_size)
    else:
        from posefeed.bench.data import tile_table  # noqa: PLC0415

        table = tile_table(table, 8 * batch_size)
    codecs = [SimCC(input_size=INPUT_SIZE),
              GaussianHeatmap(input_size=INPUT_SIZE, heatmap_size=(48, 64))]
    k = table.num_keypoints
    for c in codecs:
        stub_codec(c, batch_size, k)
    loader = PoseLoader(table, codecs, batch_size=batch_size, device="cpu",
                        cpu_backend="dali", num_threads=2)
    cuda = StubCuda()
    try:
        from posefeed.pipelines.slab import BatchRing  # noqa: F401,PLC0415  (the redesign)
    except ImportError:
        return _legacy_step(loader, graph, codecs, cuda, torch)
    return _step(loader, graph, codecs, cuda, torch, lookahead)


class _NullContext:
    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _ExecDynamic:
    """Stands in for the loader's built pipeline where `PoseLoader._to_torch` asks which
    executor it runs: DALI 2.4's default ``exec_dynamic`` (asserted in
    tests/test_pipeline_feed.py), whose outputs the loader takes without a copy."""

    exec_dynamic = True


class StubCuPy:
    """The CuPy calls `DenseTargets` makes, without a device: ``from_dlpack`` hands the
    (meta) torch tensor through, streams and devices are no-op contexts."""

    class cuda:  # noqa: N801 - mirrors cupy.cuda
        Device = _NullContext
        ExternalStream = _NullContext

    @staticmethod
    def from_dlpack(t):
        return t


def feed_next(source: Any, split: Any, b: int, frames: bool) -> Any:
    """The feed's part of one step: the next batch from ``source`` (the next epoch when one
    ends) through ``split``, its images and parameters converted as DALI converts what is fed;
    returns the parameters."""
    if source._next >= len(source):
        source.seek(source._epoch + 1, 0)
    images = split.images()
    params = split.params()
    feed_conversion(images, b, frames=frames)
    for p in params:
        feed_conversion(p, b)
    return params


def _step(loader, graph, codecs, cuda, torch, lookahead="auto"):
    """The host work of the GPU path after the redesign: the source's look-ahead (a worker
    process, or a thread in older trees) prepares the next batches (order, parameters, the
    GPU graph's fields) while the main thread hands out batch N (and, with a worker, reads
    or gathers its images); frames live in a `FrameSlab` (meta tensors for the device)
    gathered into a `BatchRing`; targets by `DenseTargets` after the graph."""
    import posefeed.pipelines.loader as loader_mod  # noqa: PLC0415
    from posefeed.pipelines.graph import GraphSpec, SplitSource, graph_fields, graph_params  # noqa: PLC0415
    from posefeed.pipelines.images import ImageReader  # noqa: PLC0415
    from posefeed.pipelines.slab import BatchRing, FrameSlab  # noqa: PLC0415
    from posefeed.pipelines.source import BatchSource  # noqa: PLC0415
    from posefeed.pipelines.target_stage import DenseTargets  # noqa: PLC0415

    extra = getattr(loader.graph, "extra_outputs", None)   # area / identities as fed fields
    spec = GraphSpec.choose("gpu", loader.input_size, cache=None if graph == "uncached" else
                            graph.split("_")[0], paths=loader.source.reader.paths,
                            **({} if extra is None else {"extra_outputs": extra}))
    table, b = loader.table, loader.batch_size
    reader = ImageReader(table, dense_bytes=graph == "uncached")
    if graph != "uncached":
        n = len(reader.paths)
        slab = FrameSlab(reader.sizes, 3, device="meta" if graph == "device_cache" else "cpu")
        slab.valid[:] = True
        reader = ImageReader(table, frames=slab, ring=BatchRing(slab, b, loader.ring_depth))
        assert len(slab) == n
    # the GPU graph's source spec: no ROI decode on the GPU (the CPU loader's spec has it)
    packed = getattr(spec, "packed", False)    # parameters fed packed in two arrays
    kw = {"tensor_lists": graph_params(spec)} \
        if "tensor_lists" in inspect.signature(BatchSource).parameters and not packed \
        else {}                                    # (older trees: no tensor lists)
    if extra is not None:           # the lookahead modes (GPU default: a worker process)
        kw["lookahead"] = "process" if lookahead == "auto" else lookahead
    source = BatchSource(table, dataclasses.replace(loader.spec, roi=spec.roi), reader,
                         fields=graph_fields(spec), **kw)
    packing = source.pack(graph_params(spec), tensor_lists=True) if packed else None
    split = SplitSource(source, packing.outputs if packed else graph_params(spec))
    targets = DenseTargets(codecs, loader.names[4:])
    targets._cupy = StubCuPy
    loader.targets = None
    loader.graph_names = loader.names[:4] + list(extra or ())
    loader.device = "gpu"
    # the pipelines the loader builds run DALI's exec_dynamic executor: outputs zero-copy
    loader._pipe, loader._zero_copy = _ExecDynamic(), True
    loader_mod.TensorListGPU = StubTensorListGPU
    k = table.num_keypoints
    kp_dev = torch.empty((b, 1, k, 3), device="meta")
    stubs = {"image": ((b, 3, 256, 192), np.float32), "keypoints": ((b, 1, k, 3), np.float32),
             "index": ((b, 1), np.int64), "affine": ((b, 2, 3), np.float32),
             "area": ((b, 1), np.float32), "individual_ids": ((b, 1), np.int64)}
    source.seek(0, 0)

    def step():
        feed_next(source, split, b, frames=graph != "uncached")
        outs = [StubTensorListGPU(*stubs[n]) for n in loader.graph_names]
        batch = loader._to_torch(outs)
        batch.update(targets._cuda(kp_dev))          # the codecs' launches, after the graph
        if reader.ring is not None:
            reader.ring.consumed()
        return batch

    def close():
        source.close()
        loader.close()

    step.source = source           # `measure` counts calls with the look-ahead off
    return step, close, cuda


def _legacy_step(loader, graph, codecs, cuda, torch):
    """The host work of the GPU path as the loader did it before the redesign (issue 14)."""
    from posefeed.pipelines.graph import SplitSource  # noqa: PLC0415

    source = loader.source
    if graph != "uncached":
        loader.cache = "host"
        loader.cache_channels = 3
        loader._fill_cache()
        if graph == "device_cache":   # one torch allocation per frame, on the (stub) device
            source.reader.frames = [None if f is None else
                                    torch.empty(f.shape, dtype=torch.uint8, device="meta")
                                    for f in source.reader.frames]
    loader.device = "gpu"
    source.seek(0, 0)
    split = SplitSource(source)
    encoders = [c.dali_function(reuse_buffers=False) for c in codecs]  # CuPy: no kept buffers
    names = loader.names
    b = loader.batch_size
    k = loader.table.num_keypoints

    def step():
        params = feed_next(source, split, b, frames=graph != "uncached")
        kp = params[-3]
        samples = [kp[i] for i in range(len(kp))]    # python_function: one array per sample
        targets = []
        for enc in encoders:
            per_sample = enc(samples)
            for outs in per_sample:   # DALI's python_function takes back one array per sample
                feed_conversion(outs, b)
            targets += [StubTensorListGPU((b,) + tuple(np.shape(outs[0]))) for outs in per_sample]
        outs = [StubTensorListGPU((b, 3, 256, 192)), StubTensorListGPU((b, k, 3)),
                StubTensorListGPU((b, 1), np.int64), StubTensorListGPU((b, 2, 3))] + targets
        return loader._to_torch(outs)

    def close():
        loader.close()

    assert len(names) == 4 + sum(len(c.output_names) for c in codecs)
    return step, close, cuda


# -------------------------------------------------------------------------------- measuring
def count_python_calls(fn: Callable[[], Any]) -> int:
    """Calls on this thread during ``fn()``: Python functions and builtins / C functions
    called from Python (``sys.setprofile``'s "call" and "c_call" events)."""
    n = 0

    def prof(frame, event, arg):
        nonlocal n
        if event == "call" or event == "c_call":
            n += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return n


def host_calls(step: Callable[[], Any]) -> int:
    """Calls of one batch of the whole host path on one thread: the look-ahead (batch N+1
    prepared in a thread) is switched off for the count, so its calls are counted too. The
    file reads of the uncached graph run in the reader's threads (one per file) and are
    not counted."""
    source = getattr(step, "source", None)
    if source is None:
        return count_python_calls(step)
    source.cancel()
    mode, source.lookahead = source.lookahead, False
    try:
        step()                                  # the first batch without a prepared one
        return count_python_calls(step)
    finally:
        source.lookahead = mode


def serial_times(step: Callable[[], Any], batches: int) -> list[float]:
    """CPU seconds of one batch's whole host path on one thread (the look-ahead switched
    off, as for `host_calls`), ``batches`` times. The main thread and the look-ahead thread
    both run Python under one interpreter lock, so this, not the main thread's share, bounds
    batches per second when Python is the limit: 64 / this = samples/s at batch 64."""
    source = getattr(step, "source", None)
    if source is not None:
        source.cancel()
        mode, source.lookahead = source.lookahead, False
    try:
        step()
        out = []
        for _ in range(batches):
            t0 = time.thread_time()
            step()
            out.append(time.thread_time() - t0)
        return out
    finally:
        if source is not None:
            source.lookahead = mode


def main_calls(step: Callable[[], Any]) -> int:
    """Calls of one batch on the main thread with the look-ahead on and keeping up (as while
    the GPU trains): the worker (or thread) is given time to be ahead and the batch's images
    read ahead are waited for first, so a race (the main thread reading the files itself
    because the next batch was not there yet) does not change the count."""
    source = getattr(step, "source", None)
    time.sleep(0.2)                      # the worker / thread gets ahead
    step()                               # hands out N; reads N+1's files ahead
    for pending in (getattr(source, "_reading", None), getattr(source, "_ahead", None)):
        if pending is not None:
            pending[1].exception()       # wait for it (its result stays for the next step)
    time.sleep(0.05)
    return count_python_calls(step)


def worker_cpu(step: Callable[[], Any]) -> list[float]:
    """The worker process's CPU seconds of each batch it prepared, newest last (empty
    without a worker: a thread's CPU time is the process's, not told apart here)."""
    worker = getattr(getattr(step, "source", None), "_worker", None)
    return list(getattr(worker, "cpu_s", ()))


def measure(graph: str, batch_size: int, batches: int = 30, warmup: int = 3,
            table: Any = None, lookahead: str = "auto") -> dict[str, Any]:
    """``{"host_ms_per_batch", "host_ms_per_batch_mean", "serial_host_ms_per_batch",
    "worker_ms_per_batch", "python_calls_per_batch", "main_calls_per_batch",
    "host_waits_per_batch"}`` for one graph and batch size: main-thread CPU time
    (``time.thread_time``, median and mean: with a look-ahead thread a few batches wait long
    for the interpreter lock, which the median hides; the critical path while the look-ahead
    prepares the next batches), the worker process's CPU time per batch
    (None with a thread), the whole host path of a batch on one thread (`serial_times`),
    and the calls of the whole path (`host_calls`) and of the main thread alone."""
    step, close, cuda = build_host_step(graph, batch_size, table, lookahead)
    try:
        with cuda.patch():
            for _ in range(warmup):
                step()
            calls = host_calls(step)
            for _ in range(warmup):
                step()
            n_main = main_calls(step)
            for _ in range(warmup):
                step()
            waits0 = cuda.waits
            times = []
            done = len(worker_cpu(step))
            for _ in range(batches):
                t0 = time.thread_time()
                step()
                times.append(time.thread_time() - t0)
            waits = (cuda.waits - waits0) / batches
            worker = worker_cpu(step)[done:]
            serial = serial_times(step, batches)
    finally:
        close()
    return {"host_ms_per_batch": round(1e3 * statistics.median(times), 3),
            "host_ms_per_batch_mean": round(1e3 * statistics.mean(times), 3),
            "serial_host_ms_per_batch": round(1e3 * statistics.median(serial), 3),
            "worker_ms_per_batch": round(1e3 * statistics.median(worker), 3) if worker
            else None,
            "python_calls_per_batch": int(calls),
            "main_calls_per_batch": int(n_main),
            "host_waits_per_batch": waits}


def run_all(batches: int = 30, graphs=GRAPHS, batch_sizes=BATCH_SIZES,
            lookahead: str = "auto") -> dict[str, Any]:
    return {g: {str(b): measure(g, b, batches, lookahead=lookahead) for b in batch_sizes}
            for g in graphs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per case (median)")
    ap.add_argument("--lookahead", default="auto", choices=("auto", "process", "thread"),
                    help="where the next batches are prepared (auto: the GPU loader's "
                         "default, a worker process; older trees: a thread)")
    args = ap.parse_args(argv)
    res = run_all(args.batches, lookahead=args.lookahead)
    for g, per in res.items():
        for b, r in per.items():
            worker = r.get("worker_ms_per_batch")
            print(f"{g:13s} batch {b:>3s}: {r['host_ms_per_batch']:7.3f} ms/batch main thread"
                  f" (mean {r.get('host_ms_per_batch_mean', float('nan')):.3f})"
                  f" (worker {'-' if worker is None else f'{worker:.3f}'}, all on one thread "
                  f"{r['serial_host_ms_per_batch']:7.3f}), "
                  f"{r['python_calls_per_batch']:6d} Python calls "
                  f"({r.get('main_calls_per_batch', '-')} on the main thread), "
                  f"{r['host_waits_per_batch']:.0f} host waits")
    if args.json:
        meta = {"machine": platform.node(), "cpus": os.cpu_count(),
                "load": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "stubbed": "CUDA kernels, GPU tensor lists, device frames (meta tensors; "
                           "their index_select(out=) shape-checked, not run), torch.cuda "
                           "stream calls; the pipeline (exec_dynamic: outputs zero-copy)"}
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        args.json.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
