"""Run each benchmark runner in a fresh Python process (the timed loop inside it is
`posefeed.bench.measure`).

Parent side: `run_runner` spawns ``python -m posefeed.bench.harness --runner NAME --spec S
--out R`` in its own session (so a hung loader and its workers can be killed as one group),
with ``OMP_NUM_THREADS`` & co. set to the thread budget, and reads the result JSON back.

Child side (``__main__``): pin to ``threads`` CPUs, run ``runners.RUNNERS[NAME](spec)``, write
its result (or the error) as JSON, and leave without interpreter teardown.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from posefeed.bench.proc import pin_cpus
from posefeed.bench.runners import RUNNERS


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


# -- child entry point -------------------------------------------------------------------
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
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    _child_main()
