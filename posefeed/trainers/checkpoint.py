"""Atomic checkpoints: write a temp file in the same folder, flush + fsync, then
``os.replace`` it over the target (and fsync the folder), so a crash at any moment leaves
either the previous complete file or the new complete file, never a torn one."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger("posefeed.trainers")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or saved by a different run (``file``
    names it)."""

    def __init__(self, message: str, file: str | Path | None = None) -> None:
        super().__init__(message)
        self.file = None if file is None else str(file)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `atomic_save` (full pickle: our own files only)."""
    return torch.load(Path(path), map_location=map_location, weights_only=False)


class CheckpointManager:
    """Keeps ``epoch_XXXX.pt`` for the last ``keep_last`` saves, ``last.pt`` (newest) and
    ``best.pt`` (best ``metric``; lower is better unless ``higher_is_better``)."""

    PATTERN = re.compile(r"epoch_(\d+)\.pt$")

    def __init__(self, folder: str | Path, keep_last: int = 3,
                 higher_is_better: bool = False) -> None:
        self.folder = Path(folder)
        self.keep_last = max(int(keep_last), 1)
        self.higher_is_better = higher_is_better
        self.best: float | None = None

    def epochs(self) -> list[Path]:
        """Saved per-epoch files, oldest first."""
        found = [(int(m.group(1)), p) for p in self.folder.glob("epoch_*.pt")
                 if (m := self.PATTERN.search(p.name))]
        return [p for _, p in sorted(found)]

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def save(self, state: dict[str, Any], epoch: int, metric: float | None = None) -> Path:
        """Write ``epoch_{epoch}.pt`` and ``last.pt``; ``best.pt`` when ``metric`` improves;
        prune old epoch files."""
        state = dict(state, best_metric=self.best)
        if metric is not None and metric == metric and self._better(metric):
            self.best = float(metric)
            state["best_metric"] = self.best
            atomic_save(state, self.best_path)
        path = atomic_save(state, self.folder / f"epoch_{epoch:04d}.pt")
        atomic_save(state, self.last)
        for old in self.epochs()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def save_last(self, state: dict[str, Any]) -> Path:
        """Write only ``last.pt`` (a mid-epoch checkpoint: the epoch files stay per epoch)."""
        return atomic_save(dict(state, best_metric=self.best), self.last)

    def _better(self, metric: float) -> bool:
        if self.best is None:
            return True
        return metric > self.best if self.higher_is_better else metric < self.best

    def load_last(self, map_location: Any = "cpu",
                  warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
        """The newest loadable checkpoint (``last.pt``, else the newest epoch file), or None.
        Each newer file that exists but cannot be loaded is reported through ``warn`` (and
        the ``posefeed.trainers`` log), naming it, the error and the older file used instead;
        when none of the existing files loads, `CheckpointError` lists them."""
        unreadable: list[str] = []
        for p in [self.last, *reversed(self.epochs())]:
            if not p.exists():
                continue
            try:
                state = load_checkpoint(p, map_location)
                if not isinstance(state, dict) or "model" not in state:
                    raise ValueError("not a posefeed training checkpoint (no 'model' entry)")
            except Exception as e:  # noqa: BLE001 - try the next older one, and say so
                unreadable.append(f"{p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            for line in unreadable:
                msg = f"checkpoint {line}; resuming from the older {p.name} instead"
                log.warning(msg)
                if warn is not None:
                    warn(msg)
            self.best = state.get("best_metric", self.best)
            return state
        if unreadable:
            raise CheckpointError("no checkpoint in " + str(self.folder) + " can be loaded:\n"
                                  + "\n".join(f"  - {u}" for u in unreadable)
                                  + "\nremove them to start fresh", file=self.last)
        return None
