"""``posefeed show PATH --out grid.png``: a grid of augmented samples with keypoints, skeleton
and the summed target heatmap, to see that the augmentation is right."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional

import typer

from posefeed.cli import app
from posefeed.cli.errors import choice


def render_grid(batch: dict, skeleton: list[tuple[int, int]], out: Path, title: str,
                stride: int = 4) -> Path:
    """Draw ``batch`` (uint8 images, keypoints, ``heatmap``) into a PNG grid at ``out``."""
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after use("Agg")
    import numpy as np  # noqa: PLC0415

    img = batch["image"].cpu().numpy().transpose(0, 2, 3, 1)
    kp = batch["keypoints"].cpu().numpy()
    heat = batch["heatmap"].cpu().numpy().sum(axis=1) if "heatmap" in batch else None
    aff = batch["affine"].cpu().numpy()
    index = batch["index"].cpu().numpy()
    n = len(img)
    h, w = img.shape[1:3]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6 * w / max(w, h) + 0.4,
                                                  rows * 2.6 * h / max(w, h) + 0.6),
                             squeeze=False)
    colours = plt.get_cmap("hsv")(np.linspace(0, 1, kp.shape[2], endpoint=False))
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(img[i], extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        if heat is not None:
            ax.imshow(np.clip(heat[i], 0, 1), cmap="magma", alpha=0.45, vmin=0, vmax=1,
                      extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")
        for inst in kp[i]:
            vis = inst[:, 2] > 0
            for a, b in skeleton:
                if vis[a] and vis[b]:
                    ax.plot(inst[[a, b], 0], inst[[a, b], 1], "-", color="white", lw=1, alpha=0.8)
            ax.scatter(inst[vis, 0], inst[vis, 1], s=12, c=colours[vis], edgecolors="black",
                       linewidths=0.4, zorder=3)
        flipped = np.linalg.det(aff[i, :, :2]) < 0
        rows_i = [int(r) for r in index[i] if r >= 0]
        ax.set_title(f"row {rows_i[0] if len(rows_i) == 1 else rows_i}{' flip' if flipped else ''}",
                     fontsize=7)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    fig.suptitle(textwrap.fill(title, width=max(40, int(fig.get_figwidth() * 12))), fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@app.command("show")
def show_command(
    path: str = typer.Argument(..., help="DeepLabCut project folder, CollectedData .h5/.csv, "
                               "COCO .json, or 'synthetic'."),
    out: Path = typer.Option(Path("grid.png"), "--out", help="Output PNG."),
    stage: int = typer.Option(1, "--stage", min=0, max=2,
                              help="RTMPose stage 1 (strong) or 2 (weak); 0 = no augmentation."),
    n: int = typer.Option(16, "--n", min=1, help="Number of samples."),
    mode: str = typer.Option("topdown", "--mode", help="topdown or frame."),
    width: int = typer.Option(0, "--width", help="Input width (default 192 topdown, 256 frame)."),
    height: int = typer.Option(0, "--height", help="Input height (default 256)."),
    seed: int = typer.Option(0, "--seed"),
    epoch: int = typer.Option(0, "--epoch", help="Epoch whose order and parameters to show."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or gpu."),
    on_bad_image: str = typer.Option("raise", "--on-bad-image", help="raise: stop at an "
                                     "unreadable image, naming it | skip: draw others instead"),
    category: Optional[str] = typer.Option(None, "--category", help="COCO keypoint category "
                                           "(name or id) when the file has several."),
) -> None:
    """Draw a grid of augmented samples with keypoints, skeleton and the summed heatmap target."""
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from posefeed.datasets import resolve_dataset  # noqa: PLC0415
    from posefeed.pipelines import AugmentConfig, PoseLoader  # noqa: PLC0415
    from posefeed.targets import build_codec  # noqa: PLC0415

    choice("--mode", mode, ("topdown", "frame"))
    choice("--device", device, ("auto", "cpu", "gpu"))
    choice("--on-bad-image", on_bad_image, ("raise", "skip"))
    if width < 0 or height < 0:
        raise typer.BadParameter(f"--width and --height must be >= 0 (0: default); got "
                                 f"{width}x{height}")
    table = resolve_dataset(path, category=category, on_bad_image=on_bad_image)
    size = (width or (192 if mode == "topdown" else 256), height or 256)
    if stage == 0:
        cfg = AugmentConfig.none()
    elif stage == 1:
        cfg = AugmentConfig.rtmpose_stage1() if mode == "topdown" else AugmentConfig.frame_default()
    else:
        cfg = AugmentConfig.rtmpose_stage2() if mode == "topdown" else \
            AugmentConfig.frame_default().with_(rotate_factor=15.0, dropout_prob=0.0)
    heatmap = build_codec("heatmap", size)            # Gaussian, maps at stride 4
    loader = PoseLoader(table, [heatmap], mode=mode, input_size=size, batch_size=n,
                        schedule=cfg, device=device, seed=seed, drop_last=False,
                        image_dtype="uint8", on_bad_image=on_bad_image)
    loader.set_epoch(epoch)
    batch = next(iter(loader))
    # upsample the heatmap to input pixels for the overlay
    import torch  # noqa: PLC0415

    batch["heatmap"] = torch.nn.functional.interpolate(
        batch["heatmap"].float(), size=(size[1], size[0]), mode="bilinear", align_corners=False)
    title = f"{path}  mode={mode}  stage={stage}  input={size[0]}x{size[1]}  epoch={epoch}"
    render_grid(batch, table.skeleton, out, title)
    typer.echo(f"wrote {out} ({len(batch['image'])} samples)")
