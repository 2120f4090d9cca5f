"""Reading one DeepLabCut annotation file (``CollectedData_*.h5`` or ``.csv``) into its raw
DataFrame, both column layouts (3 levels single-animal, 4 levels multi-animal) and both index
forms (a path string or a ``("labeled-data", video, image)`` tuple).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from posefeed.datasets.errors import AnnotationError

SINGLE_LEVELS = ("scorer", "bodyparts", "coords")
MULTI_LEVELS = ("scorer", "individuals", "bodyparts", "coords")
H5_KEYS = ("df_with_missing", "keypoints")
UNIQUE = "single"                    # the individual that holds the unique bodyparts
DEFAULT_INDIVIDUAL = "individual0"   # posefeed's name for a single-animal file's animal


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


def _csv_text(path: Path) -> str:
    """The file as text: UTF-8, with or without the byte-order mark Excel's "CSV UTF-8"
    writes. Another encoding (Latin-1, Windows-1252 ...) is an `AnnotationError` naming the
    file, the line and the bytes, never a bare ``UnicodeDecodeError``."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise AnnotationError(
            f"not UTF-8 text: byte {data[e.start:e.start + 1]!r} at offset {e.start} (line "
            f"{line}) is not valid UTF-8, e.g. a Latin-1 or Windows-1252 file; save it as "
            "UTF-8 (Excel: 'CSV UTF-8'), as DeepLabCut writes it", file=path, row=line,
            field="encoding") from None


def _read_csv(path: Path) -> pd.DataFrame:
    """Parse a DeepLabCut CSV with the csv module, so the header depth is read explicitly and
    an all-NaN first data row is never taken for a header or dropped."""
    rows = [r for r in csv.reader(io.StringIO(_csv_text(path), newline=""))]
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
