"""Models, losses, schedule, EMA, checkpoints, the training loop and prediction output,
checked against closed forms and hand-computed values."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from posefeed.trainers.checkpoint import CheckpointManager, atomic_save, load_checkpoint
from posefeed.trainers.heads import HeatmapHead
from posefeed.trainers.losses import (KeypointMSELoss, KLDiscretLoss, LossConfig,
                                      MaskedHuberLoss, PoseLoss, WeightedBCELoss)
from posefeed.trainers.models import ModelConfig, PoseModel, build_model
from posefeed.trainers.predict import dlc_predictions_frame, mean_pose_rmse, to_original
from posefeed.trainers.schedule import ExpMomentumEMA, WarmupFlatCosine, build_optimizer
from posefeed.trainers.trainer import GuardConfig, StabilityGuard, Trainer, TrainConfig

torch.set_num_threads(1)


# ---------------------------------------------------------------------------- losses
def test_mse_loss_with_target_weight():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0, 0] = 1.0      # keypoint 0: one pixel off by 1
    target[0, 1] = 3.0            # keypoint 1: every pixel off by 3, but weight 0
    w = torch.tensor([[1.0, 0.0]])
    # mean over B*K*H*W = 8 elements: (1 * 1) / 8
    assert float(KeypointMSELoss()(pred, target, w)) == pytest.approx(1 / 8)
    assert float(KeypointMSELoss(use_target_weight=False)(pred, target, w)) == \
        pytest.approx((1 + 4 * 9) / 8)


def test_bce_and_huber_masked_means():
    logits = torch.zeros(1, 1, 1, 2)           # sigmoid 0.5 -> bce = ln 2 for either target
    target = torch.tensor([[[[1.0, 0.0]]]])
    assert float(WeightedBCELoss()(logits, target, torch.tensor([[1.0]]))) == \
        pytest.approx(math.log(2))
    pred = torch.tensor([[[[0.5, 3.0, 9.0]]]])
    tgt = torch.zeros(1, 1, 1, 3)
    mask = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    # Huber(delta 1): 0.5*0.5^2 = 0.125; |3| -> 3 - 0.5 = 2.5; masked mean over 2 -> 1.3125
    assert float(MaskedHuberLoss(loss_weight=1.0)(pred, tgt, mask)) == pytest.approx(1.3125)
    assert float(MaskedHuberLoss(loss_weight=1.0)(pred, tgt, torch.zeros_like(mask))) == 0.0


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_kl_discret_loss_hand_computed():
    # one instance, K = 2 keypoints, 2 bins per axis
    x_logits = torch.tensor([[[0.0, 0.1], [0.2, 0.0]]])
    y_logits = torch.tensor([[[0.0, 0.0], [0.0, 0.3]]])
    x_labels = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    y_labels = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]])
    w = torch.tensor([[1.0, 0.5]])
    beta = 10.0

    def term(logit, label):   # KL(softmax(label*10) || softmax(logit*10)) / bins
        return _kl(_softmax([beta * v for v in label]), _softmax([beta * v for v in logit])) / 2

    expected = 0.0
    for k, wk in enumerate([1.0, 0.5]):
        expected += wk * (term(x_logits[0, k].tolist(), x_labels[0, k].tolist())
                          + term(y_logits[0, k].tolist(), y_labels[0, k].tolist()))
    expected /= 2  # divided by K
    got = float(KLDiscretLoss()(x_logits, y_logits, x_labels, y_labels, w))
    assert got == pytest.approx(expected, rel=1e-5)


def test_pose_loss_reads_batch_names():
    out = {"heatmap": torch.zeros(2, 3, 4, 4), "locref": torch.zeros(2, 6, 4, 4)}
    batch = {"heatmap": torch.ones(2, 3, 4, 4), "heatmap_weight": torch.ones(2, 3),
             "locref": torch.ones(2, 6, 4, 4), "locref_weight": torch.ones(2, 6, 4, 4)}
    total, parts = PoseLoss(LossConfig(heatmap="bce"))(out, batch)
    assert set(parts) == {"heatmap", "locref"}
    # bce(0 logit, target 1) = ln 2; huber(1) = 0.5 times locref weight 0.05
    assert float(parts["heatmap"]) == pytest.approx(math.log(2))
    assert float(PoseLoss()(out, batch)[1]["heatmap"]) == pytest.approx(1.0)  # MSE default
    assert float(parts["locref"]) == pytest.approx(0.025)
    assert float(total) == pytest.approx(math.log(2) + 0.025)


# ---------------------------------------------------------------------------- models
@pytest.mark.parametrize("kind,keys", [("heatmap", {"heatmap": (2, 5, 12, 16)}),
                                       ("dlc", {"heatmap": (2, 5, 12, 16),
                                                "locref": (2, 10, 12, 16)}),
                                       ("simcc", {"x_logits": (2, 5, 128),
                                                  "y_logits": (2, 5, 96)})])
def test_model_output_shapes(kind, keys):
    cfg = ModelConfig(stride=16, widths=(8, 16, 16, 16), head_channels=16, simcc_hidden=32)
    model = build_model(kind, 5, (64, 48), cfg)
    x = torch.randn(2, 3, 48, 64)
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == keys
    # values: in eval mode each sample's output depends on that sample only
    model.eval()
    with torch.no_grad():
        both, alone = model(x), model(x[1:])
    for k in keys:
        torch.testing.assert_close(both[k][1:], alone[k], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(both[k][0], both[k][1])
    # and the last layer is what it says: zero weights leave the bias (closed form)
    with torch.no_grad():
        if kind == "simcc":                      # linear classifiers without bias: 0 logits
            model.head.cls_x.weight.zero_()
            model.head.cls_y.weight.zero_()
            expect = {k: torch.zeros(keys[k]) for k in keys}
        else:                                    # 1x1 convs: map k holds bias[k]
            expect = {}
            for k in keys:
                conv = getattr(model.head, k)
                conv.weight.zero_()
                conv.bias.copy_(torch.arange(keys[k][1], dtype=torch.float32))
                expect[k] = torch.arange(keys[k][1], dtype=torch.float32).view(1, -1, 1, 1
                                                                             ).expand(keys[k])
        got = model(x)
    for k in keys:
        torch.testing.assert_close(got[k], expect[k])


def test_user_backbone_plugs_in():
    class Tiny(nn.Module):
        out_channels, stride = 7, 8

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 7, 3, stride=8, padding=1)

        def forward(self, x):
            return self.conv(x)

    model = build_model("heatmap", 3, (64, 32), ModelConfig(heatmap_stride=4), backbone=Tiny())
    assert model(torch.randn(1, 3, 32, 64))["heatmap"].shape == (1, 3, 8, 16)
    manual = PoseModel(Tiny(), HeatmapHead(7, 3, num_deconv=0))
    x = torch.randn(1, 3, 32, 64)
    got = manual(x)["heatmap"]
    assert got.shape == (1, 3, 4, 8)
    # values: the head's 1x1 conv applied to the user backbone's features, written out
    with torch.no_grad():
        feat = manual.backbone.conv(x)                                   # (1, 7, 4, 8)
        w = manual.head.heatmap.weight[:, :, 0, 0]                       # (3, 7)
        expect = torch.einsum("kc,bcij->bkij", w, feat) + manual.head.heatmap.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- schedule, EMA
def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.05
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert len(opt.param_groups[1]["params"]) == 4  # conv bias, bn weight + bias, linear bias


def test_warmup_flat_cosine_closed_form():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=4e-3)
    s = WarmupFlatCosine(opt, total_iters=100, warmup_iters=10, start_factor=1e-5,
                         cosine_start=0.5, eta_min=2e-4)
    lrs = [s.get_last_lr()[0]]
    for _ in range(100):
        s.step()
        lrs.append(s.get_last_lr()[0])
    assert lrs[0] == pytest.approx(4e-3 * 1e-5)
    assert lrs[5] == pytest.approx(4e-3 * (1e-5 + (1 - 1e-5) * 0.5))
    assert lrs[10] == lrs[30] == lrs[50] == pytest.approx(4e-3)
    assert lrs[75] == pytest.approx(2e-4 + (4e-3 - 2e-4) * 0.5)   # half-way down the cosine
    assert lrs[100] == pytest.approx(2e-4)
    s.scale = 0.5
    state = s.state_dict()
    s2 = WarmupFlatCosine(torch.optim.AdamW([p], lr=4e-3), 100, 10)
    s2.load_state_dict(state)
    assert s2.get_last_lr()[0] == pytest.approx(1e-4)


def test_ema_exp_momentum_closed_form():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ExpMomentumEMA(model, momentum=2e-4, gamma=2000)
    ema.update(model)                          # first update copies
    assert float(ema.module.weight) == pytest.approx(1.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)                          # steps = 1
    m1 = (1 - 2e-4) * math.exp(-2 / 2000) + 2e-4
    assert float(ema.module.weight) == pytest.approx(1.0 * (1 - m1) + 3.0 * m1)
    ema.update(model)                          # steps = 2
    m2 = (1 - 2e-4) * math.exp(-3 / 2000) + 2e-4
    prev = 1.0 * (1 - m1) + 3.0 * m1
    assert float(ema.module.weight) == pytest.approx(prev * (1 - m2) + 3.0 * m2)


def test_scaled_config_for_short_runs():
    c = TrainConfig().scaled_for(500)
    assert c.warmup_iters == 50 and c.ema_momentum == pytest.approx(0.02)
    assert c.lr == 4e-3 and c.weight_decay == 0.05 and c.grad_clip == 35
    assert TrainConfig().scaled_for(10**6) == TrainConfig()


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_manager_keeps_last_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for epoch, metric in zip(range(1, 5), [5.0, 3.0, 4.0, 6.0]):
        mgr.save({"epoch": epoch}, epoch, metric)
    assert [p.name for p in mgr.epochs()] == ["epoch_0003.pt", "epoch_0004.pt"]
    assert load_checkpoint(mgr.best_path)["epoch"] == 2
    assert load_checkpoint(mgr.last)["epoch"] == 4
    assert not list(tmp_path.glob(".*tmp*"))


WRITER = textwrap.dedent("""
    import sys, torch
    from posefeed.trainers.checkpoint import atomic_save
    path = sys.argv[1]
    i = 0
    while True:
        atomic_save({"i": i, "x": torch.full((1_500_000,), float(i))}, path)
        if i == 0:
            print("ready", flush=True)
        i += 1
