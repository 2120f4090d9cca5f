"""Atomic checkpoints: write a temp file in the same folder, flush + fsync, then
``os.replace`` it over the target (and fsync the folder), so a crash at any moment leaves
either the previous complete file or the new complete file, never a torn one."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch


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

    def load_last(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The newest loadable checkpoint (``last.pt``, else the newest epoch file), or None."""
        for p in [self.last, *reversed(self.epochs())]:
            if p.exists():
                try:
                    state = load_checkpoint(p, map_location)
                except Exception:  # noqa: BLE001 - try the next older one
                    continue
                self.best = state.get("best_metric", self.best)
                return state
        return None
