"""The ``posefeed`` command line (typer). One module per command.

Every command module is imported whenever ``posefeed`` runs (`_register`, so that typer
knows all commands, even for ``--help``), so each command imports its heavy libraries
(torch, DALI, pandas, matplotlib, rich's widgets) inside its function: a lazy import marked
``# lazy: CLI start-up`` is one of those.
"""
from __future__ import annotations

import typer

from posefeed.cli.errors import PosefeedGroup

app = typer.Typer(cls=PosefeedGroup, add_completion=False, no_args_is_help=True,
                  help="posefeed: a GPU data layer for keypoint (pose-estimation) training.")


@app.callback()
def _root() -> None:
    """posefeed: a GPU data layer for keypoint (pose-estimation) training."""


def _register() -> None:
    """Import the command modules; each adds its command to ``app``."""
    # inside a function: each command module imports `app` from here (a top-level import
    # would be a cycle). One line per command module:
    from posefeed.cli import inspect  # noqa: F401
    from posefeed.cli import bench  # noqa: F401
    from posefeed.cli import show  # noqa: F401
    from posefeed.cli import train  # noqa: F401
    from posefeed.cli import demo  # noqa: F401
    from posefeed.cli import dlc  # noqa: F401


def main() -> None:
    _register()
    app()