""")


def test_atomic_save_survives_kill_during_write(tmp_path):
    path = tmp_path / "ckpt.pt"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for delay in (0.05, 0.3, 0.7):
        proc = subprocess.Popen([sys.executable, str(script), str(path)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        state = load_checkpoint(path)          # the newest complete file, never a torn one
        assert torch.all(state["x"] == float(state["i"]))
    atomic_save({"i": -1}, path)
    assert load_checkpoint(path)["i"] == -1


# ---------------------------------------------------------------------------- training loop
class FakeLoader:
    """Deterministic toy batches: one bright 3x3 square per image and its 1-keypoint
    heatmap target; order shuffled from (seed, epoch) like PoseLoader."""

    def __init__(self, n: int = 32, batch: int = 8, seed: int = 0, size: int = 32):
        rng = np.random.default_rng(seed)
        self.xy = rng.integers(4, size - 4, (n, 2))
        self.n, self.batch, self.size, self.seed, self.epoch = n, batch, size, seed, 0
        self.state_loads = 0

    def __len__(self):
        return self.n // self.batch

    def set_epoch(self, e):
        self.epoch = e

    def state_dict(self):
        return {"epoch": self.epoch}

    def load_state_dict(self, s):
        self.epoch = s["epoch"]
        self.state_loads += 1

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        s, hs = self.size, self.size // 4
        g = torch.arange(hs, dtype=torch.float32)
        for b in range(len(self)):
            idx = order[b * self.batch:(b + 1) * self.batch]
            img = torch.full((len(idx), 3, s, s), -1.0)
            hm = torch.zeros(len(idx), 1, hs, hs)
            for j, i in enumerate(idx):
                x, y = self.xy[i]
                img[j, :, y - 1:y + 2, x - 1:x + 2] = 2.0
                cx, cy = (x / 4), (y / 4)
                hm[j, 0] = torch.exp(-((g[None] - cx) ** 2 + (g[:, None] - cy) ** 2) / 2)
            yield {"image": img, "heatmap": hm, "keypoint_weight": torch.ones(len(idx), 1)}


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(stride=8, widths=(8, 16), depths=(1, 1), head_channels=16)
    return build_model("heatmap", 1, (32, 32), cfg)


def tiny_config(**kw) -> TrainConfig:
    base = dict(epochs=4, lr=1e-2, warmup_iters=2, eval_every=100, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_reduces_loss():
    trainer = Trainer(tiny_model(), FakeLoader(), tiny_config(epochs=6), log=lambda s: None)
    hist = trainer.fit()
    assert len(hist) == 6 and trainer.global_step == 24
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]


def test_gradient_accumulation_counts_steps():
    trainer = Trainer(tiny_model(), FakeLoader(n=40), tiny_config(epochs=1, accumulate=2),
                      log=lambda s: None)
    trainer.fit()
    assert trainer.global_step == 3   # 5 batches: 2 + 2 + the leftover one


def test_resume_continues_the_same_run(tmp_path):
    straight = Trainer(tiny_model(), FakeLoader(), tiny_config(), out_dir=tmp_path / "a",
                       log=lambda s: None)
    straight.fit()
    first = Trainer(tiny_model(), FakeLoader(), tiny_config(epochs=4), out_dir=tmp_path / "b",
                    log=lambda s: None)
    first.config.epochs = 2                      # "crash" after two epochs
    first.fit()
    loader = FakeLoader()
    second = Trainer(tiny_model(seed=123), loader, tiny_config(), out_dir=tmp_path / "b",
                     log=lambda s: None)
    assert second.resume()
    assert second.epoch == 2 and loader.state_loads == 1
    second.fit()
    for (name, a), b in zip(straight.model.state_dict().items(),
                            second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(next(iter(straight.ema.module.parameters())),
                       next(iter(second.ema.module.parameters())))
    assert second.step_losses == straight.step_losses
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert {"model", "optimizer", "scheduler", "ema", "loader", "epoch"} <= set(ckpt)


class PositionLoader(FakeLoader):
    """FakeLoader that resumes mid-epoch like PoseLoader: ``state_dict`` holds the epoch and
    the batches already yielded; ``set_epoch`` keeps a loaded position."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.pos = 0
        self.starts: list[tuple[int, int]] = []

    def set_epoch(self, e):
        if e != self.epoch:
            self.pos = 0
        self.epoch = e

    def state_dict(self):
        return {"epoch": self.epoch, "batch": self.pos}

    def load_state_dict(self, s):
        self.epoch, self.pos = s["epoch"], s["batch"]
        self.state_loads += 1

    def __iter__(self):
        self.starts.append((self.epoch, self.pos))
        for b, batch in enumerate(super().__iter__()):
            if b < self.pos:
                continue
            self.pos = b + 1
            yield batch
        self.pos = 0
        self.epoch += 1


