"""CPU throughput of PoseLoader formulations against the torch DataLoader + OpenCV reference.

Topdown 256x192, RTMPose stage-1 recipe, SimCC targets, batch 64, equal cores (``--threads``
DALI threads for posefeed, ``--threads`` DataLoader workers for the reference). Each run is a
fresh process (no shared thread pools); runs are interleaved ``--repeat`` times and
the median kept. Prints a table and writes benchmarks/results/loader-cpu.md.

    .venv/bin/python benchmarks/bench_loader.py --threads 2 --seconds 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "loader-cpu.md"

VARIANTS = {
    "posefeed default: OpenCV stage, JPEG ROI / PNG cv2 decode": dict(cpu_backend="opencv"),
    "posefeed OpenCV stage, DALI full decode": dict(cpu_backend="opencv", roi_decode=False,
                                                    opencv_png=False),
    "posefeed DALI ops + ROI decode": dict(cpu_backend="dali", roi_decode=True),
    "posefeed DALI ops, full decode": dict(cpu_backend="dali", roi_decode=False),
    "posefeed OpenCV stage, cache='host'": dict(cpu_backend="opencv", cache="host"),
    "reference: torch DataLoader + OpenCV": None,
}


NOTES = """## What the variants are

- **default**: the CPU graph `PoseLoader(device="cpu")` builds: JPEG decoded by DALI with ROI
  decode (`fn.decoders.image_slice` to the bounding box of the pixels the crop reads), PNG
  decoded by `cv2.imdecode` inside the OpenCV stage; then one batch `python_function` running
  OpenCV in a thread pool: `warpAffine` (bilinear, black border) -> YOLOX HSV (LUT) -> blur ->
  median blur -> dropout hole; then DALI `crop_mirror_normalize` and the SimCC codec.
- **OpenCV stage, DALI full decode**: the same without ROI decode and with DALI's PNG decoder.
- **DALI ops**: the GPU graph's ops on the CPU (`warp_affine` with `fill_value=0`, `hsv`,
  `filter`, `erase`), `cpu_backend="dali"`.
- **cache='host'**: decoded frames kept in RAM (as RGBA: OpenCV's 4-channel warp is 2x faster)
  after the first pass (no decode at all). With the cache, and for PNG decoded in the OpenCV
  stage, the source submits each batch's OpenCV work to the pool when DALI asks for the batch
  ("crop ahead"), so the pool runs beside DALI's normalisation and codecs.
- **reference**: `posefeed.bench.reference` - torch `DataLoader` with worker processes, OpenCV
  decode + warpAffine + the same recipe per instance, NumPy SimCC.

## Why the OpenCV stage (measured on this 2-core box, batch 64, 640x425 JPEG -> 256x192)

| op (2 threads) | img/s |
|---|---:|
| DALI `warp_affine`, `fill_value=0` (constant border) | ~500 |
| DALI `warp_affine`, clamped border | ~970 |
| DALI `warp_affine`, nearest neighbour | ~3,800 |
| `cv2.warpAffine` in a batch `python_function` (2-thread pool) | ~2,200 |
| + DALI `hsv` after it | ~740 (DALI's CPU `hsv` costs more than the warp) |
| `cv2` HSV round trip with a LUT (1 thread) | ~3,100 |
| DALI CPU decode, full image / 25% ROI | ~470-750 / ~850 |

JPEG ROI decode gains where the person box is much smaller than the image (COCO); PNG
(DeepLabCut frames) cannot skip work that way and is decode-bound (~4.5 ms per 640x480 frame
per core with either decoder): for PNG the decoded-frame cache is the answer.
"""


def load(name: str, min_rows: int):
    from posefeed.bench.data import tile_table
    from posefeed.datasets import dataset_path, load_coco, load_dataset, load_dlc

    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    if name == "coco-mini":
        table = load_coco(shared / "coco-mini" / "test_coco.json")
    elif name == "dlc-openfield":
        table = load_dlc(shared / "openfield-Pranav-2018-10-30")
    elif name == "synthetic":
        table = load_dataset(dataset_path("synthetic"))
    else:
        table = load_dataset(name)
    return tile_table(table, min_rows)


def run_one(args: tuple) -> float:
    """Samples/s of one loader (runs in its own process)."""
    dataset, variant, threads, batch, seconds = args
    import cv2

    cv2.setNumThreads(1)
    table = load(dataset, 4 * batch * 4)
    kw = VARIANTS[variant]
    if kw is None:
        from posefeed.bench.reference import ReferenceTopdownDataset, make_reference_loader
        from posefeed.pipelines import AugmentConfig

        ds = ReferenceTopdownDataset.from_table(
            table, input_size=(192, 256), codecs=("simcc",),
            augment=AugmentConfig.rtmpose_stage1(), seed=0)
        loader = make_reference_loader(ds, batch, threads, seed=0)
        it = iter(loader)
    else:
        from posefeed.pipelines import PoseLoader
        from posefeed.targets.simcc import SimCC

        loader = PoseLoader(table, [SimCC()], input_size=(192, 256), batch_size=batch,
                            device="cpu", num_threads=threads, **kw)

        def endless():
            while True:
                yield from loader
        it = endless()
    for _ in range(3):  # warm-up (and cache fill)
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(it)["image"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--datasets", default="coco-mini,synthetic,dlc-openfield")
    ap.add_argument("--variants", default="all", help="comma-separated prefixes or 'all'")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(run_one(tuple(json.loads(a.child))))
        return
    datasets = a.datasets.split(",")
    variants = list(VARIANTS) if a.variants == "all" else \
        [v for v in VARIANTS if any(v.startswith(p) for p in a.variants.split(","))]
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(a.repeat):
        for d in datasets:
            for v in variants:
                child = [sys.executable, __file__, "--child",
                         json.dumps([d, v, a.threads, a.batch, a.seconds])]
                res = subprocess.run(child, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"{d} / {v} failed:\n{res.stderr[-3000:]}")
                sps = float(res.stdout.strip().splitlines()[-1])
                results.setdefault((d, v), []).append(sps)
                print(f"{d:15s} {v:58s} {sps:8.0f} samples/s", flush=True)
    ref = "reference: torch DataLoader + OpenCV"
    lines = [f"# PoseLoader CPU throughput (samples/s)", "",
             f"Topdown 256x192, RTMPose stage-1 recipe, SimCC targets, batch {a.batch}, "
             f"{a.threads} threads (posefeed) / {a.threads} workers (reference); median of "
             f"{a.repeat} interleaved run(s) of {a.seconds:.0f} s each after 3 warm-up batches.",
             f"Machine: {platform.processor() or platform.machine()}, "
             f"{len(os.sched_getaffinity(0))} usable CPUs, load average at the end "
             f"{os.getloadavg()[0]:.1f} (the CPUs were shared with other jobs: compare within "
             f"a column, not across machines). {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "", "| variant | " + " | ".join(datasets) + " |",
             "|---|" + "---:|" * len(datasets)]
    for v in variants:
        cells = []
        for d in datasets:
            med = statistics.median(results[(d, v)])
            r = results.get((d, ref))
            ratio = f" ({med / statistics.median(r):.2f}x)" if r and v != ref else ""
            cells.append(f"{med:,.0f}{ratio}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", NOTES]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
