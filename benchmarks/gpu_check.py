"""``make gpu-check``: everything a GPU machine should confirm about the GPU path, in one
command, well under 10 minutes; writes ``docs/gpu-check.json`` and ``docs/gpu-check.md``.

Steps (each with its own time limit; a step that cannot run here is recorded as skipped,
with the reason, and the command still succeeds):

1. ``pytest -m gpu`` (the GPU tests; they skip themselves without CUDA / CuPy);
2. ``posefeed bench --device gpu --train`` on the synthetic JPEG set and on the openfield
   PNG project, uncached and with the host and device caches (``--cache``);
3. the codec benchmarks on the GPU (``posefeed.bench.targets.run_targets``: fused kernels vs
   the vectorised CuPy path);
4. the host cost of the GPU path (benchmarks/bench_host_cost.py; runs on any machine).

Run: ``python benchmarks/gpu_check.py [--out docs] [--seconds 4] [--dry-run]``
(``--dry-run`` prints the plan). Exit status 1 when a step that ran failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPENFIELD = Path("/work/shared/datasets/openfield-Pranav-2018-10-30")


def gpu_status() -> tuple[bool, str]:
    """(usable, why not / which device): CUDA through torch and CuPy for the targets."""
    try:
        import torch  # noqa: PLC0415
    except Exception as e:  # noqa: BLE001
        return False, f"torch does not import ({e})"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False (no CUDA device or a CPU-only torch)"
    try:
        import cupy  # noqa: F401,PLC0415
    except Exception as e:  # noqa: BLE001
        return False, f"CUDA is there but CuPy does not import ({e}); pip install 'posefeed[gpu]'"
    return True, torch.cuda.get_device_name(0)


def run(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run a step; its status, seconds, and the tail of its output."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})
        status = "ok" if p.returncode == 0 else f"failed (exit {p.returncode})"
        out = (p.stdout + p.stderr)[-3000:]
    except subprocess.TimeoutExpired as e:
        status = f"failed (timed out after {timeout:.0f} s)"
        out = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
               else (e.stdout or ""))[-3000:]
    last = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return {"status": status, "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(cmd), "output_tail": out,
            "summary": last[-1][:200] if last else ""}


def plan(args, gpu: bool, why: str, out: Path) -> list[dict]:
    py = sys.executable
    posefeed = [py, "-m", "posefeed"]
    steps = [{"name": "gpu tests", "cmd": [py, "-m", "pytest", "-q", "-m", "gpu", "-p",
                                           "no:cacheprovider", "tests"], "timeout": 240,
              "needs_gpu": False}]
    bench = ["bench", "--device", "gpu", "--train", "--cache", "--no-stages",
             "--seconds", str(args.seconds), "--codec", "simcc"]
    steps.append({"name": "posefeed bench --device gpu --train (synthetic JPEG)",
                  "cmd": posefeed + bench + ["synthetic", "--json", str(out / "gpu-bench-jpeg.json")],
                  "timeout": 150, "needs_gpu": True})
    png = {"name": "posefeed bench --device gpu --train (openfield PNG)",
           "cmd": posefeed + bench + [str(OPENFIELD), "--json", str(out / "gpu-bench-png.json")],
           "timeout": 150, "needs_gpu": True}
    if not OPENFIELD.exists():
        png["skip"] = f"{OPENFIELD} is not on this machine"
    steps.append(png)
    steps.append({"name": "codec benchmarks (GPU kernels vs CuPy)",
                  "cmd": [py, "-c", "import json,sys; from posefeed.bench.targets import "
                          "run_targets; json.dump(run_targets(device=\"gpu\"), sys.stdout, default=str)"],
                  "timeout": 90, "needs_gpu": True})
    steps.append({"name": "host cost of the GPU path (CUDA stubbed)",
                  "cmd": [py, "benchmarks/bench_host_cost.py", "--batches", "15",
                          "--json", str(out / "gpu-check-host-cost.json")],
                  "timeout": 150, "needs_gpu": False})
    for s in steps:
        if s["needs_gpu"] and not gpu:
            s.setdefault("skip", f"needs a GPU: {why}")
    return steps


def markdown(report: dict) -> str:
    lines = [f"# make gpu-check ({report['date']})", "",
             f"Machine: {report['machine']}; GPU: {report['gpu']}; load {report['load']}.", "",
             "| step | status | seconds |", "|---|---|---|"]
    for s in report["steps"]:
        status = s["status"] if "skip" not in s else f"skipped: {s['skip']}"
        if s.get("summary") and "skip" not in s:   # e.g. pytest's "48 skipped, 640 deselected"
            status += f" ({s['summary'].replace('|', '/')})"
        lines.append(f"| {s['name']} | {status} | {s.get('seconds', '-')} |")
    lines += ["", "Outputs: JSON next to this file (gpu-check.json, gpu-bench-*.json, "
              "gpu-check-host-cost.json)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per bench runner")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    gpu, why = gpu_status()
    args.out.mkdir(parents=True, exist_ok=True)
    steps = plan(args, gpu, why, args.out)
    print(f"gpu-check: GPU {'found: ' + why if gpu else 'not usable: ' + why}", flush=True)
    failed = False
    for s in steps:
        if "skip" in s:
            print(f"  SKIPPED {s['name']}: {s['skip']}", flush=True)
            s["status"] = "skipped"
            continue
        if args.dry_run:
            print(f"  would run {s['name']}: {' '.join(s['cmd'])}", flush=True)
            s["status"] = "planned"
            continue
        print(f"  running {s['name']} (limit {s['timeout']} s) ...", flush=True)
        s.update(run(s["cmd"], s["timeout"]))
        print(f"    {s['status']} in {s['seconds']} s: {s.get('summary', '')}", flush=True)
        failed |= s["status"].startswith("failed")
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
              "gpu": why if gpu else f"none ({why})", "load": [round(x, 2) for x in os.getloadavg()],
              "steps": [{k: v for k, v in s.items() if k not in ("cmd",)} for s in steps]}
    if not args.dry_run:
        (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / "gpu-check.md").write_text(markdown(report))
        print(f"gpu-check: wrote {args.out / 'gpu-check.md'} and gpu-check.json", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
