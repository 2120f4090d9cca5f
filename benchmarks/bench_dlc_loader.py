"""The data layer of one DeepLabCut 3 training step: loading + augmentation + targets (the
model excluded), DeepLabCut 3.0.2's own against posefeed's, on a DeepLabCut shuffle.

* ``dlc-w0`` / ``dlc-w2``: what ``deeplabcut.train_network`` runs: a torch ``DataLoader`` over
  DeepLabCut's ``PoseDataset`` with the shuffle's ``data.train`` albumentations recipe
  (``dataloader_workers`` 0, DeepLabCut's default, or 2), then DeepLabCut's
  ``HeatmapGaussianGenerator`` on the batch (as ``PoseModel.get_target`` does after the forward
  pass, on maps of the size the shuffle's model outputs).
* ``posefeed-uncached`` / ``posefeed``: ``make_loaders`` (the same split and batch size, the
  shuffle's recipe reproduced completely: DeepLabCut's default has affine, the "hybrid"
  KeypointAwareCrop, motion blur and Gaussian noise, so both sides do the same work), then
  ``PosefeedHeatmapGaussianGenerator``; ``posefeed`` is ``make_loaders``' default
  (``cache="auto"``: here the host cache, frames decoded once), ``-uncached`` decodes every
  PNG every step (``cache=None``).

Each variant runs in its own process (a forked DataLoader next to DALI's or OpenCV's threads
can hang), one warm-up epoch's first batches skipped, then ``--steps`` batches timed.
Run in the integration venv: ``.venv-integrations/bin/python benchmarks/bench_dlc_loader.py
CONFIG [--steps 30]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = ("dlc-w0", "dlc-w2", "posefeed-uncached", "posefeed")
LEAVE_OUT: tuple[str, ...] = ()   # DeepLabCut's default recipe maps completely


def run_variant(config: str, variant: str, steps: int, warmup: int,
                torch_threads: int | None = None, num_threads: int | None = None) -> dict:
    import torch

    if torch_threads:      # the main process's intra-op threads (the generators' torch ops)
        torch.set_num_threads(torch_threads)
    from torch.utils.data import DataLoader

    import posefeed.integrations.deeplabcut as pf
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader, build_transforms
    from deeplabcut.pose_estimation_pytorch.models.target_generators import TARGET_GENERATORS

    dlc = DLCLoader(config=config, shuffle=1, trainset_index=0)
    cfg = dlc.model_cfg
    bs = int(cfg["train_settings"]["batch_size"])
    gen_cfg = dict(cfg["model"]["heads"]["bodypart"]["target_generator"])
    # the default ResNet-50 model: backbone stride 16, heatmap head deconv x2 -> stride 8
    stride = 8
    if variant.startswith("dlc"):
        ds = dlc.create_dataset(transform=build_transforms(cfg["data"]["train"]), mode="train",
                                task=dlc.pose_task)
        loader = DataLoader(ds, batch_size=bs, shuffle=True, num_workers=int(variant[-1]),
                            pin_memory=False, drop_last=True)
        gen = TARGET_GENERATORS.build(gen_cfg)
        dropped: list[str] = []
    else:
        loaders = pf.make_loaders(config, device="cpu", ignore=LEAVE_OUT, batch_size=bs,
                                  num_threads=num_threads,
                                  cache=None if variant.endswith("uncached") else "auto")
        assert loaders.cache == (None if variant.endswith("uncached") else "host"), loaders.cache
        loader, dropped = loaders.train, loaders.dropped
        gen = TARGET_GENERATORS.build({**gen_cfg, "type": "PosefeedHeatmapGaussianGenerator"})
    times, n = [], 0
    outputs: dict = {}   # stand-ins for the model's outputs (the generators read their shapes)
    t_prev = None
    while n < steps + warmup:
        for batch in loader:
            b, _, h, w = batch["image"].shape
            if tuple(batch["image"].shape) not in outputs:    # the model's outputs' shapes
                c = gen_cfg["num_heatmaps"]
                outputs[tuple(batch["image"].shape)] = {
                    "heatmap": torch.zeros(b, c, -(-h // stride), -(-w // stride)),
                    "locref": torch.zeros(b, 2 * c, -(-h // stride), -(-w // stride))}
            targets = gen(stride, outputs[tuple(batch["image"].shape)], batch["annotations"])
            del targets
            t = time.perf_counter()
            if t_prev is not None and n >= warmup:
                times.append(t - t_prev)
            elif n == warmup - 1 or (n == 0 and warmup == 0):
                cpu0 = time.process_time()
            t_prev = t
            n += 1
            if n >= steps + warmup:
                break
    cpu = time.process_time() - cpu0
    times.sort()
    return {"variant": variant, "batch": bs, "steps": len(times),
            # this process's CPU time (all its threads; not the DataLoader's worker processes)
            "process_cpu_ms": 1e3 * cpu / len(times),
            "torch_threads": torch.get_num_threads(),
            "median_ms": 1e3 * times[len(times) // 2], "mean_ms": 1e3 * sum(times) / len(times),
            "left_out": dropped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads in the main process of every variant (0: torch's "
                         "default, one per core)")
    ap.add_argument("--num-threads", type=int, default=0,
                    help="posefeed's loader threads (make_loaders num_threads; 0: its default, "
                         "the CPUs)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, of {', '.join(VARIANTS)} (the ratios need the "
                         "first two)")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.config, args.variant, args.steps, args.warmup,
                                     args.torch_threads or None, args.num_threads or None)))
        return
    rows = []
    load = os.getloadavg()
    for v in args.variants.split(","):
        out = subprocess.run([sys.executable, __file__, args.config, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--variant", v,
                              "--torch-threads", str(args.torch_threads),
                              "--num-threads", str(args.num_threads)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load before "
          f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, after {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")
    by = {r["variant"]: r["median_ms"] for r in rows}
    base, w2 = by.get("dlc-w0", float("nan")), by.get("dlc-w2", float("nan"))
    print("| data layer | ms / step (median) | x DeepLabCut (workers 0) | x DeepLabCut (2 workers) |"
          "\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['median_ms']:.0f} | {base / r['median_ms']:.1f}x | "
              f"{w2 / r['median_ms']:.1f}x |")


if __name__ == "__main__":
    main()
