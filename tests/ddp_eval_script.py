"""Sharded evaluation under torchrun (gloo, CPU): every rank predicts its PoseLoader shard and
`posefeed.trainers.predict` gathers them; the result must equal an unsharded pass.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_eval_script.py \
        --data ann.json --out OUT

Rank 0 writes ``OUT/eval.json``: the rows and keypoints of the sharded and of the unsharded
prediction, and each rank's own shard rows.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from posefeed.datasets import load_coco
from posefeed.pipelines import AugmentConfig, PoseLoader
from posefeed.targets import SimCC
from posefeed.trainers.models import ModelConfig, build_model
from posefeed.trainers.predict import predict

INPUT = (32, 32)
SMALL = ModelConfig(stride=16, widths=(8, 16, 16, 16), depths=(1, 1, 1, 1), head_channels=16,
                    simcc_hidden=32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=3)
    args, _ = ap.parse_known_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    table = load_coco(args.data)
    codec = SimCC(input_size=INPUT, sigma=(1.0, 1.0))
    model = build_model("simcc", table.num_keypoints, INPUT, SMALL).eval()

    def loader(shard=None):
        return PoseLoader(table, [codec], input_size=INPUT, batch_size=args.batch_size,
                          device="cpu", num_threads=1, shuffle=False, drop_last=False,
                          schedule=AugmentConfig.none(), shard=shard)

    with loader() as sharded:                      # shard taken from torch.distributed
        own = sorted({int(i) for b in sharded for i in b["index"][:, 0].tolist() if i >= 0})
        got = predict(model, sharded, codec)
    with loader(shard=(0, 1)) as whole:            # every rank sees every row
        ref = predict(model, whole, codec)
    shards: list = [None] * dist.get_world_size()
    dist.all_gather_object(shards, own)
    if rank == 0:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "eval.json").write_text(json.dumps({
            "rows": got.rows.tolist(), "keypoints": got.keypoints.tolist(),
            "scores": got.scores.tolist(), "ref_rows": ref.rows.tolist(),
            "ref_keypoints": ref.keypoints.tolist(), "ref_scores": ref.scores.tolist(),
            "shards": shards}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
