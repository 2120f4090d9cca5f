"""``posefeed demo --out DIR``: the end-to-end tour on a CPU-only machine, in a few minutes.

1. generate a synthetic single-animal dataset (``posefeed.datasets.make_synthetic``);
2. save a PNG grid of augmented samples (what ``posefeed show`` draws);
3. train a small heatmap model for a few minutes;
4. print the keypoint error on held-out frames beside the mean-pose baseline.
"""
from __future__ import annotations

from pathlib import Path

import typer

from posefeed.cli import app


def save_samples(data: Path, out: Path, console) -> None:
    """The ``posefeed show`` grid in frame mode (skipped with a note if it fails)."""
    try:
        # lazy: CLI start-up (see posefeed/cli/__init__.py)
        from posefeed.cli.show import show_command  # noqa: PLC0415

        show_command(path=str(data), out=out, stage=1, n=12, mode="frame", width=256,
                     height=192, seed=0, epoch=0, device="cpu", on_bad_image="raise",
                     category=None)
    except Exception as e:  # noqa: BLE001 - the demo goes on without the picture
        console.print(f"[yellow]could not draw the sample grid: {e}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="output folder"),
    epochs: int = typer.Option(40, help="training epochs"),
    frames: int = typer.Option(240, help="synthetic frames to generate"),
    keypoints: int = typer.Option(9, help="keypoints per figure"),
    device: str = typer.Option("auto", help="auto | cpu | gpu"),
    seed: int = typer.Option(0, help="dataset, split and training seed"),
) -> None:
    """Generate a synthetic dataset, show augmented samples, train a small model for a few
    minutes and compare its held-out keypoint error with the mean-pose baseline."""
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from rich.console import Console  # noqa: PLC0415

    from posefeed.cli.train import print_result, train_with_progress  # noqa: PLC0415
    from posefeed.datasets.synthetic import make_synthetic  # noqa: PLC0415
    from posefeed.trainers.models import ModelConfig  # noqa: PLC0415
    from posefeed.trainers.recipe import RunConfig  # noqa: PLC0415

    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "synthetic"
    console.rule("1. synthetic dataset")
    ds = make_synthetic(data, n_frames=frames, n_keypoints=keypoints, max_instances=1,
                        image_size=(320, 240), seed=seed)
    console.print(f"{len(ds.table)} frames, {keypoints} keypoints -> {ds.dlc_project}")
    console.rule("2. augmented samples")
    save_samples(ds.dlc_project, out / "samples.png", console)
    console.rule("3. training")
    rc = RunConfig(data=ds.dlc_project, out=out / "train", codec="heatmap", epochs=epochs,
                   batch_size=8, input_size=(160, 128), mode="frame", device=device,
                   seed=seed, eval_every=max(epochs // 3, 1), train_fraction=0.9,
                   model=ModelConfig(stride=16, widths=(32, 64, 96, 128)))
    result = train_with_progress(rc, console)
    console.rule("4. held-out keypoint error")
    print_result(console, result, out / "train")
    console.print(f"[bold]keypoint error on held-out frames: {result['rmse_px']:.1f} px "
                  f"(mean-pose baseline {result['mean_pose_rmse_px']:.1f} px)")
