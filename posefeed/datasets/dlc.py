"""DeepLabCut annotations: ``CollectedData_*.h5`` / ``.csv`` files and project folders.

Single-animal files have three column levels ``(scorer, bodyparts, coords)``, multi-animal
files four ``(scorer, individuals, bodyparts, coords)`` with unique bodyparts under the
individual ``"single"``. Rows are images, indexed by a path string
(``"labeled-data/m4s1/img0000.png"``) or a 3-level tuple
(``("labeled-data", "m4s1", "img0000.png")``), relative to the project folder.

Conventions in the resulting `PoseTable`: a labelled keypoint gets ``v = 2`` (DeepLabCut has
no occlusion flag); a NaN keypoint is stored as ``x = y = 0, v = 0``, and so is a keypoint
with only one of ``x``, ``y`` labelled (a repair, not an error); ``inf`` is an error naming
the file, row and field; a keypoint outside its image is set to ``v = 0`` with a line in
``table.problems``. Single-animal rows are
kept even when nothing is labelled (a frame with no animal); in multi-animal files an
individual with nothing labelled in a frame is not an instance and its row is dropped.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import yaml

from posefeed.datasets.checks import check_finite, clear_outside
from posefeed.datasets.errors import AnnotationError
from posefeed.datasets.flip import resolve_flip_pairs
from posefeed.datasets.images import read_image_sizes
from posefeed.datasets.table import PoseTable, bbox_from_keypoints, keypoint_columns

SINGLE_LEVELS = ("scorer", "bodyparts", "coords")
MULTI_LEVELS = ("scorer", "individuals", "bodyparts", "coords")
H5_KEYS = ("df_with_missing", "keypoints")
UNIQUE = "single"
DEFAULT_INDIVIDUAL = "individual0"


# -- reading one file -------------------------------------------------------------------
def _read_h5(path: Path, key: str | None) -> pd.DataFrame:
    try:
        store = pd.HDFStore(path, mode="r")
    except Exception as e:  # noqa: BLE001 - any failure means "not an HDF5 table"
        raise AnnotationError(f"not a readable HDF5 file: {e}", file=path, field="key") from e
    try:
        keys = [k.lstrip("/") for k in store.keys()]
        if not keys:
            raise AnnotationError("the .h5 file holds no pandas table (DeepLabCut writes key "
                                  "'df_with_missing')", file=path, field="key")
        if key is not None:
            if key.lstrip("/") not in keys:
                raise AnnotationError(f"no table under key {key!r}; keys found: {keys}",
                                      file=path, field="key")
            chosen = key.lstrip("/")
        else:
            known = [k for k in H5_KEYS if k in keys]
            if known:
                chosen = known[0]
            elif len(keys) == 1:
                chosen = keys[0]
            else:
                raise AnnotationError(f"no table under key 'df_with_missing'; keys found: {keys}"
                                      " (pass key=)", file=path, field="key")
        obj = store.get(chosen)
    finally:
        store.close()
    if not isinstance(obj, pd.DataFrame):
        raise AnnotationError(f"key {chosen!r} holds a {type(obj).__name__}, not a table",
                              file=path, field="key")
    return obj


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> pd.DataFrame:
    """Parse a DeepLabCut CSV with the csv module, so the header depth is read explicitly and
    an all-NaN first data row is never taken for a header or dropped."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f)]
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows:
        raise AnnotationError("empty CSV file", file=path, row=0, field="header")
    level_names = set(MULTI_LEVELS)
    if not rows[0] or rows[0][0].strip().lower() not in level_names:
        raise AnnotationError(
            f"wrong header depth: first cell {rows[0][0] if rows[0] else ''!r} is not a column "
            f"level name; expected header rows {SINGLE_LEVELS} or {MULTI_LEVELS}",
            file=path, row=1, field="header")
    first = rows[0]
    n_idx = 1
    while n_idx < len(first) and first[n_idx].strip() == "":
        n_idx += 1

    def is_header(row: list[str]) -> bool:
        if row and row[0].strip().lower() in level_names:
            return True
        cells = [c.strip() for c in row[n_idx:]]
        return bool(cells) and all(c and not _is_number(c) for c in cells)

    depth = 0
    while depth < len(rows) and is_header(rows[depth]):
        depth += 1
    width = len(first)
    tuples = list(zip(*[r[n_idx:] for r in rows[:depth]]))
    if any(len(r) != width for r in rows[:depth]):
        raise AnnotationError("header rows have different lengths", file=path, row=1,
                              field="header")
    columns = pd.MultiIndex.from_tuples(tuples, names=[r[0].strip() for r in rows[:depth]])
    index, data = [], []
    for line, row in enumerate(rows[depth:], start=depth + 1):
        label = "/".join(c for c in row[:n_idx] if c != "")
        if len(row) != width:
            raise AnnotationError(f"line {line} has {len(row)} cells, the header {width}",
                                  file=path, row=label or line, field="cells")
        values = []
        for c, cell in enumerate(row[n_idx:]):
            cell = cell.strip()
            try:
                values.append(float(cell) if cell else np.nan)
            except ValueError:
                raise AnnotationError(f"line {line}: {cell!r} is not a number", file=path,
                                      row=label, field="/".join(map(str, tuples[c][1:]))) from None
        index.append(label)
        data.append(values)
    return pd.DataFrame(np.asarray(data, dtype=np.float64).reshape(len(data), len(tuples)),
                        index=pd.Index(index, dtype=object), columns=columns)


