"""The DALI pipeline and the PyTorch-facing loader.

The names below load their modules on first use, so importing a light submodule (the
parameter code the feed's worker process runs: `posefeed.pipelines.fields`) does not import
DALI or torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AugmentConfig": "posefeed.pipelines.augment",
    "config_for_epoch": "posefeed.pipelines.augment",
    "rtmpose_schedule": "posefeed.pipelines.augment",
    "BadImageError": "posefeed.pipelines.errors",
    "CacheTooLarge": "posefeed.pipelines.errors",
    "PipelineError": "posefeed.pipelines.errors",
    "PoseLoader": "posefeed.pipelines.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'posefeed.pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
