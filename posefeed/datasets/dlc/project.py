"""A DeepLabCut project: ``config.yaml`` (bodyparts, individuals, skeleton) and its
``labeled-data/*/CollectedData_*`` files, loaded into one `PoseTable` (`load_dlc`).

Image paths are made relative to the project folder (bare file names are taken relative to the
annotation file's folder); a keypoint outside its image is set to ``v = 0`` with a line in
``table.problems``; the same image twice for one individual is an error.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import yaml

from posefeed.datasets.checks import clear_outside
from posefeed.datasets.dlc.boxes import dlc_boxes
from posefeed.datasets.dlc.files import read_dlc_file
from posefeed.datasets.dlc.instances import ProjectLayout, file_instances
from posefeed.datasets.errors import AnnotationError
from posefeed.datasets.flip import resolve_flip_pairs
from posefeed.datasets.images import check_on_bad_image, header_sizes, skipped_lines
from posefeed.datasets.table import PoseTable, bbox_from_keypoints


def read_config(path: str | Path) -> dict:
    """A DeepLabCut ``config.yaml`` as a dict."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise AnnotationError(f"cannot read config: {e}", file=path) from e
    if not isinstance(cfg, dict):
        raise AnnotationError("config.yaml is not a mapping", file=path)
    return cfg


