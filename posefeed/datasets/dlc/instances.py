"""A raw DeepLabCut table (`read_dlc_file`) -> one keypoint array row per instance.

Single-animal files (3 column levels) give one instance per image, kept even when nothing is
labelled (a frame with no animal), named ``individual0``. Multi-animal files (4 levels) give
one instance per individual labelled in a frame (an individual with nothing labelled there is
not an instance), plus one ``"single"`` instance for the unique bodyparts. A labelled keypoint
gets ``v = 2``; a NaN keypoint, or one with only one of ``x``, ``y`` labelled, ``(0, 0, 0)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from posefeed.datasets.checks import check_finite
from posefeed.datasets.dlc.files import DEFAULT_INDIVIDUAL, UNIQUE
from posefeed.datasets.errors import AnnotationError


@dataclass(frozen=True)
class ProjectLayout:
    """What a project's ``config.yaml`` says the annotation files hold.

    Attributes:
        path: the ``config.yaml`` (named in errors).
        multianimal: ``multianimalproject``.
        bodyparts: ``bodyparts`` (single-animal) or ``multianimalbodyparts``.
        individuals: ``individuals`` (multi-animal; may be empty).
        unique_bodyparts: ``uniquebodyparts`` (multi-animal).
    """

    path: Path
    multianimal: bool
    bodyparts: list[str]
    individuals: list[str] = field(default_factory=list)
    unique_bodyparts: list[str] = field(default_factory=list)


@dataclass
class Instances:
    """One file's instances: ``keypoints (N, K, 3)`` float64 ``(x, y, v)`` in image pixels,
    with ``images[i]`` (index label as stored in the file) and ``individuals[i]`` per row;
    ``bodyparts`` in channel order (``unique_bodyparts`` last, multi-animal only)."""

    images: list[str]
    individuals: list[str]
    keypoints: np.ndarray
    bodyparts: list[str]
    unique_bodyparts: list[str]


def _disagree(found: Iterable[str], expected: Sequence[str]) -> str:
    found = list(found)
    extra = [b for b in found if b not in expected]
    missing = [b for b in expected if b not in found]
    return f"in the file but not in config.yaml: {extra}; in config.yaml but not in the file: " \
           f"{missing}"


def _keypoints(df: pd.DataFrame, path: Path, bodyparts: list[str],
               groups: list[tuple[str | None, list[str]]]) -> np.ndarray:
    """``(frames, len(groups), K, 3)`` float64: group ``a`` = ``(individual or None,
    its bodyparts)`` reads the columns ``([individual,] bodypart, x|y)``; ``inf`` raises."""
    cols = df.columns.droplevel(0)
    values = df.to_numpy(dtype=np.float64)
    check_finite(values, list(df.index), ["/".join(map(str, c)) for c in cols], path)
    lookup = {tuple(map(str, c)): j for j, c in enumerate(cols)}
    kp = np.zeros((len(df), len(groups), len(bodyparts), 3), dtype=np.float64)
    for a, (ind, parts) in enumerate(groups):
        for bp in parts:
            key = (bp,) if ind is None else (str(ind), bp)
            jx, jy = lookup.get(key + ("x",)), lookup.get(key + ("y",))
            if jx is None or jy is None:
                continue
            x, y = values[:, jx], values[:, jy]
            ok = np.isfinite(x) & np.isfinite(y)
            kb = bodyparts.index(bp)
            kp[:, a, kb, 0] = np.where(ok, x, 0.0)
            kp[:, a, kb, 1] = np.where(ok, y, 0.0)
            kp[:, a, kb, 2] = np.where(ok, 2.0, 0.0)
    return kp


def single_animal_instances(df: pd.DataFrame, path: Path,
                            layout: ProjectLayout | None = None) -> Instances:
    """A 3-level file: one instance per image (row), bodyparts in ``layout``'s order when
    a config is given (they must be the same set), else in file order."""
    if layout is not None and layout.multianimal:
        raise AnnotationError("wrong header depth: 3 column levels in a multi-animal "
                              f"project ({layout.path})", file=path, field="header")
    found = list(dict.fromkeys(df.columns.droplevel(0).get_level_values(0)))
    bodyparts = found
    if layout is not None:
        if set(found) != set(layout.bodyparts):
            raise AnnotationError(f"bodyparts disagree with config.yaml ({layout.path}): "
                                  + _disagree(found, layout.bodyparts), file=path,
                                  field="bodyparts")
        bodyparts = list(layout.bodyparts)
    kp = _keypoints(df, path, bodyparts, [(None, bodyparts)])
    return Instances(list(df.index), [DEFAULT_INDIVIDUAL] * len(df),
                     kp.reshape(len(df), len(bodyparts), 3), bodyparts, [])


def multi_animal_instances(df: pd.DataFrame, path: Path,
                           layout: ProjectLayout | None = None) -> Instances:
    """A 4-level file: one instance per (image, individual) with a labelled keypoint, in
    image then individual order, the ``"single"`` individual (unique bodyparts) last."""
    if layout is not None and not layout.multianimal:
        raise AnnotationError("wrong header depth: 4 column levels in a single-animal "
                              f"project ({layout.path})", file=path, field="header")
    cols = df.columns.droplevel(0)
    inds = list(dict.fromkeys(cols.get_level_values(0)))
    per = {i: list(dict.fromkeys(cols[cols.get_level_values(0) == i].get_level_values(1)))
           for i in inds}
    multi_found = list(dict.fromkeys(b for i in inds if i != UNIQUE for b in per[i]))
    unique = per.get(UNIQUE, [])
    if layout is not None:
        if set(multi_found) != set(layout.bodyparts) and multi_found:
            raise AnnotationError(f"multi-animal bodyparts disagree with config.yaml "
                                  f"({layout.path}): " + _disagree(multi_found, layout.bodyparts),
                                  file=path, field="bodyparts")
        if set(unique) != set(layout.unique_bodyparts) and unique:
            raise AnnotationError(f"unique bodyparts disagree with config.yaml ({layout.path}): "
                                  + _disagree(unique, layout.unique_bodyparts), file=path,
                                  field="bodyparts")
        unknown = [i for i in inds
                   if i != UNIQUE and layout.individuals and i not in layout.individuals]
        if unknown:
            raise AnnotationError(f"individuals {unknown} not in config.yaml ({layout.path})",
                                  file=path, field="individuals")
        multi_found, unique = list(layout.bodyparts), list(layout.unique_bodyparts)
    clash = set(multi_found) & set(unique)
    if clash:
        raise AnnotationError(f"bodyparts {sorted(clash)} are both multi-animal and unique",
                              file=path, field="bodyparts")
    bodyparts = multi_found + unique
    groups: list[tuple[str | None, list[str]]] = [(i, multi_found) for i in inds if i != UNIQUE]
    if UNIQUE in inds:
        groups.append((UNIQUE, unique))
    kp = _keypoints(df, path, bodyparts, groups)
    n_frames, a = len(df), len(groups)
    images = np.repeat(np.asarray(df.index, dtype=object), a)
    individuals = np.tile(np.asarray([str(i) for i, _ in groups], dtype=object), n_frames)
    kp = kp.reshape(n_frames * a, len(bodyparts), 3)
    keep = (kp[..., 2] > 0).any(axis=1)
    return Instances(list(images[keep]), list(individuals[keep]), kp[keep], bodyparts,
                     list(unique))


def file_instances(df: pd.DataFrame, path: Path, layout: ProjectLayout | None = None
                   ) -> Instances:
    """Dispatch on the header depth: 3 levels single-animal, 4 levels multi-animal."""
    if df.columns.nlevels == 3:
        return single_animal_instances(df, path, layout)
    return multi_animal_instances(df, path, layout)
