"""CPU loader throughput with the codecs inside the DALI graph (a batch ``python_function``,
today's CPU default) against the dense formulation the GPU path uses (`DenseTargets`: the
codecs run on the dense keypoint batch after the graph, one copy of each output).

Two recipes: RTMPose topdown 192x256 with SimCC + MSRA heatmaps (synthetic 640x480 JPEG,
batch 64), and DeepLabCut frame mode (openfield 640x480 PNG, 448x448 input, DLCHeatmap
stride 8 with locref, batch 8). The variants run alternately in one process (``--rounds``
rounds of ``--batches`` batches each, after a warm-up epoch, the order swapped every round),
so the machine's load drifts over both; samples/s medians and their ratio are printed. Run:
``python benchmarks/bench_dense_targets.py [--rounds 3] [--batches 12] [--json F]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

OPENFIELD = Path("/work/shared/datasets/openfield-Pranav-2018-10-30")


def loaders(recipe: str, dense: bool):
    from posefeed.bench.data import load_table, prepare_dataset, tile_table  # noqa: PLC0415
    from posefeed.pipelines import PoseLoader  # noqa: PLC0415
    from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC  # noqa: PLC0415

    threads = len(os.sched_getaffinity(0))
    if recipe == "rtmpose":
        table = tile_table(load_table(prepare_dataset("synthetic")), 512)
        codecs = [SimCC(input_size=(192, 256)),
                  GaussianHeatmap(input_size=(192, 256), heatmap_size=(48, 64))]
        return PoseLoader(table, codecs, batch_size=64, device="cpu", num_threads=threads,
                          dense_targets=dense)
    table = tile_table(load_table(str(OPENFIELD)), 64)
    codecs = [DLCHeatmap(stride=8, heatmap_size=(56, 56))]
    return PoseLoader(table, codecs, mode="frame", input_size=(448, 448), batch_size=8,
                      device="cpu", num_threads=threads, dense_targets=dense)


def endless(loader):
    while True:
        yield from loader


def rate(it, batches: int, batch_size: int) -> float:
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--recipes", default="rtmpose,dlc")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    res = {"load_before": list(os.getloadavg())}
    for recipe in args.recipes.split(","):
        its, sizes = {}, {}
        for dense in (False, True):
            ld = loaders(recipe, dense)
            its[dense], sizes[dense] = endless(ld), ld.batch_size
            rate(its[dense], max(len(ld), 2), ld.batch_size)   # warm-up epoch
        got = {False: [], True: []}
        for r in range(args.rounds):     # ABBA: neither variant is always timed second
            for dense in ((False, True) if r % 2 == 0 else (True, False)):
                got[dense].append(rate(its[dense], args.batches, sizes[dense]))
        graph, dense = statistics.median(got[False]), statistics.median(got[True])
        res[recipe] = {"in_graph_samples_per_s": round(graph, 1),
                       "dense_samples_per_s": round(dense, 1), "ratio": round(dense / graph, 3),
                       "rounds": {"in_graph": got[False], "dense": got[True]}}
        print(f"{recipe}: in graph {graph:.1f}/s, dense {dense:.1f}/s, dense/in-graph "
              f"{dense / graph:.3f}", flush=True)
    res["load_after"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
