"""The pipeline's exceptions (raised by the source, the cache and the loader)."""
from __future__ import annotations


class BadImageError(RuntimeError):
    """An image file that cannot be decoded (``file`` names it, ``rows`` lists the table rows
    that use it)."""

    def __init__(self, message: str, file: str | None = None, rows: list[int] | None = None):
        super().__init__(message)
        self.file = file
        self.rows = list(rows or [])


class PipelineError(RuntimeError):
    """The DALI pipeline failed on a batch whose image files all decode (a codec or another
    stage raised); the original exception is the ``__cause__``."""


class CacheTooLarge(MemoryError):
    """The decoded frames do not fit in the requested memory (the message names the bytes
    needed, available and kept free)."""


def rows_text(rows: list[int], limit: int = 8) -> str:
    """``"table rows [1, 2]"``: at most ``limit`` row numbers for an error message."""
    more = f" ... ({len(rows)} rows)" if len(rows) > limit else ""
    return f"table row{'s' if len(rows) != 1 else ''} {rows[:limit]}{more}"
