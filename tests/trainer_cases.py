"""A small training run with one NaN loss and one spike per epoch, for comparing the
trainer's per-step reads with its deferred reads (CPU and CUDA tests)."""
from __future__ import annotations

import torch
from torch import nn

from posefeed.trainers.trainer import GuardConfig, Trainer, TrainConfig

N = 24


def data():
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(4, 3, generator=g), "target": torch.randn(4, 2, generator=g)}
            for _ in range(N)]


class Loss:
    """MSE; batch 7 gives NaN and batch 15 a 1000x spike (a bad label), as a real run might."""

    def __init__(self):
        self.calls = 0

    def __call__(self, out, batch):
        self.calls += 1
        loss = ((out - batch["target"]) ** 2).mean()
        if self.calls % N == 7:
            loss = loss * float("nan")
        if self.calls % N == 15:
            loss = loss * 1000.0
        return loss, {}


def train(sync_every, epochs=2, action="skip", device="cpu"):
    """``(trainer, log lines, on_step dicts)`` after ``epochs`` epochs."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    cfg = TrainConfig(epochs=epochs, lr=1e-2, warmup_iters=1, cosine_start=1.0, ema=True,
                      eval_every=100, device=device, sync_every=sync_every,
                      guard=GuardConfig(action=action, min_history=5, spike_factor=10.0))
    log = []
    steps = []
    t = Trainer(model, data(), cfg, loss_fn=Loss(), log=log.append,
                on_step=steps.append, iters_per_epoch=N)
    t.fit()
    return t, log, steps
