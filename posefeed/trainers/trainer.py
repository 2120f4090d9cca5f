"""A thin training loop over any iterable of batch dicts (PoseLoader or a DataLoader).

One epoch is::

    for batch in loader:
        with autocast(bf16 on GPU):
            loss = loss_fn(model(batch["image"]), batch)
        if guard says the loss is bad: skip / lower the lr / roll back   (logged)
        (loss / accumulate).backward()
        every `accumulate` batches: clip grads (35), AdamW step, lr schedule step, EMA update

then evaluation every ``eval_every`` epochs (on the EMA weights) and an atomic checkpoint
(model, optimizer, scheduler, EMA, loader state, epoch, history).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from posefeed.constants import IMAGENET_MEAN, IMAGENET_STD
from posefeed.trainers.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from posefeed.trainers.losses import PoseLoss
from posefeed.trainers.schedule import ExpMomentumEMA, WarmupFlatCosine, build_optimizer


@dataclass
class GuardConfig:
    """What counts as a bad step and what to do about it.

    A loss is bad when it is NaN/inf, or (after ``min_history`` good steps) more than
    ``spike_factor`` times the median of the last ``window`` good losses; a non-finite
    gradient norm is bad too. Actions: "skip" (drop the step), "lower_lr" (drop it and
    multiply the lr by ``lr_factor``), "rollback" (reload the last good checkpoint, then
    lower the lr), "none" (train on). More than ``max_events`` bad steps abort the run.
    """

    action: str = "skip"
    spike_factor: float = 10.0
    window: int = 100
    min_history: int = 20
    lr_factor: float = 0.5
    max_events: int = 100


@dataclass
class TrainConfig:
    """Training hyper-parameters; the defaults are the RTMPose recipe (iterations are
    optimizer steps). Use `scaled_for` for short runs."""

    epochs: int = 420
    lr: float = 4e-3
    weight_decay: float = 0.05
    warmup_iters: int = 1000
    warmup_start_factor: float = 1e-5
    cosine_start: float = 0.5          # fraction of the run where the cosine begins
    eta_min: float = 2e-4
    ema: bool = True
    ema_momentum: float = 2e-4
    ema_gamma: float = 2000.0
    grad_clip: float | None = 35.0
    amp: bool = True                   # bf16 autocast on CUDA (ignored on CPU)
    accumulate: int = 1                # batches per optimizer step
    eval_every: int = 10               # epochs; the last epoch is always evaluated
    checkpoint_every: int = 1          # epochs
    checkpoint_every_steps: int = 0    # also a mid-epoch last.pt every N optimizer steps (0: off)
    keep_last: int = 3
    best_metric: str = "rmse_px"       # lower is better
    device: str = "auto"               # "auto" | "cpu" | "gpu" | "cuda" | "cuda:1" ...
    seed: int = 0
    #: read losses / gradient norms on the host every N batches (None: 1 on the CPU, where
    #: a read costs nothing, 25 on CUDA). With N > 1 the guard decides on the device: a bad
    #: step is skipped there at once (fused AdamW's found_inf, EMA gated), its event, log and
    #: lr / rollback action follow at the next read (see `Trainer`)
    sync_every: int | None = None
    guard: GuardConfig = field(default_factory=GuardConfig)

    def scaled_for(self, total_iters: int) -> "TrainConfig":
        """A copy for a run of ``total_iters`` optimizer steps: warm-up at most a tenth of
        the run, EMA averaging over about the last tenth (momentum >= 10 / total) with its
        exp warm-up (gamma) a twentieth of the run. Unchanged for runs of >= 100k steps."""
        if total_iters >= 100_000:
            return dataclasses.replace(self)
        t = max(int(total_iters), 1)
        return dataclasses.replace(
            self, warmup_iters=min(self.warmup_iters, max(t // 10, 1)),
            ema_momentum=max(self.ema_momentum, min(10.0 / t, 0.1)),
            ema_gamma=min(self.ema_gamma, max(t / 20, 1.0)))


def _plain(value: Any) -> Any:
    """Tuples as lists, so facts compare equal after a checkpoint round trip."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "gpu" -> "cuda"."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cuda" if device == "gpu" else device)


_NORM_CONSTANTS: dict[torch.device, tuple[Tensor, Tensor]] = {}