class Crash(Exception):
    pass


def test_resume_from_a_mid_epoch_checkpoint_continues_the_same_run(tmp_path):
    """checkpoint_every_steps writes last.pt inside epochs; a run killed after step 7 resumes
    from step 6 (epoch 1, batch 2 of 4) and ends with exactly the uninterrupted run's
    weights, EMA, per-step losses and per-epoch mean losses."""
    straight = Trainer(tiny_model(), PositionLoader(), tiny_config(), out_dir=tmp_path / "a",
                       log=lambda s: None)
    straight.fit()

    def crash_at_7(info):
        if info["step"] == 7:
            raise Crash

    first = Trainer(tiny_model(), PositionLoader(), tiny_config(checkpoint_every_steps=3),
                    out_dir=tmp_path / "b", log=lambda s: None, on_step=crash_at_7)
    with pytest.raises(Crash):
        first.fit()
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 1
    assert ckpt["loader"] == {"epoch": 1, "batch": 2} and ckpt["epoch_progress"]["iter"] == 2

    loader = PositionLoader()
    lines: list[str] = []
    second = Trainer(tiny_model(seed=123), loader, tiny_config(checkpoint_every_steps=3),
                     out_dir=tmp_path / "b", log=lines.append)
    assert second.resume()
    assert "resumed at epoch 1, batch 2 (step 6)" in lines[-1]
    second.fit()
    assert loader.starts[0] == (1, 2)        # the first pass after the resume starts mid-epoch
    for (name, a), b in zip(straight.model.state_dict().items(),
                            second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(next(iter(straight.ema.module.parameters())),
                       next(iter(second.ema.module.parameters())))
    assert second.step_losses == straight.step_losses
    assert [h["loss"] for h in second.history] == [h["loss"] for h in straight.history]
    end = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert end["epoch"] == 4 and "epoch_progress" not in end


class Sabotage:
    """Wraps a loss: NaN at the given calls, times ``factor`` at others."""

    def __init__(self, nan_at=(), spike_at=(), factor=1e4):
        self.inner, self.calls = PoseLoss(), 0
        self.nan_at, self.spike_at, self.factor = set(nan_at), set(spike_at), factor

    def __call__(self, out, batch):
        loss, parts = self.inner(out, batch)
        self.calls += 1
        if self.calls in self.nan_at:
            loss = loss * float("nan")
        if self.calls in self.spike_at:
            loss = loss * self.factor
        return loss, parts


def test_guard_skips_nan_steps():
    lines = []
    trainer = Trainer(tiny_model(), FakeLoader(), tiny_config(epochs=2),
                      loss_fn=Sabotage(nan_at=(3,)), log=lines.append)
    trainer.fit()
    assert len(trainer.events) == 1 and trainer.events[0]["action"] == "skip"
    assert "non-finite" in trainer.events[0]["reason"] and any("[guard]" in s for s in lines)
    assert trainer.global_step == 7                          # 8 batches, one skipped
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_guard_lowers_lr_on_spike():
    guard = GuardConfig(action="lower_lr", min_history=4, lr_factor=0.5)
    trainer = Trainer(tiny_model(), FakeLoader(), tiny_config(epochs=3, guard=guard),
                      loss_fn=Sabotage(spike_at=(9,)), log=lambda s: None)
    trainer.fit()
    assert [e["step"] for e in trainer.events] == [8]
    assert "spike" in trainer.events[0]["reason"]
    assert trainer.scheduler.scale == 0.5
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(
        0.5 * 1e-2 * trainer.scheduler.factor(trainer.scheduler.last_iter, 1e-2))


def test_guard_rollback_restores_last_checkpoint(tmp_path):
    guard = GuardConfig(action="rollback")
    trainer = Trainer(tiny_model(), FakeLoader(), tiny_config(epochs=1, guard=guard),
                      out_dir=tmp_path, log=lambda s: None)
    trainer.fit()
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    trainer._bad_step("test spike", 1e9)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert trainer.scheduler.scale == 0.5 and trainer.events[-1]["action"] == "rollback"


def test_stability_guard_median_rule():
    g = StabilityGuard(GuardConfig(spike_factor=10, min_history=3, window=5))
    assert [g.check(v) for v in (1.0, 2.0, 3.0)] == [None, None, None]
    assert g.check(19.0) is None                 # median 2 -> limit 20
    assert "spike" in g.check(31.0)              # median of (1, 2, 3, 19) = 2.5 -> 25
    assert "non-finite" in g.check(float("inf"))


# ---------------------------------------------------------------------------- prediction
def test_to_original_applies_affine():
    a = torch.tensor([[[2.0, 0.0, 10.0], [0.0, 0.5, -4.0]],
                      [[0.0, -1.0, 100.0], [1.0, 0.0, 0.0]]])     # scale+shift; 90 deg
    kp = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 4.0], [1.0, 0.0]]])
    out = to_original(kp, a)
    expected = torch.tensor([[[12.0, -3.0], [10.0, -4.0]], [[96.0, 3.0], [100.0, 1.0]]])
    assert torch.allclose(out, expected)


