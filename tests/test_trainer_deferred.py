"""The trainer's CUDA mode without a host read per step (``sync_every > 1``), run on the CPU:
the same training as reading every step (the guard skips the same steps, on the device),
one host read per ``sync_every`` batches, and constants made once per device."""
from __future__ import annotations

import math

import pytest
import torch

from posefeed.trainers.trainer import _norm_constants
from trainer_cases import N, train

@pytest.mark.parametrize("action", ["skip", "lower_lr"])
def test_deferred_reads_train_the_same_as_reading_every_step(action):
    a, log_a, steps_a = train(1, action=action)
    b, log_b, steps_b = train(6, action=action)
    assert b.deferred and not a.deferred
    assert a.global_step == b.global_step == 2 * (N - 2)        # two bad steps per epoch
    assert [(e["epoch"], e["step"]) for e in a.events] == [(e["epoch"], e["step"]) for e in b.events]
    assert len(a.events) == 4 and all(e["action"] == action for e in b.events)
    assert "non-finite loss" in b.events[0]["reason"] and "spike" in b.events[1]["reason"]
    if action == "skip":    # the device skipped the same steps: the same weights
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            assert torch.allclose(pa, pb, atol=1e-6), (pa, pb)
        for pa, pb in zip(a.ema.module.parameters(), b.ema.module.parameters()):
            assert torch.allclose(pa, pb, atol=1e-6)
    else:                   # the lr is lowered at the next read, up to 5 steps later
        assert all(torch.isfinite(p).all() for p in b.model.parameters())
    assert a.scheduler.scale == b.scheduler.scale
    assert a.ema.steps == b.ema.steps
    if action == "skip":
        assert [x["loss"] for x in a.history] == pytest.approx([x["loss"] for x in b.history])
    assert len(steps_b) == len(steps_a) == 2 * N      # on_step still sees every batch
    assert math.isnan(a.step_losses[6]) and math.isnan(b.step_losses[6])


def test_one_host_read_per_sync_every_batches(monkeypatch):
    reads = {"n": 0}
    real = torch.Tensor.cpu

    def counting(self, *a, **k):
        reads["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", counting)
    t, _, _ = train(6, epochs=1)
    # every read moves three stacked tensors (losses, flags, norms): 24 / 6 = 4 reads
    assert reads["n"] == 3 * (N // 6)


def test_normalisation_constants_are_made_once_per_device():
    a = _norm_constants(torch.device("cpu"))
    b = _norm_constants(torch.device("cpu"))
    assert a[0] is b[0] and a[1] is b[1]
    assert a[0].flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])


def test_train_picks_the_device_cache_when_it_fits_and_says_so(monkeypatch):
    """`posefeed train` on a GPU pipeline: the device cache, else the host cache, else none;
    the log line names the choice and why a cache was refused (PoseLoader stubbed: the
    choice logic only)."""
    from types import SimpleNamespace

    import posefeed.trainers.recipe as recipe
    from posefeed.pipelines.errors import CacheTooLarge

    class FakeLoader:
        def __init__(self, table, codec, batch_size=1, cache=None, device="auto", **kw):
            if cache is not None and cache in table:
                raise CacheTooLarge(f"{cache} needs 9 GiB")
            self.device, self.cache = "gpu", cache

    monkeypatch.setattr(recipe, "PoseLoader", FakeLoader)
    monkeypatch.setattr(recipe, "resolve_device", lambda d: torch.device("cuda"))
    rc = SimpleNamespace(device="gpu", seed=0, on_bad_image="raise", batch_size=4)
    for refused, picked in (((), "device"), (("device",), "host"), (("device", "host"), None)):
        log = []
        tr, _ = recipe.build_loaders(rc, refused, (), None, "topdown", (64, 64), log.append)
        assert tr.cache == picked
        assert f"frame cache {picked or 'none'}" in log[0]
        for r in refused:
            assert f"cache='{r}' does not fit: {r} needs 9 GiB" in log[0]