def _names(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def project_layout(cfg: dict, path: Path) -> ProjectLayout:
    """The bodyparts and individuals a ``config.yaml`` (read from ``path``) declares."""
    if bool(cfg.get("multianimalproject")):
        return ProjectLayout(path, True, _names(cfg.get("multianimalbodyparts")),
                             _names(cfg.get("individuals")), _names(cfg.get("uniquebodyparts")))
    return ProjectLayout(path, False, _names(cfg.get("bodyparts")))


#: an absolute path: POSIX ``/...``, Windows ``C:/...`` or UNC ``//server/...`` (after ``\\``
#: became ``/``)
_ABSOLUTE = re.compile(r"^(/|[A-Za-z]:/)")
_LABELED = "labeled-data/"


def _fix_image_paths(images: list[str], path: Path, root: Path) -> tuple[list[str], list[str]]:
    """The index entries as paths relative to ``root``, and one problem line per file when
    some were rewritten.

    Bare file names are taken relative to the annotation file's folder. An absolute path
    (labelled on another machine, e.g. ``C:\\Users\\me\\proj\\labeled-data\\m4s1\\img0000.png``
    in older projects) that does not exist here is resolved as DeepLabCut resolves it: by its
    ``labeled-data/<video>/<image>`` tail, relative to the project folder."""
    try:
        folder = path.parent.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        folder = None
    out, rewritten = [], []
    for im in images:
        if "/" not in im and folder not in (None, "."):
            im = f"{folder}/{im}"
        elif _ABSOLUTE.match(im) and _LABELED in im and not Path(im).is_file():
            tail = im[im.rindex(_LABELED):]
            rewritten.append(im)
            im = tail
        out.append(im)
    problems = []
    if rewritten:
        problems.append(f"{path}: {len(rewritten)} image paths are absolute paths from "
                        f"another machine (e.g. {rewritten[0]!r}); resolved by their "
                        f"'labeled-data/...' tail under {root}, as DeepLabCut does")
    return out, problems


def _likelihood_note(df: pd.DataFrame, path: Path) -> list[str]:
    """A problem line when the file has a ``likelihood`` column: DeepLabCut writes one only
    in predictions (``*DLC_*.h5`` from analyze / evaluate), never in CollectedData labels."""
    if "likelihood" not in set(map(str, df.columns.get_level_values(-1))):
        return []
    return [f"{path}: has a 'likelihood' column, as DeepLabCut's predictions do (labels have "
            "none): the likelihood is ignored and every predicted x, y is used as a label, "
            "whatever its likelihood"]


def _twin_note(h5: Path, used: pd.DataFrame, key: str | None) -> list[str]:
    """When ``h5`` has a ``.csv`` twin (DeepLabCut writes both) whose contents differ, a
    problem line saying so and that the ``.h5`` is used (as DeepLabCut reads it)."""
    csv_path = h5.with_suffix(".csv")
    if h5.suffix.lower() != ".h5" or not csv_path.is_file():
        return []
    try:
        other = read_dlc_file(csv_path, key=key)
    except AnnotationError as e:
        return [f"{h5.parent}: using {h5.name}; its twin {csv_path.name} cannot be read "
                f"({str(e).splitlines()[0]})"]
    diffs = []
    only_h5 = used.index.difference(other.index)
    only_csv = other.index.difference(used.index)
    if len(only_h5) or len(only_csv):
        diffs.append(f"{len(only_h5)} rows only in the .h5, {len(only_csv)} only in the .csv"
                     + (f" (e.g. {list(only_h5[:1]) + list(only_csv[:1])})"))
    if list(map(tuple, used.columns)) != list(map(tuple, other.columns)):
        diffs.append("different columns")
    else:
        common = used.index.intersection(other.index)
        a = used.loc[common].to_numpy(np.float64)
        b = other.loc[common].to_numpy(np.float64)
        differ = ~(np.isclose(a, b, rtol=0, atol=1e-3) | (np.isnan(a) & np.isnan(b)))
        if differ.any():
            rows = common[differ.any(axis=1)]
            diffs.append(f"{int(differ.sum())} values differ by more than 0.001 px in "
                         f"{len(rows)} rows (e.g. {rows[0]!r})")
    if not diffs:
        return []
    return [f"{h5.parent}: {h5.name} and {csv_path.name} differ ({'; '.join(diffs)}); using "
            f"the .h5, as DeepLabCut does (the .csv is its export: re-export it, or delete the "
            "one that is wrong)"]


def odd_sized_frames(images: list[str], sizes: np.ndarray, keypoints: np.ndarray,
                     source: str | Path) -> list[str]:
    """One problem line per frame whose size differs from the other frames of its video
    folder (``labeled-data/<video>/``, frames of one video) while its labels fit theirs and
    not its own: the file was probably resized or replaced after labelling (otherwise its
    keypoints would only show up as "outside")."""
    folders = pd.Series([im.rsplit("/", 1)[0] if "/" in im else "" for im in images])
    lines = []
    for folder, idx in folders.groupby(folders).groups.items():
        idx = np.asarray(idx)
        wh = pd.Series([tuple(s) for s in sizes[idx].tolist()])
        counts = wh.value_counts()
        if len(counts) < 2:
            continue
        common = counts.index[0]
        for j in np.flatnonzero(wh.to_numpy() != pd.Series([common] * len(wh)).to_numpy()):
            i = idx[j]
            kp = keypoints[i]
            lab = kp[..., 2] > 0
            if not lab.any():
                continue
            x, y = kp[..., 0][lab], kp[..., 1][lab]
            w, h = sizes[i]
            fits_common = ((x >= -0.5) & (y >= -0.5) & (x <= common[0] - 0.5)
                           & (y <= common[1] - 0.5)).all()
            outside_own = ((x < -0.5) | (y < -0.5) | (x > w - 0.5) | (y > h - 0.5)).sum()
            if fits_common and outside_own:
                lines.append(
                    f"{source}: frame {images[i]!r} is {w}x{h}, but the other "
                    f"{int(counts.iloc[0])} frames of {folder or 'its folder'!r} are "
                    f"{common[0]}x{common[1]} and its labels fit {common[0]}x{common[1]} "
                    f"({int(outside_own)} labelled keypoints lie outside {w}x{h}): the file "
                    "was probably resized or replaced after labelling")
    return lines


def _project_files(project: Path) -> list[Path]:
    files = []
    for folder in sorted(p for p in (project / "labeled-data").glob("*") if p.is_dir()):
        h5 = sorted(folder.glob("CollectedData_*.h5"))
        files += h5 if h5 else sorted(folder.glob("CollectedData_*.csv"))
    return files


def _skeleton(cfg: dict, cfg_path: Path | None, bodyparts: list[str]) -> list[tuple[int, int]]:
    """The config's ``skeleton`` (pairs of bodypart names) as index pairs into ``bodyparts``."""
    skeleton = []
    for pair in cfg.get("skeleton") or []:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise AnnotationError(f"skeleton entry {pair!r} is not a pair", file=cfg_path,
                                  field="skeleton")
        a, b = map(str, pair)
        if a not in bodyparts or b not in bodyparts:
            raise AnnotationError(f"skeleton pair {pair!r} names an unknown bodypart",
                                  file=cfg_path, field="skeleton")
        skeleton.append((bodyparts.index(a), bodyparts.index(b)))
    return skeleton


def load_dlc(path: str | Path, *, flip_pairs: Iterable[tuple[int | str, int | str]] | None = None,
             root: str | Path | None = None, key: str | None = None,
             margin: float = 20.0, on_bad_image: str = "raise") -> PoseTable:
    """Load a DeepLabCut project folder (``config.yaml`` + every
    ``labeled-data/*/CollectedData_*.h5``, else ``.csv``) or one ``.h5`` / ``.csv`` file.

    Args:
        path: project folder or annotation file.
        flip_pairs: ``(left, right)`` pairs (indices or names); inferred from names if None.
        root: folder the image paths are relative to; default: the project folder (for a
            file inside ``<project>/labeled-data/<video>/``) or the file's folder.
        key: HDF5 key; default ``df_with_missing`` (or ``keypoints``, or the only table).
        margin: pixels added around the labelled keypoints for the instance boxes (and
            DeepLabCut's ``bbox_margin`` for the areas: `posefeed.datasets.dlc.boxes`).
        on_bad_image: "raise" (an `AnnotationError` listing every missing image or image
            whose header cannot be read) or "skip" (those images and their rows leave the
            table, listed in ``table.skipped_images`` and ``table.problems``; a warning is
            logged).
    """
    check_on_bad_image(on_bad_image)
    path = Path(path)
    if path.is_dir():
        project = path
        cfg_path = project / "config.yaml"
        if not cfg_path.is_file():
            raise AnnotationError("not a DeepLabCut project: no config.yaml", file=project)
        files = _project_files(project)
        if not files:
            raise AnnotationError("empty dataset: no labeled-data/*/CollectedData_*.h5 or .csv",
                                  file=project)
        base = Path(root) if root is not None else project
    elif path.is_file():
        files = [path]
        in_project = path.parent.parent.name == "labeled-data"
        project = path.parent.parent.parent if in_project else path.parent
        cfg_path = project / "config.yaml" if (project / "config.yaml").is_file() else None
        base = Path(root) if root is not None else project
    else:
        raise AnnotationError("path not found", file=path)
    cfg = read_config(cfg_path) if cfg_path is not None else None
    layout = project_layout(cfg, cfg_path) if cfg is not None and cfg_path is not None else None

    images: list[str] = []
    individuals: list[str] = []
    sources: list[Path] = []
    kps, sizes = [], []
    bodyparts: list[str] | None = None
    unique: list[str] = []
    problems: list[str] = []
    skipped: list[str] = []
    for f in files:
        df = read_dlc_file(f, key=key)
        problems += _likelihood_note(df, f) + _twin_note(f, df, key)
        found = file_instances(df, f, layout)
        ims, inds, kp, bps = found.images, found.individuals, found.keypoints, found.bodyparts
        if bodyparts is None:
            bodyparts, unique = bps, found.unique_bodyparts
        elif set(bps) != set(bodyparts):
            raise AnnotationError(f"bodyparts {bps} differ from {bodyparts} in {files[0]}",
                                  file=f, field="bodyparts")
        else:
            kp = kp[:, [bps.index(b) for b in bodyparts]]
        ims, rewritten = _fix_image_paths(ims, f, base)
        problems += rewritten
        found_sizes = header_sizes(base, ims, source=f, on_bad_image=on_bad_image)
        size_of = found_sizes.sizes
        if found_sizes.bad:
            rows: dict[str, list[str]] = {}
            for im, ind in zip(ims, inds):
                rows.setdefault(im, []).append(im if len(set(inds)) <= 1 else f"{im} ({ind})")
            problems += skipped_lines(f, base, found_sizes.bad, rows)
            skipped += [str(base / im) for im in found_sizes.bad]
            keep = [i for i, im in enumerate(ims) if im in size_of]
            ims, inds, kp = [ims[i] for i in keep], [inds[i] for i in keep], kp[keep]
        images += ims
        individuals += inds
        sources += [f] * len(ims)
        kps.append(kp)
        sizes += [size_of[im] for im in ims]
    assert bodyparts is not None
    if not images:
        raise AnnotationError("empty dataset: no labelled instances", file=path)
    kp_all = np.concatenate(kps, axis=0)
    size_arr = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    problems += odd_sized_frames(images, size_arr, kp_all.reshape(len(images), -1, 3), path)
    pairs = pd.Series(list(zip(images, individuals)))
    if pairs.duplicated().any():
        im, ind = pairs[pairs.duplicated()].iloc[0]
        raise AnnotationError(f"image appears twice for individual {ind!r}", file=path,
                              row=im, field="index")
    kp_clean = np.empty_like(kp_all)
    source_codes, source_list = pd.factorize(pd.Series([str(s) for s in sources]))
    for code, src in enumerate(source_list):
        sel = np.flatnonzero(source_codes == code)
        kp_clean[sel], probs = clear_outside(kp_all[sel], size_arr[sel],
                                             [images[i] for i in sel],
                                             [individuals[i] for i in sel], bodyparts, src)
        problems += probs
    skeleton = _skeleton(cfg, cfg_path, bodyparts) if cfg is not None else []
    return PoseTable.from_arrays(
        images, kp_clean, bodyparts, size_arr, individuals=individuals,
        bboxes=bbox_from_keypoints(kp_clean, size_arr, margin=margin),
        areas=dlc_boxes(kp_clean, size_arr, margin)[1],
        flip_pairs=resolve_flip_pairs(bodyparts, flip_pairs), skeleton=skeleton, root=base,
        problems=problems, unique_bodyparts=unique, skipped_images=skipped)
