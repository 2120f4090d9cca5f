"""Shared fixtures: the real datasets in ../shared/datasets and a small synthetic set."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
DLC_PROJECT = SHARED / "openfield-Pranav-2018-10-30"
COCO_JSON = SHARED / "coco-mini" / "test_coco.json"


def cuda_available() -> bool:
    try:
        import cupy  # noqa: PLC0415

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (CuPy and a GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def dlc_project() -> Path:
    if not DLC_PROJECT.exists():
        pytest.skip(f"{DLC_PROJECT} not found")
    return DLC_PROJECT


@pytest.fixture(scope="session")
def coco_json() -> Path:
    if not COCO_JSON.exists():
        pytest.skip(f"{COCO_JSON} not found")
    return COCO_JSON
