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
    from rich.console import Console  # noqa: PLC0415

    from posefeed.integrations.dlc_config import BACKUP_SUFFIX, use_generators  # noqa: PLC0415

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
