"""``posefeed train PATH``: train a small built-in model, evaluate on a held-out split, write
metrics.json, DeepLabCut-format predictions and plots."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from posefeed.cli import app
from posefeed.cli.errors import choice


def parse_size(text: str | None) -> tuple[int, int] | None:
    """"320x240" -> (320, 240); None stays None."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise typer.BadParameter(f"expected WxH, e.g. 320x240; got {text!r}") from e
    if w < 1 or h < 1:
        raise typer.BadParameter(f"width and height must be >= 1; got {text!r}")
    return w, h


def progress_callbacks(console, total: int):
    """A rich progress bar (loss, lr, samples/s) and a log function printing above it."""
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress,  # noqa: PLC0415
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)

    progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4g}"),
                        TextColumn("lr {task.fields[lr]:.2e}"),
                        TextColumn("{task.fields[sps]:.0f} samples/s"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    task = progress.add_task("train", total=total, epoch=0, loss=float("nan"), lr=0.0, sps=0.0)

    def on_step(info: dict) -> None:
        progress.update(task, completed=info["epoch"] * info["iters"] + info["iter"],
                        epoch=info["epoch"] + 1, loss=info["loss"], lr=info["lr"],
                        sps=info["samples_per_s"])

    return progress, on_step, progress.console.print


def print_result(console, result: dict, out: Path) -> None:
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"held-out split ({result['test_instances']} instances)")
    t.add_column("metric")
    t.add_column("model", justify="right")
    t.add_column("mean-pose baseline", justify="right")
    t.add_row("RMSE (px)", f"{result['rmse_px']:.2f}", f"{result['mean_pose_rmse_px']:.2f}")
    t.add_row(f"RMSE, score >= {result['pcutoff']} (px)", f"{result['rmse_pcutoff_px']:.2f}", "")
    for key in ("pck_0.05", "pck_0.1", "oks_ap"):
        t.add_row(key, f"{result[key]:.3f}", "")
    console.print(t)
    console.print(f"{result['epochs']} epochs in {result['seconds']:.0f} s; wrote {out}/"
                  "metrics.json, predictions.h5/.csv, loss.png, metrics.png, checkpoints/")


@app.command()
def train(
    path: Path = typer.Argument(..., help="DLC project folder / .h5 / .csv, or COCO .json"),
    codec: str = typer.Option("heatmap", help="simcc | heatmap | dlc"),
    epochs: int = typer.Option(100, help="training epochs"),
    out: Path = typer.Option(Path("runs/train"), help="output folder"),
    device: str = typer.Option("auto", help="auto | cpu | gpu"),
    resume: bool = typer.Option(False, "--resume", help="continue from out/checkpoints"),
    checkpoint_steps: int = typer.Option(0, help="also checkpoint every N optimizer steps "
                                         "inside an epoch, so --resume continues mid-epoch "
                                         "(0: at epoch ends only)"),
    batch_size: int = typer.Option(8, help="batch size"),
    input_size: str = typer.Option(None, help="network input WxH (default: 192x256 "
                                   "topdown, the frame scaled to <= 320 px in frame mode)"),
    mode: str = typer.Option("auto", help="auto | frame | topdown"),
    lr: float = typer.Option(None, help="peak learning rate (default 4e-3)"),
    eval_every: int = typer.Option(5, help="evaluate every N epochs"),
    train_fraction: float = typer.Option(0.95, help="fraction of images for training"),
    seed: int = typer.Option(0, help="split, order and init seed"),
    heatmap_loss: str = typer.Option("bce", help="bce (DeepLabCut) | mse (MMPose)"),
    accumulate: int = typer.Option(1, "--accumulate", min=1, help="batches per optimizer "
                                   "step (a larger effective batch in the same memory)"),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bf16 autocast on CUDA (--no-amp: "
                             "float32 everywhere, e.g. after NaN losses)"),
    grad_clip: float = typer.Option(35.0, "--grad-clip", min=0.0, help="max gradient norm "
                                    "(0: no clipping)"),
    guard: str = typer.Option("skip", "--guard", help="on a NaN loss or a loss spike: skip "
                              "(drop the step) | lower_lr | rollback (reload the last "
                              "checkpoint, lower the lr) | none"),
    warmup_iters: Optional[int] = typer.Option(None, "--warmup-iters", min=0,
                                               help="lr warm-up in optimizer steps (default: "
                                               "the recipe's 1000, at most a tenth of the run)"),
    on_bad_image: str = typer.Option("raise", "--on-bad-image", help="raise: stop at an "
                                     "unreadable image, naming it | skip: leave it out and "
                                     "go on (each one logged)"),
    category: Optional[str] = typer.Option(None, "--category", help="COCO keypoint category "
                                           "(name or id) when the file has several"),
) -> None:
    """Train a small built-in model on PATH and evaluate it on a held-out split."""
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from rich.console import Console  # noqa: PLC0415

    # torch and the trainers load only when the command runs
    from posefeed.trainers.recipe import GUARD_ACTIONS, RunConfig  # noqa: PLC0415 - heavy

    choice("--codec", codec, ("simcc", "heatmap", "dlc"))
    choice("--device", device, ("auto", "cpu", "gpu"))
    choice("--mode", mode, ("auto", "frame", "topdown"))
    choice("--heatmap-loss", heatmap_loss, ("bce", "mse"))
    choice("--guard", guard, GUARD_ACTIONS)
    choice("--on-bad-image", on_bad_image, ("raise", "skip"))
    rc = RunConfig(data=path, out=out, codec=codec, epochs=epochs, batch_size=batch_size,
                   input_size=parse_size(input_size), mode=mode, device=device,
                   train_fraction=train_fraction, seed=seed, resume=resume,
                   checkpoint_steps=checkpoint_steps,
                   eval_every=eval_every, lr=lr, heatmap_loss=heatmap_loss,
                   accumulate=accumulate, amp=amp, grad_clip=grad_clip or None, guard=guard,
                   warmup_iters=warmup_iters, on_bad_image=on_bad_image, category=category)
    console = Console()
    result = train_with_progress(rc, console)   # errors: posefeed.cli.errors (exit code 2)
    print_result(console, result, Path(out))


def train_with_progress(rc, console) -> dict:
    """`recipe.run` with a live progress bar (total filled in once the loader exists)."""
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from posefeed.trainers.recipe import run  # noqa: PLC0415

    state: dict = {}

    def on_step(info: dict) -> None:
        if "progress" not in state:
            prog, cb, _ = progress_callbacks(console, rc.epochs * info["iters"])
            prog.start()
            state["progress"], state["cb"] = prog, cb
        state["cb"](info)

    def log(line: str) -> None:
        console.print(line)

    try:
        return run(rc, on_step=on_step, log=log)
    finally:
        if "progress" in state:
            state["progress"].stop()
