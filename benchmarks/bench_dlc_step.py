"""Whole DeepLabCut 3 training steps on this machine: DeepLabCut's default model for the
shuffle (built without ImageNet weights: the same compute), its ``PoseTrainingRunner.step``
(forward, targets, loss, backward, AdamW), fed by DeepLabCut's own DataLoader (workers 0,
its generator) or by posefeed (``make_loaders`` with ``cache="host"``, posefeed's generator).
Each variant in its own process; 1 warm-up step, then ``--steps`` timed (data + step).

Run in the integration venv: ``.venv-integrations/bin/python benchmarks/bench_dlc_step.py
CONFIG [--steps 3]``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

LEAVE_OUT: tuple[str, ...] = ()   # DeepLabCut's default recipe maps completely


def run_variant(config: str, variant: str, steps: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    import posefeed.integrations.deeplabcut as pf
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader, build_transforms
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from deeplabcut.pose_estimation_pytorch.runners import build_training_runner

    dlc = DLCLoader(config=config, shuffle=1, trainset_index=0)
    cfg = dlc.model_cfg
    model_cfg = copy.deepcopy(cfg["model"])
    if variant == "posefeed":
        model_cfg = pf.training.with_posefeed_generators(model_cfg)
        loader = pf.make_loaders(config, device="cpu", ignore=LEAVE_OUT, cache="host").train
    else:
        ds = dlc.create_dataset(transform=build_transforms(cfg["data"]["train"]), mode="train",
                                task=dlc.pose_task)
        loader = DataLoader(ds, batch_size=cfg["train_settings"]["batch_size"], shuffle=True,
                            num_workers=0, drop_last=True)
    torch.manual_seed(0)
    model = PoseModel.build(model_cfg, pretrained_backbone=False)
    runner = build_training_runner(runner_config=cfg["runner"], model_folder=dlc.model_folder,
                                   task=dlc.pose_task, model=model, device="cpu")
    runner.model.train()
    times, n, t_prev = [], 0, None
    while n <= steps:
        for batch in loader:
            runner.step(batch, "train")
            t = time.perf_counter()
            if t_prev is not None:
                times.append(t - t_prev)
            t_prev, n = t, n + 1
            if n > steps:
                break
    return {"variant": variant, "steps": len(times), "s_per_step": sum(times) / len(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.config, args.variant, args.steps)))
        return
    load = os.getloadavg()
    rows = []
    for v in ("dlc-w0", "posefeed"):
        out = subprocess.run([sys.executable, __file__, args.config, "--steps", str(args.steps),
                              "--variant", v], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load before "
          f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, after {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
