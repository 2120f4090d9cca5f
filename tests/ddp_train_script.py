"""A plain PyTorch DDP training loop around PoseLoader, for torchrun on CPU (gloo).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_train_script.py \
        --data ann.json --out OUT --epochs 2 [--stop-after 1 | --resume]

The loader takes its shard from torch.distributed. Every batch's table rows are appended to
``OUT/rank<r>.jsonl`` as ``{"epoch", "batch", "index"}``. ``--stop-after K`` stops after K
batches of epoch 1 and saves ``loader.state_dict()`` (with the model and optimizer) to
``OUT/state_rank<r>.pt``; ``--resume`` loads it and continues. At the end each rank writes a
checksum of its parameters to ``OUT/params_rank<r>.txt`` (DDP keeps them equal).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from posefeed.datasets import load_coco
from posefeed.pipelines import AugmentConfig, PoseLoader

INPUT = (32, 32)


class TinyPose(nn.Module):
    """Regresses the K keypoints (normalised to the input) from a small conv stack."""

    def __init__(self, k: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 2 * k)
        self.k = k

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image)).view(-1, self.k, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=3)
    ap.add_argument("--stop-after", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = Path(args.out)
    table = load_coco(args.data)
    loader = PoseLoader(table, [], input_size=INPUT, batch_size=args.batch_size, device="cpu",
                        num_threads=1, seed=7, schedule=AugmentConfig.none().with_(flip_prob=0.5))
    assert loader.state_dict()["shard"] == (rank, world)       # taken from torch.distributed
    model = nn.parallel.DistributedDataParallel(TinyPose(table.num_keypoints))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    state_file = out / f"state_rank{rank}.pt"
    if args.resume:
        state = torch.load(state_file, weights_only=False)
        loader.load_state_dict(state["loader"])
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    log = open(out / f"rank{rank}.jsonl", "a", encoding="utf-8")
    scale = torch.tensor(INPUT, dtype=torch.float32)
    for epoch in range(loader.epoch, args.epochs):
        loader.set_epoch(epoch)               # keeps the position after load_state_dict
        start = loader.state_dict()["batch"]
        for i, batch in enumerate(loader, start=start):
            kp = batch["keypoints"][:, 0]
            weight = (kp[..., 2] > 0).float()
            pred = model(batch["image"])
            loss = (((pred - kp[..., :2] / scale) ** 2).sum(-1) * weight).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            log.write(json.dumps({"epoch": epoch, "batch": i,
                                  "index": batch["index"].ravel().tolist()}) + "\n")
            log.flush()
            if args.stop_after is not None and epoch == 1 and i + 1 == args.stop_after:
                torch.save({"loader": loader.state_dict(), "model": model.module.state_dict(),
                            "opt": opt.state_dict()}, state_file)
                dist.barrier()
                dist.destroy_process_group()
                return
    flat = torch.cat([p.detach().ravel() for p in model.parameters()])
    (out / f"params_rank{rank}.txt").write_text(" ".join(f"{v:.6f}" for v in flat.tolist()))
    loader.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