def read_dlc_file(path: str | Path, key: str | None = None) -> pd.DataFrame:
    """The raw DeepLabCut table: float64 values, ``(scorer, [individuals,] bodyparts,
    coords)`` columns, an index of image path strings (tuple indices joined with ``/``)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError("annotation file not found", file=path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        df = _read_h5(path, key)
    elif suffix == ".csv":
        df = _read_csv(path)
    else:
        raise AnnotationError(f"unknown DeepLabCut file type {suffix!r} (expected .h5 or .csv)",
                              file=path)
    nl = df.columns.nlevels
    names = tuple(str(n).lower() if n is not None else "" for n in df.columns.names)
    if nl not in (3, 4):
        raise AnnotationError(
            f"wrong header depth: {nl} column levels {list(df.columns.names)}, expected 3 "
            f"{SINGLE_LEVELS} (single animal) or 4 {MULTI_LEVELS} (multi-animal)",
            file=path, field="header")
    expected = SINGLE_LEVELS if nl == 3 else MULTI_LEVELS
    if any(n and n != e for n, e in zip(names, expected)):
        raise AnnotationError(f"column levels {list(df.columns.names)}, expected {expected}",
                              file=path, field="header")
    coords = set(map(str, df.columns.get_level_values(-1)))
    bad = sorted(coords - {"x", "y", "likelihood"})
    if bad:
        raise AnnotationError(f"unknown coords {bad} (expected x, y)", file=path,
                              field="coords")
    if isinstance(df.index, pd.MultiIndex):
        labels = ["/".join(str(p) for p in t if str(p) != "") for t in df.index]
    else:
        labels = [str(p).replace("\\", "/") for p in df.index]
    df = df.copy()
    df.index = pd.Index(labels, dtype=object)
    try:
        df = df.apply(pd.to_numeric, errors="raise").astype(np.float64)
    except (ValueError, TypeError) as e:
        for col in df.columns:
            num = pd.to_numeric(df[col], errors="coerce")
            bad_rows = num.isna() & df[col].notna()
            if bad_rows.any():
                raise AnnotationError(f"non-numeric value {df[col][bad_rows].iloc[0]!r}",
                                      file=path, row=df.index[bad_rows.to_numpy()][0],
                                      field="/".join(map(str, col[1:]))) from e
        raise AnnotationError(f"non-numeric values: {e}", file=path) from e
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise AnnotationError(f"{len(dup)} duplicated rows", file=path, row=dup[0],
                              field="index", problems=[f"duplicated row {d!r}" for d in dup])
    cols = df.columns.droplevel(0)
    if cols.duplicated().any():
        raise AnnotationError(f"duplicated column {cols[cols.duplicated()][0]}", file=path,
                              field="columns")
    return df


# -- config ----------------------------------------------------------------------------
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


def _config_layout(cfg: dict) -> tuple[bool, list[str], list[str], list[str]]:
    """``(multianimal, individuals, multi bodyparts, unique bodyparts)`` from a config."""
    multi = bool(cfg.get("multianimalproject"))
    if multi:
        return (True, _names(cfg.get("individuals")), _names(cfg.get("multianimalbodyparts")),
                _names(cfg.get("uniquebodyparts")))
    return False, [], _names(cfg.get("bodyparts")), []


# -- file -> instances -----------------------------------------------------------------
def _disagree(found: Iterable[str], expected: Sequence[str]) -> str:
    found = list(found)
    extra = [b for b in found if b not in expected]
    missing = [b for b in expected if b not in found]
    return f"in the file but not in config.yaml: {extra}; in config.yaml but not in the file: " \
           f"{missing}"


def _instances(df: pd.DataFrame, path: Path, cfg: dict | None, cfg_path: Path | None
               ) -> tuple[list[str], list[str], np.ndarray, list[str], list[str]]:
    """``(images, individuals, keypoints (N, K, 3), bodyparts, unique bodyparts)``."""
    nl = df.columns.nlevels
    cols = df.columns.droplevel(0)
    where = cfg_path or path
    if nl == 3:
        if cfg is not None and bool(cfg.get("multianimalproject")):
            raise AnnotationError("wrong header depth: 3 column levels in a multi-animal "
                                  f"project ({cfg_path})", file=path, field="header")
        found = list(dict.fromkeys(cols.get_level_values(0)))
        bodyparts = found
        if cfg is not None:
            expected = _names(cfg.get("bodyparts"))
            if set(found) != set(expected):
                raise AnnotationError(f"bodyparts disagree with config.yaml ({where}): "
                                      + _disagree(found, expected), file=path,
                                      field="bodyparts")
            bodyparts = expected
        ind_cols = [(None, bodyparts)]
        unique: list[str] = []
    else:
        if cfg is not None and not bool(cfg.get("multianimalproject")):
            raise AnnotationError("wrong header depth: 4 column levels in a single-animal "
                                  f"project ({cfg_path})", file=path, field="header")
        inds = list(dict.fromkeys(cols.get_level_values(0)))
        per = {i: list(dict.fromkeys(cols[cols.get_level_values(0) == i].get_level_values(1)))
               for i in inds}
        multi_found = list(dict.fromkeys(b for i in inds if i != UNIQUE for b in per[i]))
        unique = per.get(UNIQUE, [])
        if cfg is not None:
            _, c_inds, c_multi, c_unique = _config_layout(cfg)
            if set(multi_found) != set(c_multi) and multi_found:
                raise AnnotationError(f"multi-animal bodyparts disagree with config.yaml "
                                      f"({where}): " + _disagree(multi_found, c_multi),
                                      file=path, field="bodyparts")
            if set(unique) != set(c_unique) and unique:
                raise AnnotationError(f"unique bodyparts disagree with config.yaml ({where}): "
                                      + _disagree(unique, c_unique), file=path,
                                      field="bodyparts")
            unknown = [i for i in inds if i != UNIQUE and c_inds and i not in c_inds]
            if unknown:
                raise AnnotationError(f"individuals {unknown} not in config.yaml ({where})",
                                      file=path, field="individuals")
            multi_found, unique = c_multi, c_unique
        clash = set(multi_found) & set(unique)
        if clash:
            raise AnnotationError(f"bodyparts {sorted(clash)} are both multi-animal and unique",
                                  file=path, field="bodyparts")
        bodyparts = multi_found + unique
        ind_cols = [(i, multi_found) for i in inds if i != UNIQUE]
        if UNIQUE in inds:
            ind_cols.append((UNIQUE, unique))

    values = df.to_numpy(dtype=np.float64)
    check_finite(values, list(df.index), ["/".join(map(str, c)) for c in cols], path)
    lookup = {tuple(map(str, c)): j for j, c in enumerate(cols)}
    n_frames, k = len(df), len(bodyparts)
    kp = np.zeros((n_frames, len(ind_cols), k, 3), dtype=np.float64)
    for a, (ind, parts) in enumerate(ind_cols):
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
    names = [DEFAULT_INDIVIDUAL if i is None else str(i) for i, _ in ind_cols]
    images = np.repeat(np.asarray(df.index, dtype=object), len(ind_cols))
    individuals = np.tile(np.asarray(names, dtype=object), n_frames)
    kp = kp.reshape(n_frames * len(ind_cols), k, 3)
    if nl == 4:
        keep = (kp[..., 2] > 0).any(axis=1)
        images, individuals, kp = images[keep], individuals[keep], kp[keep]
    return list(images), list(individuals), kp, bodyparts, list(unique)


def _fix_image_paths(images: list[str], path: Path, root: Path) -> list[str]:
    """Bare file names are taken relative to the annotation file's folder."""
    try:
        folder = path.parent.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        folder = None
    out = []
    for im in images:
        if "/" not in im and folder not in (None, "."):
            im = f"{folder}/{im}"
        out.append(im)
    return out