def test_dlc_prediction_format(tmp_path):
    kp = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    sc = np.array([[0.9, 0.8], [0.7, 0.6]])
    df = dlc_predictions_frame(["a.png", "b.png"], ["nose", "tail"], kp, sc, scorer="me")
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    assert df.loc["b.png", ("me", "tail", "likelihood")] == 0.6
    assert df.loc["a.png", ("me", "nose", "y")] == 2.0
    path = tmp_path / "pred.h5"
    df.to_hdf(path, key="df_with_missing", mode="w")
    back = pd.read_hdf(path, "df_with_missing")
    pd.testing.assert_frame_equal(back, df, check_index_type=False, check_column_type=False)
    multi = dlc_predictions_frame(["a.png", "a.png"], ["nose", "tail"], kp, sc,
                                  individuals=["m1", "m2"])
    assert multi.shape == (1, 12)
    assert multi.loc["a.png", ("posefeed", "m2", "nose", "x")] == 5.0


def test_mean_pose_baseline_rmse():
    train = np.array([[[0, 0, 2], [10, 0, 2]], [[2, 0, 2], [12, 0, 2]]], dtype=np.float64)
    test = np.array([[[1, 3, 2], [11, 4, 2]]], dtype=np.float64)
    # mean pose (1, 0), (11, 0): errors 3 and 4 -> 3.5
    assert mean_pose_rmse(train, test) == pytest.approx(3.5)
