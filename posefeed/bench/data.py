"""Benchmark data: resolve ``PATH`` (a dataset or ``synthetic``) to a `PoseTable`, the same for
every runner.

The parent resolves ``synthetic`` once (posefeed.datasets writes the images, into ``out`` or
the posefeed cache folder, and reuses them) and passes a real path to the runner processes,
so all runners read the same files. Small tables are tiled (rows repeated) to at least a few
batches, so an epoch is never shorter than a batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from posefeed.datasets import SYNTHETIC, dataset_path, load_dataset


def prepare_dataset(path: str | Path, out: str | Path | None = None, **synthetic: Any) -> str:
    """``path`` as given (checked to exist), or for ``"synthetic"`` the COCO json of the
    synthetic dataset (generated once; ``synthetic`` kwargs go to `make_synthetic`)."""
    if str(path) == SYNTHETIC:
        return str(dataset_path(SYNTHETIC, out=out, **synthetic))
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset {p} not found")
    return str(p)


def load_table(path: str | Path, category: str | int | None = None,
               on_bad_image: str = "raise") -> Any:
    """A `PoseTable` from a dataset path (COCO json, DLC project / .h5 / .csv); ``category``:
    the COCO keypoint category when the file has several; ``on_bad_image="skip"``: images
    whose header cannot be read leave the table (for every runner alike)."""
    return load_dataset(str(path), category=category, on_bad_image=on_bad_image)


def tile_table(table: Any, min_rows: int) -> Any:
    """The table with its rows repeated until it has at least ``min_rows`` rows."""
    n = len(table)
    if n == 0:
        raise ValueError("the dataset has no instances")
    if n >= min_rows:
        return table
    reps = -(-min_rows // n)
    return table.subset(np.tile(np.arange(n), reps))
