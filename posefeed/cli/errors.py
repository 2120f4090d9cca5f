"""One mechanism for every command: posefeed's own errors become a one-paragraph message on
stderr (naming the file, row and field the error carries) and exit code 2, never a traceback.

"posefeed's own errors" are its typed errors (`AnnotationError`, `BadImageError`,
`PipelineError`, `CacheTooLarge`, `CheckpointError`), a ``ValueError`` / ``RuntimeError`` /
``LookupError`` / ``OSError`` raised by posefeed's code itself (argument checks: the innermost frame of the
traceback is in the ``posefeed`` package), and an ``OSError`` that names a file (a missing or
unwritable path the user gave). Anything else is a bug and keeps its traceback.
``POSEFEED_DEBUG=1`` re-raises everything, with the traceback.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

#: exit code of a command stopped by bad data or bad arguments (click's usage errors use 2 too)
EXIT_BAD_INPUT = 2
#: at most this many lines of an error's message / problem list are printed
MAX_LINES = 12

PACKAGE_DIR = Path(__file__).resolve().parents[1]


#: where posefeed's typed errors live (module, names); imported only when an error happens
TYPED_ERRORS = (("posefeed.datasets.errors", ("AnnotationError",)),
                ("posefeed.pipelines", ("BadImageError", "CacheTooLarge", "PipelineError")),
                ("posefeed.trainers.checkpoint", ("CheckpointError",)))


def _typed_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module, names in TYPED_ERRORS:
        try:
            mod = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - e.g. DALI missing: those errors cannot happen
            continue
        found += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(found)


def raised_by_posefeed(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc``'s traceback is in posefeed's own code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        Path(tb.tb_frame.f_code.co_filename).resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return False
    return True


def is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` is bad data / bad arguments (a message), not a bug (a traceback)."""
    if isinstance(exc, _typed_errors()):
        return True
    if isinstance(exc, OSError) and exc.filename is not None:
        return True
    return isinstance(exc, (ValueError, RuntimeError, LookupError, OSError)) and \
        raised_by_posefeed(exc)


def describe(exc: BaseException) -> str:
    """The error as one paragraph: its message (cut to `MAX_LINES` lines), then where it is
    (file, table rows) when the error carries that and the message does not say it."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    lines = text.strip().splitlines() or [type(exc).__name__]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"  ... ({len(lines) - MAX_LINES} more lines)"]
    where = []
    file = getattr(exc, "file", None)
    if file and str(file) not in text:
        where.append(f"file {file}")
    rows: Any = getattr(exc, "rows", None)
    if rows and "row" not in text:
        where.append(f"table rows {list(rows)[:8]}")
    if where:
        lines[0] += f" ({', '.join(where)})"
    return "\n".join(lines)


def report(exc: BaseException) -> None:
    """Print ``exc`` as `describe` does, to stderr, as plain text (no rich markup)."""
    print(f"error: {describe(exc)}", file=sys.stderr)
    print("(set POSEFEED_DEBUG=1 to see the traceback)", file=sys.stderr)


class PosefeedGroup(TyperGroup):
    """The ``posefeed`` command group: runs the command and turns bad input into a message and
    exit code `EXIT_BAD_INPUT` (see the module docstring)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - sorted into message or traceback below
            if os.environ.get("POSEFEED_DEBUG") or not is_bad_input(e) or _is_click(e):
                raise
            report(e)
            raise typer.Exit(EXIT_BAD_INPUT) from None


def _is_click(exc: BaseException) -> bool:
    """Click's own usage errors (bad option values): click prints them with the usage line."""
    return any(c.__name__ in ("ClickException", "UsageError") for c in type(exc).__mro__)


def choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a `typer.BadParameter` naming the option."""
    if value not in choices:
        raise typer.BadParameter(f"{name} must be {' or '.join(choices)}; got {value!r}")
    return value
