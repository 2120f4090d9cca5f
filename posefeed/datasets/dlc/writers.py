"""Writing a `PoseTable` as DeepLabCut files: ``CollectedData_*.h5`` / ``.csv``
(`write_dlc`, single- or multi-animal header, path or tuple index) and ``config.yaml``
(`write_dlc_config`). DeepLabCut has no occlusion flag: ``v = 1`` is written as labelled.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from posefeed.datasets.dlc.files import DEFAULT_INDIVIDUAL, MULTI_LEVELS, SINGLE_LEVELS, UNIQUE
from posefeed.datasets.errors import AnnotationError
from posefeed.datasets.table import PoseTable, keypoint_columns


def is_multianimal(table: PoseTable) -> bool:
    """True unless every row is individual ``individual0`` with one row per image."""
    inds = set(table.individuals)
    return inds != {DEFAULT_INDIVIDUAL} or len(table.images) != len(table)


def dlc_frame(table: PoseTable, scorer: str = "posefeed", multianimal: bool | None = None,
              tuple_index: bool | None = None) -> pd.DataFrame:
    """The table as a DeepLabCut CollectedData DataFrame (NaN where ``v == 0``; ``v = 1``
    is written as labelled, since DeepLabCut has no occlusion flag)."""
    multi = is_multianimal(table) if multianimal is None else multianimal
    images = table.images
    row_of = {im: i for i, im in enumerate(images)}
    kp = table.frame[keypoint_columns(table.bodyparts)].to_numpy(np.float64).reshape(
        len(table), table.num_keypoints, 3)
    xy = np.where(kp[..., 2:3] > 0, kp[..., :2], np.nan)
    frame_rows = np.asarray([row_of[im] for im in table.frame[("image", "")]])
    if not multi:
        if len(images) != len(table):
            raise AnnotationError("several instances per image need the multi-animal format",
                                  field="individual")
        cols = pd.MultiIndex.from_tuples(
            [(scorer, bp, c) for bp in table.bodyparts for c in ("x", "y")], names=SINGLE_LEVELS)
        data = np.full((len(images), len(table.bodyparts) * 2), np.nan)
        data[frame_rows] = xy.reshape(len(table), -1)
    else:
        unique = [b for b in table.bodyparts if b in table.unique_bodyparts]
        multi_bps = [b for b in table.bodyparts if b not in table.unique_bodyparts]
        inds = [i for i in dict.fromkeys(table.individuals) if i != UNIQUE]
        tuples = [(scorer, i, bp, c) for i in inds for bp in multi_bps for c in ("x", "y")]
        if unique:
            tuples += [(scorer, UNIQUE, bp, c) for bp in unique for c in ("x", "y")]
        cols = pd.MultiIndex.from_tuples(tuples, names=MULTI_LEVELS)
        col_of = {t[1:]: j for j, t in enumerate(tuples)}
        data = np.full((len(images), len(tuples)), np.nan)
        seen = set()
        for r, (im_row, ind) in enumerate(zip(frame_rows, table.individuals)):
            if (im_row, ind) in seen:
                raise AnnotationError(f"individual {ind!r} twice in one image",
                                      row=images[im_row], field="individual")
            seen.add((im_row, ind))
            parts = unique if ind == UNIQUE else multi_bps
            for bp in parts:
                k = table.bodyparts.index(bp)
                data[im_row, col_of[(ind, bp, "x")]] = xy[r, k, 0]
                data[im_row, col_of[(ind, bp, "y")]] = xy[r, k, 1]
    split = [im.split("/") for im in images]
    use_tuple = all(len(p) == 3 for p in split) if tuple_index is None else tuple_index
    index = pd.MultiIndex.from_tuples([tuple(p) for p in split]) if use_tuple \
        else pd.Index(images, dtype=object)
    return pd.DataFrame(data, index=index, columns=cols)


def write_dlc(table: PoseTable, path: str | Path, *, scorer: str = "posefeed",
              multianimal: bool | None = None, tuple_index: bool | None = None) -> Path:
    """Write a CollectedData file: ``.h5`` (key ``df_with_missing``) or ``.csv`` by suffix.
    Image paths are written as stored (relative to ``table.root``)."""
    path = Path(path)
    df = dlc_frame(table, scorer, multianimal, tuple_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        df.to_hdf(path, key="df_with_missing", mode="w")
    elif suffix == ".csv":
        df.to_csv(path)
    else:
        raise AnnotationError(f"unknown DeepLabCut file type {suffix!r} (use .h5 or .csv)",
                              file=path)
    return path


def dlc_config(table: PoseTable, *, scorer: str = "posefeed", task: str = "posefeed",
               multianimal: bool | None = None) -> dict:
    """A minimal DeepLabCut ``config.yaml`` mapping describing ``table``."""
    multi = is_multianimal(table) if multianimal is None else multianimal
    cfg: dict = {"Task": task, "scorer": scorer, "date": "", "multianimalproject": multi,
                 "identity": False if multi else None, "project_path": "",
                 "engine": "pytorch", "video_sets": {}}
    if multi:
        inds = [i for i in dict.fromkeys(table.individuals) if i != UNIQUE]
        cfg.update(individuals=inds,
                   uniquebodyparts=list(table.unique_bodyparts),
                   multianimalbodyparts=[b for b in table.bodyparts
                                         if b not in table.unique_bodyparts],
                   bodyparts="MULTI!")
    else:
        cfg["bodyparts"] = list(table.bodyparts)
    cfg["skeleton"] = [[table.bodyparts[a], table.bodyparts[b]] for a, b in table.skeleton]
    cfg["TrainingFraction"] = [0.95]
    return cfg


def write_dlc_config(table: PoseTable, project: str | Path, **kwargs: object) -> Path:
    """Write ``<project>/config.yaml`` for ``table`` (see `dlc_config`)."""
    path = Path(project) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(dlc_config(table, **kwargs), f, sort_keys=False)  # type: ignore[arg-type]
    return path
