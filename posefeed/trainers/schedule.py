"""Optimizer, learning-rate schedule and weight EMA of the RTMPose recipe.

- `build_optimizer`: AdamW; no weight decay on norm weights and biases (every parameter
  with fewer than 2 dimensions).
- `WarmupFlatCosine`: per-iteration LR: linear warm-up from ``start_factor * lr`` to ``lr``
  over ``warmup_iters``, flat, then cosine from ``lr`` to ``eta_min`` over the iterations
  from ``cosine_start`` (a fraction of the run; RTMPose: the second half) to the end.
- `ExpMomentumEMA`: MMPose's ExpMomentumEMA: ``avg = (1 - m_t) * avg + m_t * param`` with
  ``m_t = (1 - momentum) * exp(-(1 + t) / gamma) + momentum``; the first update copies.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def build_optimizer(model: nn.Module, lr: float = 4e-3, weight_decay: float = 0.05,
                    betas: tuple[float, float] = (0.9, 0.999),
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with two groups: decayed (>= 2-D weights) and not decayed (norms, biases).
    ``fused``: torch's fused AdamW kernel, which can skip a step on the device (its
    ``found_inf`` flag: the update and the step count are left as they were)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


class WarmupFlatCosine:
    """Sets each param group's ``lr`` per optimizer step (call `step` after each one).

    ``lr(t) = base * f(t) * scale``: ``f`` rises linearly from ``start_factor`` to 1 over
    ``warmup_iters``, stays 1 until ``cosine_start * total_iters``, then follows a cosine
    down to ``eta_min / base`` at ``total_iters``. ``scale`` (1.0) is lowered by the
    stability guard's "lower_lr" action and kept in the state dict.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int,
                 warmup_iters: int = 1000, start_factor: float = 1e-5,
                 cosine_start: float = 0.5, eta_min: float = 2e-4) -> None:
        self.optimizer = optimizer
        self.total_iters = max(int(total_iters), 1)
        self.warmup_iters = int(warmup_iters)
        self.start_factor = start_factor
        self.cosine_start = cosine_start
        self.eta_min = eta_min
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, b in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = b
        self.last_iter = 0
        self.scale = 1.0
        self._apply()

    def factor(self, t: int, base: float) -> float:
        """Multiplier of ``base`` at iteration ``t`` (before ``scale``)."""
        f = 1.0
        if t < self.warmup_iters:
            f = self.start_factor + (1.0 - self.start_factor) * t / self.warmup_iters
        start = int(self.cosine_start * self.total_iters)
        if t >= start and self.total_iters > start:
            lo = self.eta_min / base
            p = min((t - start) / (self.total_iters - start), 1.0)
            f = min(f, lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * p)))
        return f

    def _apply(self) -> None:
        for g, b in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = b * self.factor(self.last_iter, b) * self.scale

    def step(self) -> None:
        self.last_iter += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_iter": self.last_iter, "scale": self.scale, "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
        self.scale = float(state["scale"])
        self.base_lrs = list(state["base_lrs"])
        self._apply()


class ExpMomentumEMA:
    """Exponential moving average of a model's weights and float buffers (MMPose
    ExpMomentumEMA with ``update_buffers=True``). ``ema.module`` is the averaged copy
    (eval mode, no grads); call `update(model)` after each optimizer step."""

    def __init__(self, model: nn.Module, momentum: float = 2e-4, gamma: float = 2000.0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.gamma = gamma
        self.steps = 0

    def current_momentum(self, steps: int | None = None) -> float:
        """Weight of the new parameters at update number ``steps`` (>= 1)."""
        t = self.steps if steps is None else steps
        return (1 - self.momentum) * math.exp(-float(1 + t) / self.gamma) + self.momentum

    @torch.no_grad()
    def update(self, model: nn.Module, keep: torch.Tensor | None = None) -> None:
        """Average ``model`` in. ``keep`` (a 0-d bool tensor on the model's device): when
        False the average is left unchanged, decided on the device (no host wait); the host
        `steps` counter still advances (the trainer takes it back when it reads the flag)."""
        src = model.state_dict()
        m = self.current_momentum()
        for name, avg in self.module.state_dict().items():
            new = src[name].detach()
            if keep is not None:
                new = torch.where(keep, new.to(avg.dtype), avg)
            if self.steps == 0 or not avg.is_floating_point():
                avg.copy_(new)
            elif keep is not None:      # lerp: exactly avg again when new is avg
                avg.lerp_(new, m)
            else:
                avg.mul_(1 - m).add_(new.to(avg.dtype), alpha=m)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "steps": self.steps,
                "momentum": self.momentum, "gamma": self.gamma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
        self.momentum = float(state["momentum"])
        self.gamma = float(state["gamma"])
