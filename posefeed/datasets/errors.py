"""Typed errors for annotation problems: every message names the file, the row and the field."""
from __future__ import annotations

from pathlib import Path


class AnnotationError(ValueError):
    """Invalid annotations or images.

    ``file``, ``row`` and ``field`` say where; ``problems`` lists every problem found when
    several were collected at once (e.g. all missing images, not just the first).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: object = None,
        field: str | None = None,
        problems: list[str] | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.row = row
        self.field = field
        self.problems = list(problems or [])
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if row is not None:
            where.append(f"row {row!r}")
        if field is not None:
            where.append(f"field {field!r}")
        text = f"{message} ({', '.join(where)})" if where else message
        if self.problems:
            text += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)
