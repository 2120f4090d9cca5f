"""The feed's worker process (`posefeed.pipelines.feed_process`): the same fields as the
in-process feed (a pure function of seed, epoch, batch, rank), across epoch ends, seeks and
batch sizes; what it imports; and that a crash, an error, a stall, ``close()`` and garbage
collection each end cleanly (no hang, no process or shared memory left). Each test starts
its own worker, so they are few (a start costs ~0.2-0.5 s)."""
from __future__ import annotations

import contextlib
import gc
import os
import resource
import select
import signal
import time

import numpy as np
import pytest
import torch
from nvidia.dali.tensors import TensorListCPU

from posefeed.pipelines import AugmentConfig, PipelineError, feed_process
from posefeed.pipelines.graph import GraphSpec, graph_fields, graph_params
from posefeed.pipelines.images import ImageReader
from posefeed.pipelines.source import FIELDS, BatchSource, SourceSpec
from helpers import batches, make_blob_table, make_dataset, make_loader

INPUT = (48, 64)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("feedproc"), n_images=12, k=4)


@pytest.fixture(scope="module")
def frames_table(tmp_path_factory):
    return make_blob_table(tmp_path_factory.mktemp("feedproc_frames"), n_images=26, k=4,
                           instances=(1, 3, 2))


def spec(**kw):
    args = dict(mode="topdown", input_size=INPUT, batch_size=4,
                schedule=[(0, AugmentConfig()), (1, AugmentConfig.deeplabcut_default())],
                seed=3, shuffle=True, drop_last=True, rank=0, world=1, on_bad_image="raise")
    args.update(kw)
    return SourceSpec(**args)


def plain(feed):
    """A batch's fields as owned NumPy arrays (the worker's slots are reused)."""
    out = {}
    for k, v in feed.items():
        if isinstance(v, TensorListCPU):
            v = np.asarray(v.as_tensor())
        out[k] = [np.array(i) for i in v] if isinstance(v, list) else np.array(v)
    return out


def same(a, b) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], list):
            assert len(a[k]) == len(b[k]) and all(np.array_equal(x, y)
                                                  for x, y in zip(a[k], b[k])), k
        else:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


@contextlib.contextmanager
def worker_and_reference(table, s=None):
    """A source with the worker process and the in-process one (``lookahead="off"``) of
    the same spec (default `spec()`), both closed after."""
    s = spec() if s is None else s
    src = BatchSource(table, s, ImageReader(table), lookahead="process")
    ref = BatchSource(table, s, ImageReader(table), lookahead="off")
    try:
        yield src, ref
    finally:
        src.close()
        ref.close()


def same_batch(src, ref, epoch: int, batch: int = 0) -> None:
    """Both sources seeked to ``(epoch, batch)`` give the same next batch."""
    src.seek(epoch, batch)
    ref.seek(epoch, batch)
    same(plain(src()), plain(ref()))


def stream(src, steps):
    """The batches of ``steps``: ``("seek", epoch, batch)`` or ``("next", count)`` (the
    next epoch after an epoch's end, as the loader does)."""
    out = []
    for step in steps:
        if step[0] == "seek":
            src.seek(step[1], step[2])
            continue
        for _ in range(step[1]):
            try:
                out.append((src._epoch, src._next, plain(src())))
            except StopIteration:
                src.seek(src._epoch + 1, 0)
                out.append((src._epoch, src._next, plain(src())))
    return out


