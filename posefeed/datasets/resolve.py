"""Turn a user's PATH (a DeepLabCut project / .h5 / .csv, a COCO .json, or ``synthetic``)
into a `PoseTable`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from posefeed.datasets.coco import load_coco
from posefeed.datasets.dlc import load_dlc
from posefeed.datasets.errors import AnnotationError
from posefeed.datasets.synthetic import SyntheticConfig, make_synthetic
from posefeed.datasets.table import PoseTable

SYNTHETIC = "synthetic"


def default_cache_dir() -> Path:
    """``$POSEFEED_CACHE``, else ``$XDG_CACHE_HOME/posefeed``, else ``~/.cache/posefeed``."""
    if os.environ.get("POSEFEED_CACHE"):
        return Path(os.environ["POSEFEED_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "posefeed"


def dataset_path(path: str | Path, *, out: str | Path | None = None,
                 **synthetic_kwargs: object) -> Path:
    """The dataset path for ``path``; ``"synthetic"`` generates the default synthetic set
    (parameters from ``synthetic_kwargs``, see `make_synthetic`) once into ``out`` or the
    cache folder ``<cache>/synthetic-<params>`` and returns its COCO JSON (which, unlike the
    DeepLabCut files beside it, keeps ``v = 1`` for occluded keypoints)."""
    if str(path) != SYNTHETIC:
        return Path(path)
    cfg = SyntheticConfig(**synthetic_kwargs)  # type: ignore[arg-type]
    target = Path(out) if out is not None else default_cache_dir() / cfg.tag()
    marker = target / "synthetic.json"
    coco = target / "coco.json"
    if marker.is_file() and coco.is_file():
        try:
            with open(marker, encoding="utf-8") as f:
                saved = json.load(f)
            saved["image_size"] = tuple(saved["image_size"])
            if SyntheticConfig(**saved) == cfg:
                return coco
        except (OSError, ValueError, TypeError, KeyError):
            pass
    return make_synthetic(target, cfg.n_frames, cfg.n_keypoints, cfg.max_instances,
                          cfg.image_size, cfg.seed, cfg.quality).coco_json


def load_dataset(path: str | Path, *, flip_pairs: Iterable[tuple[int | str, int | str]] | None = None,
                 category: str | int | None = None, on_bad_image: str = "raise",
                 **kwargs: object) -> PoseTable:
    """Load a DeepLabCut project folder, a CollectedData ``.h5`` / ``.csv``, a COCO ``.json``
    or ``"synthetic"`` (see `dataset_path`; ``kwargs`` go to it there, else to the
    loader). ``category``: the COCO keypoint category (name or id) when a file has several;
    an error for DeepLabCut data, which has none. ``on_bad_image``: "raise" or "skip" (images
    that are missing or whose header cannot be read leave the table; see `load_dlc`)."""
    if str(path) == SYNTHETIC:
        return load_coco(dataset_path(path, **kwargs), flip_pairs=flip_pairs, category=category,
                         on_bad_image=on_bad_image)
    p = Path(path)
    if category is not None and not (p.is_file() and p.suffix.lower() == ".json"):
        raise AnnotationError(f"category {category!r} given, but only COCO .json files have "
                              "categories", file=p, field="category")
    if p.is_dir():
        if (p / "config.yaml").is_file():
            return load_dlc(p, flip_pairs=flip_pairs, on_bad_image=on_bad_image,
                            **kwargs)  # type: ignore[arg-type]
        raise AnnotationError("folder is not a DeepLabCut project (no config.yaml)", file=p)
    if not p.exists():
        raise AnnotationError("dataset path not found", file=p)
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf", ".csv"):
        return load_dlc(p, flip_pairs=flip_pairs, on_bad_image=on_bad_image,
                        **kwargs)  # type: ignore[arg-type]
    if suffix == ".json":
        return load_coco(p, flip_pairs=flip_pairs, category=category,
                         on_bad_image=on_bad_image, **kwargs)  # type: ignore[arg-type]
    raise AnnotationError(f"unknown dataset type {suffix!r} (expected a DeepLabCut project "
                          "folder, .h5, .csv or a COCO .json)", file=p)


def resolve_dataset(path: str | Path, *, out: str | Path | None = None,
                    flip_pairs: Iterable[tuple[int | str, int | str]] | None = None,
                    category: str | int | None = None, on_bad_image: str = "raise",
                    **synthetic_kwargs: object) -> PoseTable:
    """The `PoseTable` for a command's PATH argument: a dataset path, or ``"synthetic"``
    (generated once into ``out`` or the cache, see `dataset_path`)."""
    return load_dataset(dataset_path(path, out=out, **synthetic_kwargs), flip_pairs=flip_pairs,
                        category=category, on_bad_image=on_bad_image)
