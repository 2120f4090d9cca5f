"""One training run end to end (what ``posefeed train`` and ``posefeed demo`` call):
load + split the dataset, build codec, loaders, model and `Trainer`, train, evaluate on the
held-out split (with the mean-pose baseline beside it), write metrics.json, DeepLabCut-format
predictions and plots."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from posefeed.datasets.resolve import load_dataset
from posefeed.pipelines.augment import AugmentConfig
from posefeed.pipelines.cache import CacheTooLarge
from posefeed.pipelines.loader import PoseLoader
from posefeed.targets import build_codec
from posefeed.trainers.losses import LossConfig, PoseLoss
from posefeed.trainers.models import ModelConfig, build_model, count_parameters
from posefeed.trainers.predict import evaluate, mean_pose_rmse, write_dlc_predictions
from posefeed.trainers.trainer import GuardConfig, Trainer, TrainConfig, resolve_device


@dataclass
class RunConfig:
    """A training run. ``input_size=None``: (192, 256) in topdown mode; in frame mode the
    frame scaled to at most 320 px on its long side, rounded to the backbone stride."""

    data: str | Path
    out: str | Path = "runs/train"
    codec: str = "heatmap"              # "heatmap" (Gaussian), "dlc" (+ locref), "simcc"
    epochs: int = 100
    batch_size: int = 8
    input_size: tuple[int, int] | None = None
    mode: str = "auto"                  # "frame", "topdown", "auto" (frame if 1 animal/image)
    device: str = "auto"
    train_fraction: float = 0.95
    seed: int = 0
    resume: bool = False
    checkpoint_steps: int = 0           # also a mid-epoch out/checkpoints/last.pt every N steps
    eval_every: int = 5
    pcutoff: float = 0.6
    lr: float | None = None             # None: the recipe's 4e-3
    heatmap_loss: str = "bce"           # "bce" (DeepLabCut) or "mse" (MMPose)
    scale_schedule: bool = True         # TrainConfig.scaled_for(total steps)
    accumulate: int = 1                 # batches per optimizer step
    amp: bool = True                    # bf16 autocast on CUDA
    grad_clip: float | None = 35.0      # max gradient norm (None or 0: no clipping)
    guard: str = "skip"                 # bad-step action: skip | lower_lr | rollback | none
    warmup_iters: int | None = None     # None: the recipe's, scaled to the run
    on_bad_image: str = "raise"         # "raise" | "skip" (loaders and load_dataset)
    category: str | int | None = None   # COCO keypoint category (name or id)
    model: ModelConfig = field(default_factory=ModelConfig)
    max_frame_side: int = 320


def load_table(path: str | Path, category: str | int | None = None,
               on_bad_image: str = "raise") -> Any:
    """Any dataset posefeed reads (DLC project / .h5 / .csv, COCO .json)."""
    return load_dataset(path, category=category, on_bad_image=on_bad_image)


GUARD_ACTIONS = ("skip", "lower_lr", "rollback", "none")


def check_run_config(rc: RunConfig) -> None:
    """Refuse impossible settings before any work, naming the setting (`ValueError`)."""
    checks = [
        (rc.codec in ("heatmap", "dlc", "simcc"), "codec", "heatmap, dlc or simcc"),
        (rc.mode in ("auto", "frame", "topdown"), "mode", "auto, frame or topdown"),
        (rc.heatmap_loss in ("bce", "mse"), "heatmap_loss", "bce or mse"),
        (rc.guard in GUARD_ACTIONS, "guard", " | ".join(GUARD_ACTIONS)),
        (rc.on_bad_image in ("raise", "skip"), "on_bad_image", "raise or skip"),
        (int(rc.epochs) >= 1, "epochs", ">= 1"),
        (int(rc.batch_size) >= 1, "batch_size", ">= 1"),
        (int(rc.accumulate) >= 1, "accumulate", ">= 1"),
        (rc.grad_clip is None or rc.grad_clip >= 0, "grad_clip", ">= 0 (0: no clipping)"),
        (rc.warmup_iters is None or int(rc.warmup_iters) >= 0, "warmup_iters", ">= 0"),
        (int(rc.eval_every) >= 1, "eval_every", ">= 1"),
        (0.0 < rc.train_fraction < 1.0, "train_fraction", "between 0 and 1 (exclusive)"),
        (rc.lr is None or rc.lr > 0, "lr", "> 0"),
        (rc.input_size is None or min(rc.input_size) >= 1, "input_size", "positive WxH"),
    ]
    bad = [f"{name} must be {rule}, got {getattr(rc, name)!r}" for ok, name, rule in checks
           if not ok]
    if str(rc.device) in ("gpu", "cuda") and not torch.cuda.is_available():
        bad.append(f"device {rc.device!r}: CUDA is not available on this machine (use auto or "
                   "cpu)")
    if bad:
        raise ValueError("; ".join(bad))


def choose_mode(table: Any, mode: str) -> str:
    if mode != "auto":
        return mode
    return "frame" if len(table.images) == len(table) else "topdown"


def default_input_size(table: Any, mode: str, stride: int, max_side: int = 320
                       ) -> tuple[int, int]:
    if mode == "topdown":
        return (192, 256)
    w, h = np.median(table.image_sizes, axis=0)
    s = min(1.0, max_side / max(w, h))
    return (max(stride, int(round(w * s / stride)) * stride),
            max(stride, int(round(h * s / stride)) * stride))


def build_loaders(rc: RunConfig, train: Any, test: Any, codec: Any, mode: str,
                  input_size: tuple[int, int],
                  log: Callable[[str], None] | None = None) -> tuple[Any, Any]:
    """(train loader, evaluation loader), both `PoseLoader`s; the training one keeps decoded
    frames cached when they fit (decode once): on a GPU pipeline in device memory, else in
    host memory, else not at all; ``log`` is told which. The evaluation one is unaugmented."""
    # a CUDA model gets a GPU pipeline when CuPy is there for the targets, else a CPU one
    dev = "auto" if resolve_device(rc.device).type == "cuda" else "cpu"
    common = dict(mode=mode, input_size=input_size, device=dev, seed=rc.seed,
                  on_bad_image=rc.on_bad_image)
    gpu = dev == "auto" and PoseLoader(train, codec, batch_size=rc.batch_size,
                                       **common).device == "gpu"
    tr, why = None, []
    for cache in (("device", "host") if gpu else ("host",)):
        try:
            tr = PoseLoader(train, codec, batch_size=rc.batch_size, cache=cache, **common)
            break
        except CacheTooLarge as e:
            why.append(f"cache={cache!r} does not fit: {e}")
    if tr is None:
        tr = PoseLoader(train, codec, batch_size=rc.batch_size, **common)
    if log is not None:
        log(f"training loader: {tr.device} pipeline, frame cache {tr.cache or 'none'}"
            + ("" if not why else " (" + "; ".join(why) + ")"))
    ev = PoseLoader(test, codec, batch_size=rc.batch_size, shuffle=False, drop_last=False,
                    schedule=AugmentConfig.none(), **common)
    return tr, ev


def run(rc: RunConfig, on_step: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] = print, table: Any = None) -> dict[str, Any]:
    """Train and evaluate; writes ``out/metrics.json``, ``out/predictions.h5/.csv``,
    ``out/loss.png``, ``out/metrics.png``, ``out/checkpoints/``. Returns the metrics."""
    t_start = time.perf_counter()
    check_run_config(rc)            # before anything is written
    out = Path(rc.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(rc.seed)
    table = load_table(rc.data, rc.category, rc.on_bad_image) if table is None else table
    if table.skipped_images:   # each also has a line in table.problems, with its rows
        more = " ..." if len(table.skipped_images) > 5 else ""
        log(f"{len(table.skipped_images)} unreadable images left out (on_bad_image='skip'): "
            + ", ".join(table.skipped_images[:5]) + more)
    train, test = table.split(rc.train_fraction, rc.seed)
    if len(test) == 0 or len(train) == 0:
        raise ValueError(f"split {rc.train_fraction} of {len(table.images)} images leaves "
                         "an empty train or test set")
    mode = choose_mode(table, rc.mode)
    input_size = rc.input_size or default_input_size(table, mode, rc.model.stride,
                                                     rc.max_frame_side)
    codec = build_codec(rc.codec, input_size, rc.model.heatmap_stride)
    train_loader, eval_loader = build_loaders(rc, train, test, codec, mode, input_size, log)
    with train_loader, eval_loader:   # closes both pipelines, even on an error
        model = build_model(rc.codec, table.num_keypoints, input_size, rc.model)
        iters = len(train_loader)
        if iters == 0:
            raise ValueError(f"batch size {rc.batch_size} is larger than the training set")
        cfg = TrainConfig(epochs=rc.epochs, eval_every=rc.eval_every, device=rc.device,
                          seed=rc.seed, checkpoint_every_steps=max(0, int(rc.checkpoint_steps)),
                          accumulate=rc.accumulate, amp=rc.amp, grad_clip=rc.grad_clip or None,
                          guard=GuardConfig(action=rc.guard))
        if rc.lr is not None:
            cfg = dataclasses.replace(cfg, lr=rc.lr)
        if rc.scale_schedule:
            cfg = cfg.scaled_for(rc.epochs * math.ceil(iters / cfg.accumulate))
        if rc.warmup_iters is not None:   # the user's value, not scaled
            cfg = dataclasses.replace(cfg, warmup_iters=rc.warmup_iters)
        logits = rc.codec in ("heatmap", "dlc") and rc.heatmap_loss == "bce"
        loss_fn = PoseLoss(LossConfig(heatmap=rc.heatmap_loss))

        def val_fn(m: torch.nn.Module) -> dict[str, float]:
            return evaluate(m, eval_loader, codec, test, rc.pcutoff, heatmap_logits=logits)[0]

        run_info = {"codec": rc.codec, "mode": mode, "input_size": list(input_size),
                    "bodyparts": list(table.bodyparts), "heatmap_loss": rc.heatmap_loss}
        trainer = Trainer(model, train_loader, cfg, loss_fn=loss_fn, val_fn=val_fn, out_dir=out,
                          on_step=on_step, log=log, run_info=run_info)
        log(f"{len(train)} train / {len(test)} test instances, {mode} mode, input {input_size}, "
            f"codec {rc.codec}, {count_parameters(model) / 1e6:.2f} M parameters, "
            f"device {trainer.device}, {iters} batches/epoch")
        if rc.resume and not trainer.resume():
            log("no checkpoint to resume from: starting fresh")
        trainer.fit()

        metrics, pred = evaluate(trainer.eval_model(), eval_loader, codec, test, rc.pcutoff,
                                 heatmap_logits=logits)
    baseline = mean_pose_rmse(train.keypoints, test.keypoints)
    result: dict[str, Any] = {
        **metrics, "mean_pose_rmse_px": baseline, "epochs": trainer.epoch,
        "seconds": time.perf_counter() - t_start,
        "train_seconds": float(sum(h["seconds"] for h in trainer.history)),
        "codec": rc.codec, "mode": mode, "input_size": list(input_size),
        "train_instances": len(train), "test_instances": len(test), "pcutoff": rc.pcutoff,
        "device": str(trainer.device), "parameters": count_parameters(model),
        "guard_events": trainer.events,
    }
    write_dlc_predictions(out / "predictions", test, pred)
    (out / "metrics.json").write_text(json.dumps(json_safe(result), indent=2))
    (out / "history.json").write_text(json.dumps(json_safe(trainer.history), indent=2))
    plot_history(trainer.history, trainer.step_losses, baseline, out)
    return result


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None (valid JSON), NumPy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def plot_history(history: list[dict[str, Any]], step_losses: list[float], baseline: float,
                 out: Path) -> None:
    """``loss.png`` (per batch and per epoch) and ``metrics.png`` (RMSE vs the mean-pose
    baseline, PCK, OKS AP) with matplotlib's Agg backend."""
    # matplotlib only when plots are written (slow to import); Agg before pyplot
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after use("Agg")

    fig, ax = plt.subplots(figsize=(7, 4))
    if step_losses:
        ax.plot(np.arange(1, len(step_losses) + 1), step_losses, lw=0.5, alpha=0.5,
                label="batch")
        per_epoch = len(step_losses) / max(len(history), 1)
        ax.plot([(i + 1) * per_epoch for i in range(len(history))],
                [h["loss"] for h in history], "o-", ms=3, label="epoch mean")
        pos = [v for v in step_losses if np.isfinite(v) and v > 0]
        if pos and max(pos) / min(pos) > 50:
            ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)

    evals = [h for h in history if "rmse_px" in h]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    if evals:
        ep = [h["epoch"] + 1 for h in evals]
        a1.plot(ep, [h["rmse_px"] for h in evals], "o-", label="model")
        a1.axhline(baseline, color="gray", ls="--", label="mean-pose baseline")
        for key in ("pck_0.05", "pck_0.1", "oks_ap"):
            a2.plot(ep, [h[key] for h in evals], "o-", label=key)
    a1.set_xlabel("epoch")
    a1.set_ylabel("test RMSE (px)")
    a1.legend()
    a2.set_xlabel("epoch")
    a2.set_ylim(0, 1)
    a2.legend()
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=100)
    plt.close(fig)
