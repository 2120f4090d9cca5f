"""Soak test: does a long PoseLoader run hold its memory and threads steady?

10,000 loader iterations (batch 8, topdown 64x64, RTMPose stage-1 recipe, SimCC targets) on
the synthetic set, uncached and with ``cache="host"``, each in a fresh process. The resident
set size (VmRSS) and the OS thread count are sampled every 500 iterations; the report gives
the RSS growth from iteration 1,000 (warm: pipelines built, pools started, cache filled) to
10,000, the goal being < 5 %, and a least-squares slope over the same span. Epochs roll over
as a training loop would (``set_epoch`` each epoch), so pipeline reuse across epochs is
covered too. Writes benchmarks/results/soak-cpu.md.

    .venv/bin/python benchmarks/soak_loader.py                 # both variants, 10k iterations
    .venv/bin/python benchmarks/soak_loader.py --iterations 2000 --variant uncached
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "soak-cpu.md"
VARIANTS = {"uncached": None, "cache='host'": "host"}
GOAL = 0.05


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def worker(variant: str, iterations: int, every: int, threads: int, frames: int) -> None:
    """Run one variant in this process; print one JSON line with the samples."""
    from posefeed.datasets import resolve_dataset
    from posefeed.pipelines import PoseLoader
    from posefeed.targets.simcc import SimCC

    table = resolve_dataset("synthetic", n_frames=frames)
    loader = PoseLoader(table, [SimCC(input_size=(64, 64))], input_size=(64, 64), batch_size=8,
                        device="cpu", num_threads=threads, seed=0, cache=VARIANTS[variant])
    samples = [{"iteration": 0, "rss_mib": rss_mib(), "threads": os_threads(), "seconds": 0.0}]
    start = time.perf_counter()
    done, epoch, checksum = 0, 0, 0.0
    while done < iterations:
        loader.set_epoch(epoch)
        for batch in loader:
            checksum += float(batch["keypoints"][0, 0, 0, 0])   # touch the batch
            done += 1
            if done % every == 0:
                samples.append({"iteration": done, "rss_mib": rss_mib(), "threads": os_threads(),
                                "seconds": time.perf_counter() - start})
            if done >= iterations:
                break
        epoch += 1
    loader.close()
    print(json.dumps({"variant": variant, "samples": samples, "epochs": epoch,
                      "batches_per_epoch": len(loader), "rows": len(table),
                      "images": len(table.images), "skipped": loader.skipped}))


def growth(samples: list[dict], first: int, last: int) -> tuple[float, float, float, float]:
    """``(rss at first, rss at last, relative growth, slope MiB per 1k iterations)``."""
    span = [s for s in samples if first <= s["iteration"] <= last]
    a = next(s["rss_mib"] for s in span if s["iteration"] == first)
    b = span[-1]["rss_mib"]
    n = len(span)
    mx = sum(s["iteration"] for s in span) / n
    my = sum(s["rss_mib"] for s in span) / n
    sxx = sum((s["iteration"] - mx) ** 2 for s in span) or 1.0
    slope = sum((s["iteration"] - mx) * (s["rss_mib"] - my) for s in span) / sxx
    return a, b, (b - a) / a, slope * 1000


def report(results: list[dict], iterations: int, threads: int, frames: int) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    every = results[0]["samples"][2]["iteration"] - results[0]["samples"][1]["iteration"]
    # the warm reference point: the first sample at or after iteration 1,000
    first = min((x["iteration"] for x in results[0]["samples"] if x["iteration"] >= 1000),
                default=results[0]["samples"][-1]["iteration"])
    lines = [
        "# PoseLoader soak test (CPU)",
        "",
        f"{iterations:,} iterations per variant, batch 8, topdown 64x64, RTMPose stage-1 recipe, "
        f"SimCC targets, {threads} DALI threads, synthetic set ({frames} frames 640x480 JPEG, "
        f"{results[0]['rows']} instances, {results[0]['batches_per_epoch']} batches per epoch: "
        f"{results[0]['epochs']} epochs). Each variant in a fresh process; RSS (VmRSS) and OS "
        f"threads sampled every {every} iterations. Goal: RSS growth from iteration {first:,} to "
        f"{iterations:,} below {GOAL:.0%}.",
        f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} usable CPUs, "
        f"{platform.platform()}, Python {platform.python_version()}; load average at the end "
        f"{load:.1f} (CPUs shared with other jobs). {now}. Command: "
        f"`.venv/bin/python benchmarks/soak_loader.py`.",
        "",
        f"| variant | RSS @0 (MiB) | RSS @{first:,} | RSS @{iterations:,} | growth {first:,} -> "
        f"{iterations:,} | slope (MiB / 1k it) | OS threads @{first:,} / @{iterations:,} | "
        "it/s | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        s = r["samples"]
        a, b, g, slope = growth(s, first, iterations)
        t_first = next(x["threads"] for x in s if x["iteration"] == first)
        rate = s[-1]["iteration"] / s[-1]["seconds"]
        lines.append(f"| {r['variant']} | {s[0]['rss_mib']:.0f} | {a:.1f} | {b:.1f} | "
                     f"{g:+.2%} | {slope:+.2f} | {t_first} / {s[-1]['threads']} | {rate:.0f} | "
                     f"{'met' if g < GOAL else 'MISSED'} |")
    lines += ["", f"## Samples (RSS MiB, every {every} iterations)", ""]
    for r in results:
        vals = ", ".join(f"{x['rss_mib']:.1f}" for x in r["samples"][1:])
        lines.append(f"- {r['variant']}: {vals}")
    lines += ["", "RSS @0 is after building the loader (cache filled lazily, on the first "
              "iteration). Growth is measured from a warm point so that one-off allocations "
              "(DALI's buffers, thread pools, the decoded-frame cache) do not count.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--variant", choices=list(VARIANTS), action="append")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.iterations, args.every, args.threads, args.frames)
        return
    results = []
    for variant in args.variant or list(VARIANTS):
        cmd = [sys.executable, __file__, "--worker", variant, "--iterations",
               str(args.iterations), "--every", str(args.every), "--threads", str(args.threads),
               "--frames", str(args.frames)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(res.stdout.strip().splitlines()[-1]))
        s = results[-1]["samples"]
        print(f"{variant}: {s[-1]['iteration']} iterations in {s[-1]['seconds']:.0f} s, "
              f"RSS {s[1]['rss_mib']:.1f} -> {s[-1]['rss_mib']:.1f} MiB", flush=True)
    text = report(results, args.iterations, args.threads, args.frames)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