@pytest.mark.parametrize("batch_size,seed,drop_last,mode,tensor_lists", [
    (1, 0, True, "topdown", False),
    (7, 5, False, "frame", False),       # a short last batch; padded instance rows, identities
    (64, 11, False, "topdown", True),    # a short last batch
    (256, 2, True, "topdown", True),
])
def test_the_worker_gives_the_fields_of_the_in_process_feed(table, frames_table, batch_size,
                                                             seed, drop_last, mode,
                                                             tensor_lists):
    t = frames_table if mode == "frame" else table          # 26 frames: 4 batches of 7
    if mode == "topdown":                                   # at least 3 batches per epoch
        t = t.subset(np.tile(np.arange(len(t)), -(-(3 * batch_size + 5) // len(t))))
    s = spec(batch_size=batch_size, seed=seed, drop_last=drop_last, mode=mode)
    gpu = GraphSpec.choose("gpu", INPUT, paths=["a.jpg"])
    lists = graph_params(gpu) if tensor_lists else ()
    fields = FIELDS if not tensor_lists else graph_fields(gpu) + ("area",)
    n = len(BatchSource(t, s, ImageReader(t), fields=fields))
    steps = [("seek", 0, 0), ("next", n + 2),      # across the end of epoch 0
             ("seek", 2, 1), ("next", 2),          # a resume mid-epoch
             ("seek", 1, n - 1), ("next", 2)]      # the last batch, then epoch 2's first
    ref = BatchSource(t, s, ImageReader(t), fields=fields, lookahead="off",
                      tensor_lists=lists)
    proc = BatchSource(t, s, ImageReader(t), fields=fields, lookahead="process",
                       tensor_lists=lists)
    try:
        want, got = stream(ref, steps), stream(proc, steps)
        assert proc._worker is not None and proc._worker.alive
        assert proc._worker.child_modules == []        # numpy and the parameter code only
    finally:
        proc.close()
        ref.close()
    assert [k[:2] for k in got] == [k[:2] for k in want]
    assert n >= 3 and (0, n - 1) in [k[:2] for k in got] and (1, 0) in [k[:2] for k in got]
    samples = len(t) if mode == "topdown" else len(t.images)
    for (_, i, a), (_, _, b) in zip(want, got):
        same(a, b)
        short = samples % batch_size if not drop_last and i == n - 1 else 0
        assert len(a["index"]) == (short or batch_size)
        if mode == "frame":
            assert (a["index"] == -1).any() and (a["individual_ids"] == -1).any()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_is_the_parents_to_handle_not_the_workers(table):
    """A terminal's Ctrl-C reaches the whole process group: the worker ignores SIGINT, so a
    training loop that catches KeyboardInterrupt (to save a checkpoint) keeps its feed."""
    with worker_and_reference(table) as (src, ref):
        same_batch(src, ref, 0)
        pid = src._worker.pid
        os.kill(pid, signal.SIGINT)
        time.sleep(0.3)
        assert src._worker._proc.poll() is None
        same_batch(src, ref, 0, 1)
        assert src._worker.pid == pid


def test_close_gc_crash_error_and_stall_end_cleanly(table):
    shm = set(os.listdir("/dev/shm"))
    s = spec(schedule=[(0, AugmentConfig()), (1, "not a config")])   # epoch 1 fails
    src = BatchSource(table, s, ImageReader(table), lookahead="process")
    ref = BatchSource(table, s, ImageReader(table), lookahead="off")
    same_batch(src, ref, 0)
    pid = src._worker.pid
    # a crash (the child killed) is a PipelineError naming it, never a hang
    os.kill(pid, signal.SIGKILL)
    src._worker._proc.wait(10)
    src.seek(0, 2)                      # (batch 1 may be in the socket already)
    with pytest.raises(PipelineError, match="SIGKILL"):
        src()
    assert not _running(pid)
    # the next iteration starts a new worker and continues with the same numbers
    same_batch(src, ref, 0, 1)
    assert src._worker.pid != pid
    # an exception in the child's computation comes back with its traceback
    src.seek(1, 0)
    with pytest.raises(PipelineError, match="(?s)epoch 1 batch 0.*AttributeError"):
        src()
    same_batch(src, ref, 0, 2)          # the same worker serves the next stream
    # a stalled child: a timeout, not a hang; it is stopped, and the next iteration starts a
    # fresh one with the same numbers
    worker = src._worker
    worker.timeout = 1.0
    stalled = worker.pid
    os.kill(stalled, signal.SIGSTOP)
    src.seek(0, 0)
    with pytest.raises(PipelineError, match="sent nothing in 1 s.*it was stopped"):
        src()
    assert worker.closed and not _running(stalled)
    same_batch(src, ref, 0, 2)
    worker = src._worker
    assert worker.pid != stalled
    # close() stops it
    pid = worker.pid
    src.close()
    assert worker._proc.returncode is not None and not _running(pid)
    # garbage collection stops it too
    src = BatchSource(table, spec(), ImageReader(table), lookahead="process")
    src.seek(0)
    src()
    proc = src._worker._proc
    del src
    gc.collect()
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.returncode is not None
    ref.close()
    assert set(os.listdir("/dev/shm")) <= shm          # nothing named, nothing left


def test_a_forked_child_that_exits_leaves_the_worker_to_the_parent(table):
    """A child of ``os.fork()`` (a DataLoader worker, a helper) inherits the worker's
    finalizer, which runs at its exit (``weakref.finalize`` is an atexit hook): it must not
    stop the parent's worker. The child runs the finalizer as its exit would, then leaves."""
    with worker_and_reference(table) as (src, ref):
        same_batch(src, ref, 0)
        worker = src._worker
        pid = os.fork()
        if pid == 0:                          # the child: never back into pytest
            code = 1
            try:
                worker._finalizer()
                gc.collect()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.3)                       # (a STOP would have ended the worker by now)
        assert worker._proc.poll() is None and worker.alive
        for _ in range(len(src) - 1):         # the rest of the epoch, the same worker
            same(plain(src()), plain(ref()))
        assert src._worker is worker


def _decoy(where, body: str) -> str:
    """A package named posefeed in ``where`` (its ``__init__`` runs ``body``)."""
    pkg = where / "posefeed"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(body)
    return str(pkg / "__init__.py")


def test_the_worker_imports_this_posefeed_after_a_chdir(table, tmp_path, monkeypatch):
    """``''`` on sys.path (``python -c``, a notebook) is the working directory: after
    ``os.chdir`` to a folder holding another ``posefeed`` the worker must still import this
    process's copy (here the other one raises on import), and it says which it imported."""
    _decoy(tmp_path, "raise ImportError('the decoy posefeed was imported')\n")
    monkeypatch.setattr("sys.path", [""] + [p for p in __import__("sys").path if p != ""])
    monkeypatch.chdir(tmp_path)
    with worker_and_reference(table) as (src, ref):
        same_batch(src, ref, 0)
        import posefeed
        assert src._worker.child_posefeed == os.path.abspath(posefeed.__file__)


def test_a_worker_that_imports_another_posefeed_or_none_is_a_clear_error(table, tmp_path,
                                                                       monkeypatch):
    """Another copy first on the child's path (an install the root-first path cannot beat,
    e.g. an import hook, stood in for by the boot script): an error naming both files; a
    posefeed that fails to import in the child: that error, not "iterate again"."""
    import posefeed
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good = _decoy(tmp_path / "a", "\n")             # imports fine: another copy
    _decoy(tmp_path / "b", "raise ImportError('no such luck')\n")
    boot = feed_process._BOOT
    line = "sys.path[:] = pickle.loads(sock.recv(1 << 20))\n"
    assert line in boot
    for where, match in [(tmp_path / "a", f"(?s)imported posefeed from '{good}'.*this process "
                                         f"from '{os.path.abspath(posefeed.__file__)}'"),
                         (tmp_path / "b", "(?s)cannot import posefeed in the feed worker.*"
                                          "ImportError: no such luck")]:
        monkeypatch.setattr(feed_process, "_BOOT", boot.replace(
            line, line + f"sys.path.insert(0, {str(where)!r})\n"))
        src = BatchSource(table, spec(), ImageReader(table), lookahead="process")
        src.seek(0)
        with pytest.raises(PipelineError, match=match) as e:
            src()
        assert "iterate again" not in str(e.value)
        src.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_failed_shared_file_leaks_no_descriptor(table, monkeypatch):
    """The second shared file failing (memory, limits) closes the first one's descriptor."""
    real, calls = feed_process._shared, []

    def second_fails(nbytes, name):
        calls.append(name)
        if len(calls) == 2:
            raise OSError(12, "Cannot allocate memory")
        return real(nbytes, name)

    monkeypatch.setattr(feed_process, "_shared", second_fails)
    src = BatchSource(table, spec(), ImageReader(table), lookahead="process")
    before = _open_fds()
    with pytest.raises(OSError, match="allocate"):
        src.worker()
    assert len(calls) == 2 and _open_fds() == before
    src.close()


def test_the_worker_waits_on_descriptors_above_1024(table):
    """A training process with many files open (DataLoader workers, logs, sockets) gets
    descriptors above FD_SETSIZE = 1024, which ``select.select`` refuses (ValueError): both
    waits (a message in, room to send) go through ``poll``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1200")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    filler = []
    try:
        while len(filler) < 1100 and (not filler or filler[-1] < 1030):
            filler.append(os.open(os.devnull, os.O_RDONLY))
        with worker_and_reference(table) as (src, ref):
            same_batch(src, ref, 0)
            worker = src._worker
            assert worker._sock.fileno() > 1024
            worker._wait("testing", time.monotonic() + 5, select.POLLOUT)   # room to send
            same_batch(src, ref, 0, 1)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_loader_with_a_worker_gives_the_same_batches(tmp_path):
    """A loader on the DALI-ops graph (the GPU graph's fields, tensor lists) with the worker
    and with a thread: the same batches over two epochs, also with a bad file replaced
    (on_bad_image="skip"), which the loader's process prepares itself."""
    table = make_dataset(tmp_path, {3: "zero"}, n=12)

    def run(lookahead):
        with make_loader(table, input_size=INPUT, seed=4, cpu_backend="dali",
                         on_bad_image="skip", lookahead=lookahead) as ld:
            out = [b for _ in range(2) for b in batches(ld)]
            return out, ld.skipped

    (a, skipped_a), (b, skipped_b) = run("process"), run("thread")
    assert skipped_a == skipped_b > 0 and len(a) == len(b) == 6
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch_equal(x[k], y[k]), k
    with pytest.raises(ValueError, match="lookahead must be"):
        make_loader(table, input_size=INPUT, seed=4, lookahead="fork")


def torch_equal(a, b) -> bool:
    """Equal values (NaN equal to NaN: ``area`` of rows without one)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
    return torch.equal(a, b)
