"""Distributed training with the sharded loader (issue 7): torchrun, 2 CPU processes (gloo),
a plain DDP loop (tests/ddp_train_script.py) that records every batch's table rows per rank.

Each epoch's shards must be disjoint and cover the dataset up to ``drop_last``; a run stopped
after one batch of epoch 1 and resumed from each rank's ``loader.state_dict()`` must see
exactly the batches of the uninterrupted run, none repeated."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from posefeed.datasets import write_coco

from helpers import make_dataset

SCRIPT = Path(__file__).resolve().parent / "ddp_train_script.py"
N, BATCH, WORLD, EPOCHS = 20, 3, 2, 2


def torchrun(out: Path, data: Path, *extra: str, script: Path = SCRIPT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.pathsep.join([str(SCRIPT.parent.parent),
                                           os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={WORLD}", str(script), "--data", str(data), "--out", str(out),
           "--epochs", str(EPOCHS), "--batch-size", str(BATCH), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)          # torchrun and its workers
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in 240 s:\n{out[-3000:]}\n{err[-5000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-5000:]


def records(out: Path) -> dict[int, list[dict]]:
    got = {}
    for r in range(WORLD):
        lines = (out / f"rank{r}.jsonl").read_text().splitlines()
        got[r] = [json.loads(line) for line in lines]
    return got


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    table = make_dataset(root / "images", {}, n=N)
    return write_coco(table, root / "ann.json")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data) -> Path:
    out = tmp_path_factory.mktemp("full")
    torchrun(out, data)
    return out


@pytest.mark.slow
def test_shards_are_disjoint_and_cover_each_epoch(full_run):
    rec = records(full_run)
    per_rank = (N // WORLD) // BATCH            # drop_last: 3 batches of 3 per rank
    orders = []
    for epoch in range(EPOCHS):
        shards = []
        for r in range(WORLD):
            batches = [x for x in rec[r] if x["epoch"] == epoch]
            assert [x["batch"] for x in batches] == list(range(per_rank))
            assert all(len(x["index"]) == BATCH for x in batches)
            shards.append([i for x in batches for i in x["index"]])
        for s in shards:
            assert len(s) == len(set(s)) == per_rank * BATCH
        assert not set(shards[0]) & set(shards[1])                     # disjoint
        seen = set(shards[0]) | set(shards[1])
        assert seen <= set(range(N)) and len(seen) == WORLD * per_rank * BATCH
        assert N - len(seen) == N - WORLD * per_rank * BATCH < WORLD * BATCH   # only drop_last
        orders.append(shards)
    assert orders[0] != orders[1]                                     # reshuffled per epoch
    params = [(full_run / f"params_rank{r}.txt").read_text() for r in range(WORLD)]
    assert params[0] == params[1]                                     # DDP kept them in sync


@pytest.mark.slow
def test_stop_and_resume_sees_exactly_the_uninterrupted_batches(tmp_path, data, full_run):
    out = tmp_path / "resumed"
    torchrun(out, data, "--stop-after", "1")
    stopped = records(out)
    for r in range(WORLD):
        assert [(x["epoch"], x["batch"]) for x in stopped[r]][-1] == (1, 0)
        assert (out / f"state_rank{r}.pt").is_file()
    torchrun(out, data, "--resume")
    resumed, full = records(out), records(full_run)
    for r in range(WORLD):
        key = [(x["epoch"], x["batch"]) for x in resumed[r]]
        assert len(key) == len(set(key))                                  # nothing repeated
        assert resumed[r] == full[r]                                      # same batches, same rows
        epoch1 = [i for x in resumed[r] if x["epoch"] == 1 for i in x["index"]]
        assert len(epoch1) == len(set(epoch1))
    params = [(out / f"params_rank{r}.txt").read_text() for r in range(WORLD)]
    assert params[0] == params[1]
    # and training itself continued exactly: the same weights as the uninterrupted run
    assert params[0] == (full_run / "params_rank0.txt").read_text()


@pytest.mark.slow
def test_sharded_evaluation_gathers_every_row_once(tmp_path, data):
    """Each rank predicts its own shard; `predict` gathers them into the whole set, in table
    order, equal to an unsharded pass (same model, no augmentation)."""
    import numpy as np

    out = tmp_path / "eval"
    torchrun(out, data, script=SCRIPT.parent / "ddp_eval_script.py")
    res = json.loads((out / "eval.json").read_text())
    s0, s1 = (set(s) for s in res["shards"])
    assert s0 and s1 and not s0 & s1 and s0 | s1 == set(range(N))   # really sharded
    assert res["rows"] == res["ref_rows"] == list(range(N))
    np.testing.assert_allclose(res["keypoints"], res["ref_keypoints"], atol=1e-4)
    np.testing.assert_allclose(res["scores"], res["ref_scores"], atol=1e-4)
