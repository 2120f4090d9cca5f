"""Multi-animal targets: posefeed's ``PartAffinityField`` and ``DEKR`` against DeepLabCut
3.0.2's own ``PartAffinityFieldGenerator`` and ``DEKRGenerator`` (imported, not re-written).

Needs DeepLabCut 3.0.2 (the integration venv): ``PYTHONPATH=$PWD
.venv-integrations/bin/python benchmarks/bench_multi_targets.py [--repeats 15]``.

Cases (the issue's): PAF, batch 8 x 3 animals x 12 keypoints, 20 limbs, 64x64 map (512x512
input, stride 8); DEKR, same labels, 13 maps of 128x128 (stride 4); both at stride 2 (PAF
256x256, DEKR 256x256). Labels: 8 different batches, each animal a random articulated figure
(a 12-joint chain with 8 extra limbs, bones 25-60 px) with its centre within 100 px of the
batch's crowd centre, so animals overlap; every keypoint visible. Every timed call gets the
next batch (kept buffers never hold the answer); DLC and posefeed are timed round-robin within
each repeat (the load drifts); medians of the process's CPU time (``time.process_time``:
both sides run on one thread -- torch uses one intra-op thread, DLC's generators hand
their outputs to ``torch.tensor`` -- so on a machine shared with other work CPU time is the
fairer clock), with ``uptime``'s load. Outputs are checked (max abs difference, printed)
on every batch.

posefeed is timed as its drop-in generators (``posefeed.integrations.dlc_multi``:
``PAFTargets`` / ``DEKRTargets``, what ``PosefeedPartAffinityFieldGenerator`` /
``PosefeedDEKRGenerator`` run) called exactly as DeepLabCut's (``gen(stride, outputs,
labels)`` with torch labels, torch targets out): with their default ``reuse_buffers`` (kept
arrays, only the previous call's cells rewritten; also what the DALI adapter's
``codec.encoder()`` does) and with ``reuse_buffers=False`` (new arrays every call, as
DeepLabCut allocates), both on the default ``kernel="auto"`` (the compiled numba kernel,
``posefeed.targets.kernels_multi_cpu``), and the kept-buffer drop-in on the vectorised array
version (``kernel="numpy"``). Every variant is called on all 8 batches before the timing
(numba compiles, or loads its disk cache, on the first call: that first call's time is
printed as ``first call``).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from posefeed.integrations.dlc_multi import DEKRTargets, PAFTargets
from posefeed.targets.dekr import add_centers, keypoint_areas

B, N, K = 8, 3, 12
GRAPH = [(i, i + 1) for i in range(11)] + [(0, 5), (1, 6), (2, 7), (3, 8), (4, 9), (5, 10), (6, 11), (0, 11),
                                           (2, 9)]


def batches(seed: int, count: int = 8, size: float = 512.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        kp = np.empty((B, N, K, 3), np.float32)
        crowd = rng.uniform(0.3 * size, 0.7 * size, (B, 1, 2))
        centre = crowd[:, None, 0] + rng.normal(0, 50, (B, N, 2))
        angles = np.cumsum(rng.normal(0, 0.6, (B, N, K)), axis=-1)
        bones = rng.uniform(25, 60, (B, N, K))
        steps = np.stack([np.cos(angles), np.sin(angles)], -1) * bones[..., None]
        pts = np.cumsum(steps, axis=2)
        pts -= pts.mean(axis=2, keepdims=True)
        kp[..., :2] = np.clip(centre[:, :, None] + pts, 0, size - 1)
        kp[..., 2] = 2
        out.append(kp)
    return out


def load() -> str:
    return "load average %.2f, %.2f, %.2f" % os.getloadavg()


def run_case(name: str, dlc_call, kept_call, fresh_call, array_call, check, data: list[np.ndarray],
             repeats: int) -> dict:
    variants = {"DeepLabCut": dlc_call, "kept": kept_call, "fresh": fresh_call, "array": array_call}
    first = {}
    for v, fn in variants.items():  # the first call: numba's compile (or cache load) included
        t = time.perf_counter()
        fn(data[0])
        first[v] = time.perf_counter() - t
    worst = 0.0
    for kp in data:  # warm-up and check (DeepLabCut's output dict against each drop-in's)
        ref = dlc_call(kp)
        worst = max(worst, check(ref, fresh_call(kp)), check(ref, kept_call(kp)), check(ref, array_call(kp)))
    times: dict[str, list[float]] = {v: [] for v in variants}
    i = 0
    for _ in range(repeats):
        for v, fn in variants.items():
            kp = data[i % len(data)]
            i += 1
            t = time.process_time()
            out = fn(kp)
            times[v].append(time.process_time() - t)
            del out
    med = {v: statistics.median(t) * 1e3 for v, t in times.items()}
    d = med["DeepLabCut"]
    print(f"| {name} | {d:.1f} ms | {med['kept']:.2f} ms | {med['fresh']:.2f} ms | {med['array']:.2f} ms | "
          f"**{d / med['kept']:.0f}x** / {d / med['fresh']:.0f}x / {d / med['array']:.0f}x | {worst:.1e} | "
          f"{first['kept']:.2f} s / {first['fresh']:.2f} s |", flush=True)
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from deeplabcut.pose_estimation_pytorch.models.target_generators.dekr_targets import (  # noqa: PLC0415
        DEKRGenerator)
    from deeplabcut.pose_estimation_pytorch.models.target_generators.pafs_targets import (  # noqa: PLC0415
        PartAffinityFieldGenerator)

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load()}")
    print("| case | DeepLabCut 3.0.2 | posefeed drop-in (kept buffers, default) | posefeed drop-in "
          "(`reuse_buffers=False`) | drop-in, array version (kept, `kernel=\"numpy\"`) | speed-up (kept / new / "
          "array) | max abs diff | first call (kept / new) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    data = batches(0)
    for stride in (8, 2):
        size = int(512 / stride)
        gen = PartAffinityFieldGenerator(GRAPH, 20.0)
        outs = {"heatmap": torch.zeros(B, K, size, size), "paf": torch.zeros(B, 2 * len(GRAPH), size, size)}

        def dlc_paf(kp, gen=gen, outs=outs, stride=stride):
            return gen(stride, outs, {"keypoints": torch.from_numpy(kp)})

        def check_paf(ref, got):
            return float((ref["paf"]["target"] - got["paf"]["target"]).abs().max())

        def ours_paf(gen_ours, outs=outs, stride=stride):
            return lambda kp: gen_ours(stride, outs, {"keypoints": torch.from_numpy(kp)})

        run_case(f"PAF, {B} x {N} x {K}, {len(GRAPH)} limbs, {size}x{size} (stride {stride})", dlc_paf,
                 ours_paf(PAFTargets(GRAPH, 20.0)), ours_paf(PAFTargets(GRAPH, 20.0, reuse_buffers=False)),
                 ours_paf(PAFTargets(GRAPH, 20.0, kernel="numpy")), check_paf, data, args.repeats)
    for stride in (4, 2):
        size = int(512 / stride)
        gen = DEKRGenerator(K, 17, 0.1)
        outs = {"heatmap": torch.zeros(B, K + 1, size, size), "offset": torch.zeros(B, 2 * K, size, size)}

        def dekr_labels(kp):  # what DeepLabCut's dataset hands its generator: centres appended, areas
            x, y, v = kp[..., 0], kp[..., 1], kp[..., 2]
            cx, cy, cv = add_centers(np, x, y, v)
            return {"keypoints": torch.from_numpy(np.stack([cx, cy, cv], axis=-1)),
                    "area": torch.from_numpy(keypoint_areas(np, x, y, v))}

        labs = {id(kp): dekr_labels(kp) for kp in data}  # built once: not part of either's cost

        def dlc_dekr(kp, gen=gen, outs=outs, stride=stride):
            return gen(stride, outs, labs[id(kp)])

        def ours_dekr(gen_ours, outs=outs, stride=stride):
            return lambda kp: gen_ours(stride, outs, labs[id(kp)])

        def check_dekr(ref, got):
            return max(float((ref[h][f] - got[h][f]).abs().max()) for h in ("heatmap", "offset")
                       for f in ("target", "weights"))

        run_case(f"DEKR, {B} x {N} x {K}, {K + 1} maps {size}x{size} (stride {stride})", dlc_dekr,
                 ours_dekr(DEKRTargets(K, 17, 0.1)), ours_dekr(DEKRTargets(K, 17, 0.1, reuse_buffers=False)),
                 ours_dekr(DEKRTargets(K, 17, 0.1, kernel="numpy")), check_dekr, data, args.repeats)
    print(f"# after: {load()}")


if __name__ == "__main__":
    main()