def _norm_constants(device: torch.device) -> tuple[Tensor, Tensor]:
    """ImageNet mean / std ``(1, 3, 1, 1)`` on ``device``, made once per device (a fresh
    ``torch.tensor(..., device=cuda)`` every step is a host-to-device copy that waits)."""
    got = _NORM_CONSTANTS.get(device)
    if got is None:
        got = (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
               torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))
        _NORM_CONSTANTS[device] = got
    return got


def prepare_image(image: Tensor) -> Tensor:
    """uint8 RGB ``(B, 3, H, W)`` -> float normalised with the ImageNet mean/std (0..255
    units); float images are returned as they are (PoseLoader already normalised them)."""
    if image.dtype != torch.uint8:
        return image
    mean, std = _norm_constants(image.device)
    return (image.float() - mean) / std


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


class StabilityGuard:
    """Flags non-finite losses and spikes far above the running median of good losses."""

    def __init__(self, config: GuardConfig) -> None:
        self.config = config
        self.history: deque[float] = deque(maxlen=config.window)

    def check(self, loss: float) -> str | None:
        """None when ``loss`` is fine (and then remembered), else the reason."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        c = self.config
        if len(self.history) >= c.min_history:
            med = statistics.median(self.history)
            if med > 0 and loss > c.spike_factor * med:
                return f"loss spike {loss:.4g} > {c.spike_factor:g} x running median {med:.4g}"
        self.history.append(loss)
        return None

    def limit(self) -> float:
        """The largest loss that is not a spike now (``inf`` before ``min_history`` good
        losses, or with a median <= 0): the device-side check is ``isfinite(loss) and loss
        <= limit()``, the same rule as `check`."""
        c = self.config
        if len(self.history) < c.min_history:
            return math.inf
        med = statistics.median(self.history)
        return c.spike_factor * med if med > 0 else math.inf


class Trainer:
    """Trains ``model`` on ``train_loader`` (any iterable of batch dicts; ``set_epoch``,
    ``state_dict`` / ``load_state_dict`` and ``len`` are used when present).

    Args:
        loss_fn: ``(outputs, batch) -> (loss, parts)``; `PoseLoss` by default.
        val_fn: ``model -> {metric: value}``, run every ``eval_every`` epochs on the EMA
            weights (or the model without EMA).
        out_dir: checkpoints go to ``out_dir/checkpoints`` (none when None).
        on_step: called after every batch with a dict (epoch, step, loss, lr, samples_per_s).
        log: called with one line for each notable event (evaluations, guard actions).
        iters_per_epoch: batches per epoch when the loader has no ``len``.
        run_info: facts that make a checkpoint belong to this run (e.g. codec, mode, input
            size, keypoints); saved with every checkpoint, and `resume` refuses a checkpoint
            whose facts differ, naming each difference.
    """

    def __init__(self, model: nn.Module, train_loader: Iterable[dict[str, Any]],
                 config: TrainConfig | None = None, *, loss_fn: Callable | None = None,
                 val_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                 out_dir: str | Path | None = None,
                 on_step: Callable[[dict[str, Any]], None] | None = None,
                 log: Callable[[str], None] = print, iters_per_epoch: int | None = None,
                 run_info: dict[str, Any] | None = None) -> None:
        self.config = c = config or TrainConfig()
        self.run_info = dict(run_info or {})
        self.device = resolve_device(c.device)
        self.model = model.to(self.device)
        self.loader = train_loader
        self.loss_fn = loss_fn or PoseLoss()
        self.val_fn = val_fn
        self.on_step = on_step
        self.log = log
        n = iters_per_epoch if iters_per_epoch is not None else len(train_loader)  # type: ignore[arg-type]
        self.iters_per_epoch = int(n)
        self.steps_per_epoch = math.ceil(self.iters_per_epoch / c.accumulate)
        #: batches between host reads of the losses (1: every step, as on the CPU)
        self.sync_every = int(c.sync_every) if c.sync_every is not None else \
            (25 if self.device.type == "cuda" else 1)
        if self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {c.sync_every}")
        self.deferred = self.sync_every > 1
        self.optimizer = build_optimizer(self.model, c.lr, c.weight_decay,
                                         fused=True if self.deferred else None)
        self.scheduler = WarmupFlatCosine(self.optimizer, c.epochs * self.steps_per_epoch,
                                          c.warmup_iters, c.warmup_start_factor,
                                          c.cosine_start, c.eta_min)
        self.ema = ExpMomentumEMA(self.model, c.ema_momentum, c.ema_gamma) if c.ema else None
        self.guard = StabilityGuard(c.guard)
        self.ckpt = CheckpointManager(Path(out_dir) / "checkpoints", c.keep_last) \
            if out_dir is not None else None
        self.epoch = 0            # next epoch to run
        self.global_step = 0      # optimizer steps taken
        self.history: list[dict[str, Any]] = []   # one entry per epoch
        self.step_losses: list[float] = []        # every batch's loss
        self.events: list[dict[str, Any]] = []    # guard actions
        self._snapshot: dict[str, Any] | None = None
        #: deferred mode: device values of the batches since the last read
        self._pending: list[dict[str, Any]] = []
        self._limit: Tensor | None = None     # the spike limit on the device
        self._taken_back = 0                  # skipped steps the host counted and took back
        #: the unfinished epoch's running totals (set while an epoch runs, and by a resume
        #: from a mid-epoch checkpoint): batches done, their losses, samples, seconds
        self._progress: dict[str, Any] | None = None

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch, "global_step": self.global_step, "history": self.history,
            "step_losses": self.step_losses, "events": self.events,
            "guard": list(self.guard.history), "config": dataclasses.asdict(self.config),
            "torch_rng": torch.get_rng_state(), "run_info": self.run_info,
            "steps_per_epoch": self.steps_per_epoch,
        }
        if hasattr(self.loader, "state_dict"):
            state["loader"] = self.loader.state_dict()
        if self._progress is not None:  # saved inside an epoch: how far it got
            state["epoch_progress"] = dict(self._progress, losses=list(self._progress["losses"]))
        return state

    def load_state_dict(self, state: dict[str, Any], training_state: bool = True) -> None:
        """Restore a checkpoint; ``training_state=False`` restores only model, optimizer,
        scheduler and EMA (used by rollback)."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:   # torch lists every missing / unexpected / resized tensor
            lines = str(e).splitlines()
            raise CheckpointError(
                "the checkpoint's weights do not fit this model (it was saved by a run with "
                "another codec, backbone, input size or number of keypoints): "
                + " ".join(line.strip() for line in lines[:3])
                + (f" ... ({len(lines) - 3} more lines)" if len(lines) > 3 else "")) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if not training_state:
            return
        self._match_schedule(state)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.step_losses = list(state["step_losses"])
        self.events = list(state["events"])
        self.guard.history.extend(state.get("guard", []))
        torch.set_rng_state(state["torch_rng"])
        if "loader" in state and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(state["loader"])
        self._progress = state.get("epoch_progress")
        if self._progress is not None and "loader" not in state:
            raise ValueError("a mid-epoch checkpoint needs the loader's position, and this one "
                             "has none (the loader had no state_dict)")
        if self.ckpt is not None:
            self.ckpt.best = state.get("best_metric", self.ckpt.best)

    def _match_schedule(self, state: dict[str, Any]) -> None:
        """A checkpoint saved with another number of optimizer steps per epoch (another batch
        size or ``accumulate``): at an epoch boundary the lr schedule's position is rescaled
        to the same fraction of the run (``last_iter * new / old``), so the cosine still ends
        at ``eta_min`` on the last step; inside an epoch it is refused (the loader could not
        continue that epoch's order either)."""
        old = state.get("steps_per_epoch")
        new = self.steps_per_epoch
        if old is None or int(old) == new:
            return
        if state.get("epoch_progress") is not None:
            raise CheckpointError(
                f"cannot resume in the middle of an epoch: the checkpoint has {old} optimizer "
                f"steps per epoch, this run {new} (another batch size or --accumulate); resume "
                "with the same batch size, or from the last epoch-end checkpoint")
        sched = self.scheduler
        sched.last_iter = round(sched.last_iter * new / int(old))
        sched._apply()
        self.log(f"resuming with {new} optimizer steps per epoch instead of {old}: the lr "
                 f"schedule continues at step {sched.last_iter} of {sched.total_iters}")

    def check_run_info(self, state: dict[str, Any], source: str | Path = "checkpoint") -> None:
        """Raise `CheckpointError` naming each fact of `run_info` the checkpoint differs in."""
        saved = state.get("run_info") or {}
        diffs = [f"{k} {saved[k]!r} (checkpoint) vs {v!r} (this run)"
                 for k, v in self.run_info.items() if k in saved and _plain(saved[k]) != _plain(v)]
        if diffs:
            raise CheckpointError(f"cannot resume from {source}: it was saved by a different run: "
                                  + "; ".join(diffs) + ". Resume with the same options, or "
                                  "train into another --out folder.", file=source)

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from ``path`` or the newest checkpoint in ``out_dir``; False if none.
        A checkpoint of a different run (see ``run_info``) or of another model raises
        `CheckpointError`; an unreadable newer checkpoint skipped for an older one is
        logged."""
        if path is not None:
            try:
                state = load_checkpoint(path)
            except Exception as e:  # noqa: BLE001 - torch / pickle raise many kinds
                raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}",
                                      file=path) from None
            source: str | Path = path
        elif self.ckpt is not None:
            state = self.ckpt.load_last(warn=self.log)
            source = self.ckpt.folder
        else:
            state = None
        if state is None:
            return False
        self.check_run_info(state, source)
        self.load_state_dict(state)
        where = f", batch {self._progress['iter']}" if self._progress else ""
        self.log(f"resumed at epoch {self.epoch}{where} (step {self.global_step})")
        return True

    # -- training ------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        """The weights evaluated and exported: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _autocast(self):
        if self.device.type == "cuda" and self.config.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _bad_step(self, reason: str, loss: float, step: int | None = None) -> None:
        action = self.config.guard.action
        step = self.global_step if step is None else step
        event = {"epoch": self.epoch, "step": step, "loss": loss,
                 "reason": reason, "action": action}
        self.events.append(event)
        self.optimizer.zero_grad(set_to_none=True)
        if action in ("lower_lr", "rollback"):
            if action == "rollback":
                state = self._last_good_state()
                if state is not None:
                    self.load_state_dict(state, training_state=False)
            self.scheduler.scale *= self.config.guard.lr_factor
            self.scheduler._apply()
            event["lr_scale"] = self.scheduler.scale
        self.log(f"[guard] epoch {self.epoch} step {step}: {reason} -> {action}")
        if len(self.events) > self.config.guard.max_events:
            raise RuntimeError(f"training unstable: {len(self.events)} bad steps "
                               f"(last: {reason})")

    def _last_good_state(self) -> dict[str, Any] | None:
        if self.ckpt is not None and self.ckpt.last.exists():
            return load_checkpoint(self.ckpt.last, self.device)
        return self._snapshot

    def _optimizer_step(self) -> bool:
        max_norm = self.config.grad_clip if self.config.grad_clip else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(norm):
            self._bad_step(f"non-finite gradient norm ({norm})", float("nan"))
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.model)
        return True

    def train_epoch(self) -> dict[str, Any]:
        """One pass over the loader; returns the epoch's summary."""
        c = self.config
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(self.epoch)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # a resumed mid-epoch checkpoint continues its epoch's totals (the loader continues
        # from the saved batch)
        prog = self._progress or {"iter": 0, "losses": [], "n_samples": 0, "seconds": 0.0}
        self._progress = prog
        first, losses, n_samples = int(prog["iter"]), list(prog["losses"]), int(prog["n_samples"])
        t0, pending = time.perf_counter() - float(prog["seconds"]), 0
        every = c.checkpoint_every_steps if self.ckpt is not None else 0
        saved_step = self.global_step  # never twice for one step (skipped steps keep it)
        if self.deferred:
            return self._train_epoch_deferred(prog, first, losses, n_samples, t0)
        for i, batch in enumerate(self.loader, start=first):
            batch = to_device(batch, self.device)
            with self._autocast():
                outputs = self.model(prepare_image(batch["image"]))
                loss, _parts = self.loss_fn(outputs, batch)
            value = float(loss.detach())
            self.step_losses.append(value)
            reason = self.guard.check(value) if c.guard.action != "none" else None
            if reason is not None:
                self._bad_step(reason, value)
                pending = 0
            else:
                (loss / c.accumulate).backward()
                losses.append(value)
                pending += 1
                if pending == c.accumulate:
                    self._optimizer_step()
                    pending = 0
            n_samples += int(batch["image"].shape[0])
            prog.update(iter=i + 1, losses=losses, n_samples=n_samples,
                        seconds=time.perf_counter() - t0)
            if (every and pending == 0 and self.global_step % every == 0
                    and self.global_step != saved_step and i + 1 < self.iters_per_epoch):
                self.ckpt.save_last(self.state_dict())  # type: ignore[union-attr]
                saved_step = self.global_step
            if self.on_step is not None:
                dt = time.perf_counter() - t0
                self.on_step({"epoch": self.epoch, "iter": i + 1,
                              "iters": self.iters_per_epoch, "step": self.global_step,
                              "loss": value, "lr": self.scheduler.get_last_lr()[0],
                              "samples_per_s": n_samples / max(dt, 1e-9)})
        if pending:
            self._optimizer_step()
        self._progress = None
        dt = time.perf_counter() - t0
        return {"epoch": self.epoch, "loss": statistics.fmean(losses) if losses else float("nan"),
                "lr": self.scheduler.get_last_lr()[0], "seconds": dt,
                "samples_per_s": n_samples / max(dt, 1e-9), "step": self.global_step}

    # -- deferred host reads (CUDA): nothing in a step waits for the device ---------------
    def _train_epoch_deferred(self, prog: dict[str, Any], first: int, losses: list[float],
                              n_samples: int, t0: float) -> dict[str, Any]:
        """`train_epoch` with the guard on the device: each step's loss and gradient norm stay
        device tensors; a bad step (non-finite loss or norm, or a loss above the spike limit)
        is skipped on the device (fused AdamW ``found_inf``, EMA gated); every `sync_every`
        batches one read brings the values to the host, where bad steps are recorded, logged
        and acted on (lr / rollback) as `_bad_step` does, and the step counters they
        advanced are taken back. With ``accumulate > 1`` a bad batch skips its whole window."""
        c = self.config
        every = c.checkpoint_every_steps if self.ckpt is not None else 0
        saved_step = self.global_step
        guard_on = c.guard.action != "none"
        self._limit = torch.tensor(self.guard.limit() if guard_on else math.inf,
                                   device=self.device)
        window_bad = torch.zeros((), dtype=torch.bool, device=self.device)
        pending = 0
        for i, batch in enumerate(self.loader, start=first):
            batch = to_device(batch, self.device)
            with self._autocast():
                outputs = self.model(prepare_image(batch["image"]))
                loss, _parts = self.loss_fn(outputs, batch)
            value = loss.detach().float()
            bad = ~torch.isfinite(value) | (value > self._limit) if guard_on else \
                torch.zeros((), dtype=torch.bool, device=self.device)
            window_bad = window_bad | bad
            (loss / c.accumulate).backward()
            pending += 1
            entry = {"iter": i + 1, "loss": value, "bad": bad, "norm": None, "stepped": False,
                     "n": int(batch["image"].shape[0]), "host_step": self.global_step,
                     "taken_back": self._taken_back}
            if pending == c.accumulate:
                entry.update(self._optimizer_step_deferred(window_bad))
                window_bad = torch.zeros_like(window_bad)
                pending = 0
            self._pending.append(entry)
            n_samples += entry["n"]
            if len(self._pending) >= self.sync_every:
                losses += self._read_pending(prog, t0)
            prog.update(iter=i + 1, losses=losses, n_samples=n_samples,
                        seconds=time.perf_counter() - t0)
            if (every and pending == 0 and self.global_step % every == 0
                    and self.global_step != saved_step and i + 1 < self.iters_per_epoch):
                losses += self._read_pending(prog, t0)
                prog.update(losses=losses)
                if self.global_step % every == 0 and self.global_step != saved_step:
                    self.ckpt.save_last(self.state_dict())  # type: ignore[union-attr]
                    saved_step = self.global_step
        if pending:
            self._pending[-1].update(self._optimizer_step_deferred(window_bad))
        losses += self._read_pending(prog, t0)
        self._progress = None
        dt = time.perf_counter() - t0
        return {"epoch": self.epoch, "loss": statistics.fmean(losses) if losses else float("nan"),
                "lr": self.scheduler.get_last_lr()[0], "seconds": dt,
                "samples_per_s": n_samples / max(dt, 1e-9), "step": self.global_step}

    def _optimizer_step_deferred(self, window_bad: Tensor) -> dict[str, Any]:
        """Clip, step (skipped on the device when the window or the norm is bad), schedule,
        EMA; the host counters advance as if the step was taken (see `_read_pending`)."""
        max_norm = self.config.grad_clip if self.config.grad_clip else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        skip = window_bad | ~torch.isfinite(norm)
        self.optimizer.found_inf = skip.float()     # fused AdamW: no update when 1
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.model, keep=~skip)
        return {"norm": norm.detach(), "stepped": True}

    def _read_pending(self, prog: dict[str, Any], t0: float) -> list[float]:
        """One host read of the pending batches' values: record them, handle the bad steps,
        update the device's spike limit; returns the good losses."""
        if not self._pending:
            return []
        pend, self._pending = self._pending, []
        vals = torch.stack([e["loss"] for e in pend]).cpu().tolist()
        bads = torch.stack([e["bad"] for e in pend]).cpu().tolist()
        norms = {j: e["norm"] for j, e in enumerate(pend) if e["norm"] is not None}
        norm_vals = dict(zip(norms, torch.stack(list(norms.values())).cpu().tolist())) \
            if norms else {}
        good: list[float] = []
        guard_on = self.config.guard.action != "none"
        window: list[int] = []
        for j, e in enumerate(pend):
            value = vals[j]
            self.step_losses.append(value)
            window.append(j)
            if not bads[j]:
                if guard_on:
                    self.guard.history.append(value)
                good.append(value)
            if e["stepped"]:
                norm = norm_vals.get(j, 0.0)
                bad_j = [k for k in window if bads[k]]
                if bad_j or not math.isfinite(norm):
                    k = bad_j[0] if bad_j else j
                    v = vals[k]
                    reason = (f"non-finite loss ({v})" if not math.isfinite(v) else
                              f"loss spike {v:.4g} > limit {self.config.guard.spike_factor:g} "
                              f"x running median" if bad_j else
                              f"non-finite gradient norm ({norm})")
                    # the device skipped the step: take back what the host advanced
                    # steps taken back since it was recorded were counted in host_step
                    step = pend[k]["host_step"] - (self._taken_back - pend[k]["taken_back"])
                    self._taken_back += 1
                    self.global_step -= 1
                    self.scheduler.last_iter -= 1
                    self.scheduler._apply()
                    if self.ema is not None:
                        self.ema.steps -= 1
                    self._bad_step(reason, v, step)
                window = []
            if self.on_step is not None:
                dt = time.perf_counter() - t0
                self.on_step({"epoch": self.epoch, "iter": e["iter"],
                              "iters": self.iters_per_epoch, "step": self.global_step,
                              "loss": value, "lr": self.scheduler.get_last_lr()[0],
                              "samples_per_s": prog["n_samples"] / max(dt, 1e-9)})
        if self._limit is not None:
            self._limit.fill_(self.guard.limit() if guard_on else math.inf)
        return good

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.val_fn is None:
            return {}
        model = self.eval_model()
        model.eval()
        with self._autocast():
            return dict(self.val_fn(model))

    def fit(self) -> list[dict[str, Any]]:
        """Train from ``self.epoch`` to ``config.epochs``; returns the per-epoch history."""
        c = self.config
        if self.ckpt is None and c.guard.action == "rollback":
            self._take_snapshot()
        while self.epoch < c.epochs:
            summary = self.train_epoch()
            last = self.epoch == c.epochs - 1
            if self.val_fn is not None and ((self.epoch + 1) % c.eval_every == 0 or last):
                metrics = self.evaluate()
                summary.update(metrics)
                self.log(f"epoch {self.epoch + 1}/{c.epochs}: loss {summary['loss']:.4g}, " +
                         ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            self.history.append(summary)
            self.epoch += 1
            if self.ckpt is not None and (self.epoch % c.checkpoint_every == 0 or last):
                self.ckpt.save(self.state_dict(), self.epoch, summary.get(c.best_metric))
            elif self._snapshot is not None:
                self._take_snapshot()
        return self.history

    def _take_snapshot(self) -> None:
        """In-memory copy of the weights for "rollback" when there is no checkpoint folder."""
        self._snapshot = copy.deepcopy({k: v for k, v in self.state_dict().items()
                                        if k in ("model", "optimizer", "scheduler", "ema")})