# -- public ----------------------------------------------------------------------------
def _project_files(project: Path) -> list[Path]:
    files = []
    for folder in sorted(p for p in (project / "labeled-data").glob("*") if p.is_dir()):
        h5 = sorted(folder.glob("CollectedData_*.h5"))
        files += h5 if h5 else sorted(folder.glob("CollectedData_*.csv"))
    return files


def load_dlc(path: str | Path, *, flip_pairs: Iterable[tuple[int | str, int | str]] | None = None,
             root: str | Path | None = None, key: str | None = None,
             margin: float = 20.0) -> PoseTable:
    """Load a DeepLabCut project folder (``config.yaml`` + every
    ``labeled-data/*/CollectedData_*.h5``, else ``.csv``) or one ``.h5`` / ``.csv`` file.

    Args:
        path: project folder or annotation file.
        flip_pairs: ``(left, right)`` pairs (indices or names); inferred from names if None.
        root: folder the image paths are relative to; default: the project folder (for a
            file inside ``<project>/labeled-data/<video>/``) or the file's folder.
        key: HDF5 key; default ``df_with_missing`` (or ``keypoints``, or the only table).
        margin: pixels added around the labelled keypoints for the instance boxes.
    """
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

    images: list[str] = []
    individuals: list[str] = []
    sources: list[Path] = []
    kps, sizes = [], []
    bodyparts: list[str] | None = None
    unique: list[str] = []
    for f in files:
        df = read_dlc_file(f, key=key)
        ims, inds, kp, bps, uniq = _instances(df, f, cfg, cfg_path)
        if bodyparts is None:
            bodyparts, unique = bps, uniq
        elif set(bps) != set(bodyparts):
            raise AnnotationError(f"bodyparts {bps} differ from {bodyparts} in {files[0]}",
                                  file=f, field="bodyparts")
        else:
            kp = kp[:, [bps.index(b) for b in bodyparts]]
        ims = _fix_image_paths(ims, f, base)
        size_of = read_image_sizes(base, ims, source=f)
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
    pairs = pd.Series(list(zip(images, individuals)))
    if pairs.duplicated().any():
        im, ind = pairs[pairs.duplicated()].iloc[0]
        raise AnnotationError(f"image appears twice for individual {ind!r}", file=path,
                              row=im, field="index")
    problems: list[str] = []
    kp_clean = np.empty_like(kp_all)
    source_codes, source_list = pd.factorize(pd.Series([str(s) for s in sources]))
    for code, src in enumerate(source_list):
        sel = np.flatnonzero(source_codes == code)
        kp_clean[sel], probs = clear_outside(kp_all[sel], size_arr[sel],
                                             [images[i] for i in sel],
                                             [individuals[i] for i in sel], bodyparts, src)
        problems += probs
    skeleton = []
    if cfg is not None:
        for pair in cfg.get("skeleton") or []:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise AnnotationError(f"skeleton entry {pair!r} is not a pair", file=cfg_path,
                                      field="skeleton")
            a, b = map(str, pair)
            if a not in bodyparts or b not in bodyparts:
                raise AnnotationError(f"skeleton pair {pair!r} names an unknown bodypart",
                                      file=cfg_path, field="skeleton")
            skeleton.append((bodyparts.index(a), bodyparts.index(b)))
    return PoseTable.from_arrays(
        images, kp_clean, bodyparts, size_arr, individuals=individuals,
        bboxes=bbox_from_keypoints(kp_clean, size_arr, margin=margin),
        flip_pairs=resolve_flip_pairs(bodyparts, flip_pairs), skeleton=skeleton, root=base,
        problems=problems, unique_bodyparts=unique)


# -- writing ---------------------------------------------------------------------------
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
