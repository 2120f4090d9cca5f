"""Run each benchmark runner in a fresh Python process and measure it from the inside.

Parent side: `run_runner` spawns ``python -m posefeed.bench.harness --runner NAME --spec S
--out R`` in its own session (so a hung loader and its workers can be killed as one group),
with ``OMP_NUM_THREADS`` & co. set to the thread budget, and reads the result JSON back.

Child side: `measure` iterates a batch source: ``warmup`` batches untimed, then at least
``iters`` batches (or, when ``iters`` is None, until ``seconds`` have passed), and reports

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

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --------------------------------------------------------------------------------------
# /proc process-tree accounting (Linux); degrades to getrusage elsewhere
# --------------------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    s = _read(f"/proc/{pid}/stat")
    if s is None:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    rest = s[s.rfind(")") + 2:].split()
    return rest  # rest[0] is field 3 (state); field n is rest[n - 3]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    tasks = _read_dir(f"/proc/{pid}/task")
    ok = False
    for tid in tasks:
        s = _read(f"/proc/{pid}/task/{tid}/children")
        if s is not None:
            ok = True
            kids.extend(int(x) for x in s.split())
    if ok:
        return kids
    # kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent pid
    for name in _read_dir("/proc"):
        if name.isdigit():
            f = _stat_fields(int(name))
            if f is not None and int(f[1]) == pid:
                kids.append(int(name))
    return kids


def _read_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def process_tree(pid: int | None = None) -> list[int]:
    """``pid`` (default: this process) and all its live descendants."""
    root = os.getpid() if pid is None else pid
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of the tree: each live process's own time plus the time of
    its children that it has already reaped (``cutime``/``cstime``)."""
    total = 0
    found = False
    for p in process_tree(pid):
        f = _stat_fields(p)
        if f is None:
            continue
        found = True
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    if not found:  # no /proc: this process and its reaped children only
        a = resource.getrusage(resource.RUSAGE_SELF)
        b = resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
    return total / _TICK


def thread_cpu_seconds(pid: int | None = None) -> dict[str, float]:
    """CPU seconds per thread of ``pid`` (default: this process), keyed ``"tid name"``."""
    pid = os.getpid() if pid is None else pid
    out: dict[str, float] = {}
    for tid in _read_dir(f"/proc/{pid}/task"):
        s = _read(f"/proc/{pid}/task/{tid}/stat")
        if s is None:
            continue
        name = s[s.find("(") + 1:s.rfind(")")]
        f = s[s.rfind(")") + 2:].split()
        out[f"{tid} {name}"] = (int(f[11]) + int(f[12])) / _TICK
    return out


def cpu_breakdown(before: dict[str, float], after: dict[str, float], wall: float,
                  top: int = 10) -> dict[str, float]:
    """Cores used per thread name over ``wall`` seconds (threads with the same name summed,
    the busiest ``top``): which threads of a loader do the work."""
    by_name: dict[str, float] = {}
    for key, c in after.items():
        name = key.split(" ", 1)[1] if " " in key else key
        by_name[name] = by_name.get(name, 0.0) + c - before.get(key, 0.0)
    busiest = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return {k: round(v / wall, 3) for k, v in busiest if wall > 0 and v > 0}


def tree_memory_mb(pid: int | None = None, pss: bool = True) -> tuple[float, float | None]:
    """``(sum of RSS, sum of PSS)`` in MiB over the tree. RSS from ``statm`` (cheap); PSS
    (shared pages split between the processes that map them) from ``smaps_rollup``, which
    costs more to read: ``pss=False`` skips it (None)."""
    rss = 0.0
    pss_sum: float | None = 0.0 if pss else None
    for p in process_tree(pid):
        statm = _read(f"/proc/{p}/statm")
        if statm is None:
            continue
        r = int(statm.split()[1]) * _PAGE / 2**20
        rss += r
        if pss_sum is not None:
            s = None
            roll = _read(f"/proc/{p}/smaps_rollup")
            if roll is not None:
                for line in roll.splitlines():
                    if line.startswith("Pss:"):
                        s = float(line.split()[1]) / 1024
                        break
            pss_sum += s if s is not None else r
    return rss, pss_sum


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
                import torch

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


