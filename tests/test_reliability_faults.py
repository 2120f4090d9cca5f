"""Faults while iterating a PoseLoader (issue 7): an exception inside the pipeline surfaces as
a clear Python error (never a hang: each scenario runs in a subprocess under a timeout),
Ctrl-C exits cleanly, and a loader deleted mid-epoch gives its threads back."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from posefeed.pipelines import PipelineError, PoseLoader

from helpers import make_dataset

TESTS = Path(__file__).resolve().parent
TIMEOUT = 60

PRELUDE = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from pathlib import Path
import numpy as np
from posefeed.pipelines import PoseLoader, PipelineError, BadImageError
from posefeed.targets.base import Codec
from helpers import make_dataset
table = make_dataset(Path(sys.argv[1]), {{}}, n=16)
def make(codecs=(), **kw):
    args = dict(input_size=(32, 32), batch_size=2, device="cpu", num_threads=2, seed=0)
    args.update(kw)
    return PoseLoader(table, list(codecs), **args)
"""


def run_script(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_codec_raising_inside_python_function_is_a_pipeline_error(tmp_path):
    res = run_script("""
        class Broken(Codec):
            name = "broken"
            output_names = ("x",)
            def __init__(self):
                self.calls = 0
            def encode(self, keypoints):
                self.calls += 1
                if self.calls == 3:
                    raise ZeroDivisionError("codec bug in batch 3")
                return {"x": np.zeros(len(keypoints), np.float32)}
            def decode(self, *a):
                raise NotImplementedError
        loader = make([Broken()], on_bad_image="skip")     # skip must not hide a codec bug
        n = 0
        try:
            for b in loader:
                n += 1
        except PipelineError as e:
            assert isinstance(e.__cause__, RuntimeError), repr(e.__cause__)
            print("PipelineError after", n, "batches:", str(e).replace("\\n", " "))
            sys.exit(3)
        print("no error")
    """, tmp_path)
    assert res.returncode == 3, res.stdout + res.stderr
    out = res.stdout
    assert "PipelineError after" in out and "every image of those batches decodes" in out
    assert "ZeroDivisionError" in out and "codec bug in batch 3" in out


def test_external_source_failure_passes_through_and_loader_recovers(tmp_path):
    res = run_script("""
        loader = make()
        reader = loader.source.reader
        real = reader.get_many
        calls = {"n": 0}
        def flaky(ids):
            calls["n"] += 1
            if calls["n"] == 4:
                raise OSError("network filesystem went away")
            return real(ids)
        reader.get_many = flaky
        n = 0
        try:
            for b in loader:
                n += 1
        except OSError as e:
            print("OSError after", n, "batches:", e, "| state", loader.state_dict()["batch"])
        # the storage is back: the same loader continues from where it stopped
        reader.get_many = real
        rest = [b["index"] for b in loader]
        assert n + len(rest) == len(loader), (n, len(rest), len(loader))
        print("recovered", len(rest))
    """, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OSError after" in res.stdout and "network filesystem went away" in res.stdout
    assert "recovered" in res.stdout


#: bound on the interpreter's own finalization after Ctrl-C (a hang still fails). Measured
#: here: the child reaches its atexit handlers (posefeed's threads stopped) at +0.0 s, then
#: CPython's finalization runs full garbage collections over the ~230,000 objects that torch,
#: DALI and pandas create (0.75 s each at load 10 on the 2-core VM; 4-8 s in all, 0.3 s with
#: ``gc.freeze()``), which grows with the machine's load: a 60 s bound on the whole exit
#: failed 2 of 5 runs under the shared machine's load
FINALIZE_TIMEOUT = 300


def test_sigint_exits_cleanly(tmp_path):
    code = PRELUDE + textwrap.dedent("""
        import atexit, time
        # after the loader's threads were joined (threading's shutdown runs first): what
        # follows is the interpreter's finalization
        atexit.register(lambda: print("atexit", time.monotonic(), flush=True))
        loader = make()
        n = 0
        while True:                  # epochs forever, until Ctrl-C
            for b in loader:
                n += 1
                if n == 3:
                    print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=FINALIZE_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    marks = [float(ln.split()[1]) for ln in out.splitlines() if ln.startswith("atexit ")]
    assert marks, (out, err)
    # posefeed's part of the exit (the interrupt reaching the top, the pipeline and the
    # loader's threads stopped) within the usual bound; CLOCK_MONOTONIC is system-wide
    assert marks[0] - sent < TIMEOUT, (marks[0] - sent, err)
    assert proc.returncode in (-signal.SIGINT, 130, 1), (proc.returncode, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("KeyboardInterrupt"), err
    assert err.count("Traceback") == 1, err
    assert "Exception ignored" not in err and "[ERROR]" not in err, err


# -- threads ------------------------------------------------------------------------------
def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def python_threads() -> int:
    """Live Python threads, leaving out ``_DummyThread`` entries: DALI's C++ workers that ran
    Python code (python_function) get one each, and Python 3.11 never removes them."""
    return sum(1 for t in threading.enumerate() if not isinstance(t, threading._DummyThread))


def settle(count, limit: int, wait: float = 10.0) -> int:
    """``count()`` once it is <= ``limit`` (threads told to stop exit asynchronously), or
    its value after ``wait`` seconds."""
    end = time.monotonic() + wait
    while count() > limit and time.monotonic() < end:
        time.sleep(0.05)
    return count()


@pytest.mark.parametrize("cache", [None, "host"])
def test_deleting_a_loader_mid_epoch_releases_its_threads(tmp_path, cache):
    table = make_dataset(tmp_path, {}, n=16)

    def cycle():
        loader = PoseLoader(table, [], input_size=(32, 32), batch_size=2, device="cpu",
                            num_threads=2, cache=cache)
        it = iter(loader)
        next(it)
        next(it)
        busy = os_threads()
        del it, loader                      # no gc.collect(): plain reference counting
        return busy

    py_base = python_threads()
    cycle()                                 # first use starts process-wide pools (OpenCV...)
    assert settle(python_threads, py_base) <= py_base
    os_base = os_threads()
    busy = [cycle() for _ in range(6)]
    assert min(busy) > os_base              # the pipeline did run threads while iterating
    assert settle(python_threads, py_base) <= py_base
    assert settle(os_threads, os_base) <= os_base


def test_close_and_context_manager_release_and_loader_stays_usable(tmp_path):
    table = make_dataset(tmp_path, {}, n=16)
    os_base = os_threads()
    with PoseLoader(table, [], input_size=(32, 32), batch_size=2, device="cpu",
                    num_threads=2, shuffle=False) as loader:
        it = iter(loader)
        first = [next(it)["index"] for _ in range(3)]
        loader.close()
        assert loader._pipe is None
        # a fresh iteration continues from the position (the abandoned generator is stale)
        rest = [b["index"] for b in loader]
    assert len(first) + len(rest) == len(loader)
    assert settle(os_threads, os_base + 2) <= os_base + 2
    del it


def test_pipeline_error_is_exported():
    assert issubclass(PipelineError, RuntimeError)
