"""DeepLabCut 3.0.2's ``HeatmapGaussianGenerator`` against posefeed's drop-in
``PosefeedHeatmapGaussianGenerator``, both built through DeepLabCut's ``TARGET_GENERATORS`` and
called exactly as DeepLabCut's ``PoseModel.get_target`` calls them in the training step:
``generator(stride, outputs, labels)`` with the head's output tensors and the collated
``batch["annotations"]`` (torch tensors in, torch tensors out).

Cases: 37 keypoints, one animal, a 640x480 frame at strides 2 (241x321 maps) and 4 (121x161),
batch 2 and 8, locref on (DeepLabCut's default head). posefeed is timed with kept output
buffers (its default, ``reuse_buffers=True``) and with new tensors every call
(``reuse_buffers=False``), both on CPU tensors with its compiled kernel (numba; warmed up
first, the first call's compile / cache-load time printed), and with ``--torch-path`` also its
torch version (``kernel="numpy"``, what CUDA tensors run). Every call gets the next of 4 different keypoint batches (so kept
buffers never hold the answer already); the variants are timed round-robin within each
repeat (the machine's load drifts); outputs checked equal (<= 1e-5) first. Reported: the median
wall time and its ratio, the ratio of the minima (the least disturbed calls, on a shared
machine), and the ratio of the median CPU time of the process (``time.process_time``, all its threads:
what each call costs the CPU, not counting the time the scheduler gives other processes).

Run in the integration venv (``make test-integrations`` creates it):
``.venv-integrations/bin/python benchmarks/bench_dlc_targets.py [--repeats 5] [--out F.md]``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import posefeed.integrations.deeplabcut  # noqa: F401  (registers the generators)
from deeplabcut.pose_estimation_pytorch.models.target_generators import TARGET_GENERATORS

K = 37
FRAME = (480, 640)  # (H, W) px


def labels_for(rng, b):
    xy = rng.uniform(0, [FRAME[1], FRAME[0]], (b, 1, K, 2))
    v = rng.choice([0.0, 2.0], (b, 1, K, 1), p=[0.1, 0.9])
    return {"keypoints": torch.from_numpy(np.concatenate([xy, v], -1).astype(np.float32))}


def build(type_, **kw):
    return TARGET_GENERATORS.build(dict(type=type_, num_heatmaps=K, pos_dist_thresh=17,
                                        heatmap_mode="KEYPOINT", generate_locref=True,
                                        locref_std=7.2801, **kw))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, the CPUs)")
    ap.add_argument("--cases", default="2x2,2x4,8x2,8x4", help="batch x stride, comma-separated")
    ap.add_argument("--torch-path", action="store_true",
                    help='also time the torch version (kernel="numpy"), side by side')
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    load_before = os.getloadavg()
    # the compiled kernel's first call: numba compiles it (or loads it from its disk cache)
    t0 = time.perf_counter()
    warm = build("PosefeedHeatmapGaussianGenerator")
    warm(4, {"heatmap": torch.zeros(1, K, 8, 8), "locref": torch.zeros(1, 2 * K, 8, 8)}, labels_for(rng, 1))
    first_call = time.perf_counter() - t0
    print(f"posefeed's first call (numba kernel compiled or loaded from its cache): {first_call:.2f} s",
          flush=True)
    for b, stride in cases:
        if True:
            h, w = FRAME[0] // stride + 1, FRAME[1] // stride + 1
            outputs = {"heatmap": torch.zeros(b, K, h, w), "locref": torch.zeros(b, 2 * K, h, w)}
            batches = [labels_for(rng, b) for _ in range(4)]
            gens = {"DeepLabCut HeatmapGaussianGenerator": build("HeatmapGaussianGenerator"),
                    "posefeed (kept buffers, default)": build("PosefeedHeatmapGaussianGenerator"),
                    "posefeed (new tensors)": build("PosefeedHeatmapGaussianGenerator", reuse_buffers=False)}
            if args.torch_path:
                gens["posefeed torch path (kept buffers)"] = build("PosefeedHeatmapGaussianGenerator",
                                                                   kernel="numpy")
            ref = gens["DeepLabCut HeatmapGaussianGenerator"]
            for lab in batches[:2]:  # equal outputs (and warm-up)
                r = ref(stride, outputs, lab)
                for name, g in gens.items():
                    got = g(stride, outputs, lab)
                    for head in r:
                        for key in r[head]:
                            d = (got[head][key].double() - r[head][key].double()).abs().max().item()
                            assert d <= 1e-5 and got[head][key].dtype == r[head][key].dtype, (name, head, key, d)
                    del got
                del r
            times = {name: [] for name in gens}
            cpu = {name: [] for name in gens}
            for i in range(args.repeats):
                for name, g in gens.items():
                    lab = batches[i % len(batches)]
                    c0, t0 = time.process_time(), time.perf_counter()
                    out = g(stride, outputs, lab)
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
                    del out
            ref_name = "DeepLabCut HeatmapGaussianGenerator"
            med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            low = {name: min(t) * 1e3 for name, t in times.items()}
            cpu_ms = {name: statistics.median(t) * 1e3 for name, t in cpu.items()}
            for name, ms in med.items():
                rows.append((b, stride, f"{h}x{w}", name, ms, med[ref_name] / ms, low[name],
                             low[ref_name] / low[name], cpu_ms[name], cpu_ms[ref_name] / cpu_ms[name]))
                print(f"batch {b} stride {stride} {h}x{w} {name}: {ms:.1f} ms ({med[ref_name] / ms:.1f}x; "
                      f"min {low[name]:.1f} ms, {low[ref_name] / low[name]:.1f}x; CPU {cpu_ms[name]:.1f} ms, "
                      f"{cpu_ms[ref_name] / cpu_ms[name]:.1f}x)", flush=True)
    load_after = os.getloadavg()
    lines = [
        "# DeepLabCut generator vs posefeed drop-in (benchmarks/bench_dlc_targets.py)",
        "",
        f"Machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"deeplabcut 3.0.2; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
        f"(1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
        f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; {args.repeats} repeats; "
        f"posefeed's first call (numba compile or cache load, before timing): {first_call:.2f} s.",
        "",
        "| batch | stride | map | generator | ms / call (median) | x DeepLabCut | min ms | x (minima) "
        "| CPU ms | x (CPU) |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {b} | {s} | {m} | {n} | {ms:.1f} | {x:.1f}x | {lo:.1f} | {xl:.1f}x | {cp:.1f} | {xc:.1f}x |"
              for b, s, m, n, ms, x, lo, xl, cp, xc in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