# --------------------------------------------------------------------------------------
# the timed loop (child side)
# --------------------------------------------------------------------------------------
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


def pin_cpus(threads: int) -> list[int] | None:
    """Restrict this process (and what it starts) to ``threads`` CPUs of its current affinity
    set; returns the CPUs, or None where affinity is not available or not narrower."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if threads <= 0 or threads >= len(cpus):
        return None
    chosen = cpus[:threads]
    os.sched_setaffinity(0, chosen)
    return chosen


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------
def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(max(int(threads), 1))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    return env


def run_runner(name: str, spec: dict[str, Any], *, timeout: float | None = None,
               python: str | None = None) -> dict[str, Any]:
    """Run runner ``name`` with ``spec`` in a fresh process; its result dict, or
    ``{"error": ...}`` when it failed, timed out or produced nothing."""
    timeout = timeout if timeout is not None else _default_timeout(spec)
    with tempfile.TemporaryDirectory(prefix="posefeed-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        out_path = Path(tmp) / "result.json"
        log_path = Path(tmp) / "stderr.log"
        spec_path.write_text(json.dumps(spec))
        cmd = [python or sys.executable, "-m", "posefeed.bench.harness", "--runner", name,
               "--spec", str(spec_path), "--out", str(out_path)]
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=thread_env(int(spec.get("threads", 1))),
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                rc = proc.wait()
            finally:
                # workers a crashed runner left behind share its session / process group
                _kill_group(proc, quiet=True)
        elapsed = time.perf_counter() - t0
        tail = log_path.read_text(errors="replace")[-4000:]
        result: dict[str, Any]
        if out_path.exists():
            try:
                result = json.loads(out_path.read_text())
            except json.JSONDecodeError as e:
                result = {"error": f"unreadable result: {e}"}
        else:
            result = {"error": f"runner exited with code {rc} and no result"}
        if timed_out:
            result = {"error": f"timed out after {timeout:.0f} s", **{k: v for k, v in result.items()
                                                                       if k != "error"}}
        if "error" in result and result["error"]:
            result["log_tail"] = tail
        result["process_s"] = elapsed
        result["runner"] = name
        return result


def _default_timeout(spec: dict[str, Any]) -> float:
    seconds = float(spec.get("seconds") or 10.0)
    iters = spec.get("iters")
    if iters:
        return 300.0 + 5.0 * float(iters)
    return 240.0 + 4.0 * seconds


def _kill_group(proc: subprocess.Popen, quiet: bool = False) -> None:
    """End the runner's process group (the runner and the workers it started); nothing else.
    The runner was started with ``start_new_session``, so the group id is its pid, and the
    group outlives the runner while any of its workers do."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            return
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError, OSError):
                return
            time.sleep(0.05)


# --------------------------------------------------------------------------------------
# child entry point
# --------------------------------------------------------------------------------------
def _child_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="posefeed.bench.harness")
    ap.add_argument("--runner", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    started = time.perf_counter()
    spec = json.loads(Path(a.spec).read_text())
    threads = int(spec.get("threads", 1))
    pinned = pin_cpus(threads) if spec.get("pin", True) else None
    try:
        from posefeed.bench.runners import RUNNERS

        fn = RUNNERS[a.runner]
        result = fn(spec, started=started)
        result.setdefault("error", None)
    except Exception as e:  # report, do not crash the whole bench
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    result["pinned_cpus"] = pinned
    result["threads"] = threads
    Path(a.out).write_text(json.dumps(result, default=_json_default))
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: DALI / DataLoader workers can make a normal exit slow or hang
    os._exit(0)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    _child_main()
