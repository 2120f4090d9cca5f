"""posefeed: a GPU data layer for keypoint (pose-estimation) training.

The main names are importable from the top level; each loads its subpackage on first use,
so ``import posefeed`` (and the command line) stays light::

    from posefeed import PoseLoader, SimCC, load_dataset
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "PoseTable": "posefeed.datasets",
    "AnnotationError": "posefeed.datasets",
    "load_dataset": "posefeed.datasets",
    "load_dlc": "posefeed.datasets",
    "load_coco": "posefeed.datasets",
    "make_synthetic": "posefeed.datasets",
    "DLCHeatmap": "posefeed.targets",
    "GaussianHeatmap": "posefeed.targets",
    "UDPHeatmap": "posefeed.targets",
    "SimCC": "posefeed.targets",
    "PoseLoader": "posefeed.pipelines",
    "AugmentConfig": "posefeed.pipelines",
    "rtmpose_schedule": "posefeed.pipelines",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'posefeed' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
