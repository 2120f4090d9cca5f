"""``posefeed dlc ...``: posefeed inside DeepLabCut 3 (see README, "Using posefeed with
DeepLabCut 3")."""
from __future__ import annotations

from pathlib import Path

import typer

from posefeed.cli import app

dlc_app = typer.Typer(no_args_is_help=True, help="posefeed inside DeepLabCut 3 (PyTorch engine).")
app.add_typer(dlc_app, name="dlc")


@dlc_app.command("use-generators")
def use_generators_cmd(
    path: Path = typer.Argument(..., help="a shuffle's train/pytorch_config.yaml"),
    undo: bool = typer.Option(False, "--undo", help="switch back to DeepLabCut's generators"),
) -> None:
    """Switch a shuffle's target generators to posefeed's drop-ins (or back with --undo).

    The first switch keeps a copy of the file (pytorch_config.yaml.posefeed-backup). DeepLabCut
    then needs `import posefeed.integrations.deeplabcut` in the script that trains, evaluates
    or analyses with this shuffle."""
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from rich.console import Console  # noqa: PLC0415 - CLI start-up stays light

    from posefeed.integrations.dlc_config import BACKUP_SUFFIX, use_generators  # noqa: PLC0415 - only this command needs it

    console = Console()
    switches = use_generators(path, undo=undo)  # bad input: posefeed's one error mechanism
    if not switches:
        console.print(f"{path}: nothing to switch (no {'posefeed' if undo else 'DeepLabCut heatmap'} "
                      "generators found)")
        return
    for s in switches:
        console.print(f"{s.where}: {s.old} -> {s.new}")
    if not undo:
        console.print(f"backup: {path}{BACKUP_SUFFIX}; add `import posefeed.integrations.deeplabcut` "
                      "to the script that calls deeplabcut.train_network / evaluate_network")


@dlc_app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="the DeepLabCut project's config.yaml"),
    shuffle: int = typer.Option(1, help="shuffle index"),
    trainingsetindex: int = typer.Option(0, help="training-set index"),
    epochs: int = typer.Option(None, help="epochs (default: the shuffle's config)"),
    batch_size: int = typer.Option(None, help="batch size (default: the shuffle's config)"),
    device: str = typer.Option(None, help="the model's torch device (default: the config's)"),
    ignore: list[str] = typer.Option([], "--ignore", help="a DeepLabCut augmentation option to "
                                     "leave out instead of stopping (repeatable), e.g. motion_blur"),
    no_augment: bool = typer.Option(False, "--no-augment", help="train without augmentation"),
    no_pretrained: bool = typer.Option(False, "--no-pretrained",
                                       help="build the backbone without ImageNet weights (offline)"),
    input_size: str = typer.Option(None, help="train input WxH (default: the config's crop)"),
    detector_epochs: int = typer.Option(None, help="top-down shuffles: the detector's epochs, "
                                        "trained first by DeepLabCut (0: not trained; default: "
                                        "the shuffle's config)"),
) -> None:
    """Train a DeepLabCut 3 shuffle with DeepLabCut's model, runner and snapshots, fed by
    posefeed's loaders and target generators (needs posefeed[deeplabcut])."""
    from rich.console import Console  # noqa: PLC0415 - CLI start-up stays light

    from posefeed.cli.train import parse_size  # noqa: PLC0415 - only this command needs it

    try:
        from posefeed.integrations.deeplabcut import train_network  # noqa: PLC0415 - DeepLabCut is optional and slow to import
    except ImportError as e:  # DeepLabCut missing: a message (exit 2), not a traceback
        raise RuntimeError(str(e)) from None

    loaders = train_network(config, shuffle=shuffle, trainingsetindex=trainingsetindex,
                            epochs=epochs, batch_size=batch_size, device=device,
                            pretrained=not no_pretrained, augment=not no_augment, ignore=ignore,
                            input_size=parse_size(input_size), detector_epochs=detector_epochs)
    losses = loaders.history.get("train_loss", [])
    Console().print(f"trained {len(losses)} epochs (train loss {losses[0]:.4g} -> {losses[-1]:.4g}); "
                    f"snapshots in {loaders.model_folder}" if losses else
                    f"no epochs trained; model folder {loaders.model_folder}")
    if loaders.detector_trained:
        Console().print("the detector was trained first, by DeepLabCut")
