"""`PoseTable`: the validated, canonical form of keypoint annotations.

One row per instance (an animal or a person in one image). Columns are a two-level
MultiIndex:

- ``("image", "")``      image path relative to ``root`` (str, POSIX separators)
- ``("individual", "")`` individual name (``"single"`` for DLC unique bodyparts rows,
                          ``"individual0"`` ... otherwise where the source has none)
- ``("width", "")``, ``("height", "")``  image size in pixels (int)
- ``("bbox", "x"|"y"|"w"|"h")``  instance box, pixels, top-left corner + size (float)
- ``("area", "")``       instance area, pixels squared (COCO ``area``; DeepLabCut: its box's
                          ``max(1, w * h)``); NaN where the source has none
- ``(bodypart, "x"|"y"|"v")``    keypoints: pixels, origin at the centre of the top-left
                                  pixel; ``v`` as COCO (0 missing, 1 occluded, 2 visible)

The table knows no file format: `posefeed.datasets.dlc` and `posefeed.datasets.coco` read
files into it (`load_dlc`, `load_coco`) and write it out (`write_dlc`, `write_coco`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from posefeed.datasets.errors import AnnotationError

META_COLUMNS = ("image", "individual", "width", "height", "bbox", "area")
BBOX_FIELDS = ("x", "y", "w", "h")
COORDS = ("x", "y", "v")


def keypoint_columns(bodyparts: Sequence[str]) -> pd.MultiIndex:
    """The (bodypart, coord) columns in canonical order."""
    return pd.MultiIndex.from_tuples([(bp, c) for bp in bodyparts for c in COORDS])


def table_columns(bodyparts: Sequence[str]) -> pd.MultiIndex:
    meta = [("image", ""), ("individual", ""), ("width", ""), ("height", "")]
    meta += [("bbox", f) for f in BBOX_FIELDS] + [("area", "")]
    return pd.MultiIndex.from_tuples(meta + list(keypoint_columns(bodyparts)))


@dataclass
class PoseTable:
    """Validated keypoint annotations (see the module docstring for the columns).

    Attributes:
        frame: the DataFrame, one row per instance, RangeIndex.
        bodyparts: K keypoint names, in channel order.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        skeleton: (a, b) index pairs drawn as limbs.
        root: folder the ``image`` paths are relative to.
        problems: non-fatal problems found while loading (e.g. keypoints outside the
            image, set to ``v = 0``), one readable line each.
        unique_bodyparts: DeepLabCut multi-animal "unique" bodyparts (labelled on the
            ``"single"`` individual's rows); empty otherwise.
        skipped_images: image files left out at load (``on_bad_image="skip"``: missing, or
            a header that cannot be read), with their rows; each also has a ``problems`` line.
    """

    frame: pd.DataFrame
    bodyparts: list[str]
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    root: Path = Path(".")
    problems: list[str] = field(default_factory=list)
    unique_bodyparts: list[str] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bodyparts = [str(b) for b in self.bodyparts]
        self.flip_pairs = [(int(a), int(b)) for a, b in self.flip_pairs]
        self.skeleton = [(int(a), int(b)) for a, b in self.skeleton]
        self.root = Path(self.root)
        self.unique_bodyparts = [str(b) for b in self.unique_bodyparts]
        unknown = [b for b in self.unique_bodyparts if b not in self.bodyparts]
        if unknown:
            raise AnnotationError(f"unique bodyparts {unknown} are not bodyparts",
                                  field="unique_bodyparts")
        clash = set(self.bodyparts) & set(META_COLUMNS)
        if clash:
            raise AnnotationError(f"bodypart names {sorted(clash)} clash with reserved columns",
                                  field="bodyparts")
        if len(set(self.bodyparts)) != len(self.bodyparts):
            raise AnnotationError("duplicated bodypart names", field="bodyparts")
        k = len(self.bodyparts)
        for name, pairs in (("flip_pairs", self.flip_pairs), ("skeleton", self.skeleton)):
            for a, b in pairs:
                if not (0 <= a < k and 0 <= b < k):
                    raise AnnotationError(f"index pair ({a}, {b}) outside 0..{k - 1}", field=name)
        seen: dict[int, tuple[int, int]] = {}
        for a, b in self.flip_pairs:
            for i in (a, b):
                if i in seen or a == b:
                    raise AnnotationError(
                        f"flip pair ({a}, {b}) reuses keypoint {i} ({self.bodyparts[i]!r}); each "
                        f"keypoint may appear in one pair only (also in {seen.get(i, (a, b))})",
                        field="flip_pairs")
                seen[i] = (a, b)
        expected = table_columns(self.bodyparts)
        if ("area", "") not in self.frame.columns:     # a frame made before areas: unknown
            self.frame = self.frame.copy()
            self.frame[("area", "")] = np.nan
        missing = [c for c in expected if c not in self.frame.columns]
        if missing:
            raise AnnotationError(f"PoseTable frame lacks columns {missing[:6]}", field="frame")
        self.frame = self.frame[expected].reset_index(drop=True)
        self._validate()

    def _validate(self) -> None:
        """Invariants every consumer relies on (vectorised; the first violation raises,
        naming the row and the field): image sizes >= 1, finite boxes of positive width and
        height, ``v`` in {-1, 0, 1, 2} (-1: DeepLabCut's "ignore"), finite ``x, y`` where
        ``v > 0``, areas NaN (unknown) or finite > 0. A zero-area or NaN box would otherwise
        give NaN crops downstream."""
        if not len(self.frame):
            return
        sizes = self.frame[[("width", ""), ("height", "")]].to_numpy(np.float64)
        boxes = self.frame[[("bbox", f) for f in BBOX_FIELDS]].to_numpy(np.float64)
        k = len(self.bodyparts)
        kp = self.frame[keypoint_columns(self.bodyparts)].to_numpy(np.float64).reshape(-1, k, 3)
        area = self.frame[("area", "")].to_numpy(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):   # float32 casts of huge values
            boxes32 = boxes.astype(np.float32)
            xy32 = kp[..., :2].astype(np.float32)
            area32 = area.astype(np.float32)
        checks = [
            (~(sizes >= 1), [("width", "image width < 1"), ("height", "image height < 1")]),
            (~np.isfinite(boxes32),                             # the views are float32
             [(f"bbox.{f}", "non-finite box (in float32)") for f in BBOX_FIELDS]),
            (np.column_stack([np.zeros((len(boxes), 2), bool), ~(boxes32[:, 2:] > 0)]),
             [(f"bbox.{f}", "box of zero area (in float32)") for f in BBOX_FIELDS]),
            (~np.isin(kp[..., 2], (-1.0, 0.0, 1.0, 2.0)),
             [(f"{bp}.v", "visibility is not -1, 0, 1 or 2") for bp in self.bodyparts]),
            ((kp[..., 2] > 0) & ~np.isfinite(xy32).all(axis=2),
             [(f"{bp}.x/y", "non-finite coordinate of a labelled keypoint")
              for bp in self.bodyparts]),
            ((~np.isnan(area) & ~(np.isfinite(area32) & (area32 > 0)))[:, None],
             [("area", "instance area is not finite > 0 (in float32; NaN: unknown)")]),
        ]
        for bad, fields in checks:
            if bad.any():
                i, j = np.argwhere(bad)[0]
                field, what = fields[j]
                value = {"width": sizes[i, 0], "height": sizes[i, 1], "area": area[i]}.get(field)
                if field.startswith("bbox"):
                    value = boxes[i].tolist()
                elif "." in field:
                    value = kp[i, j].tolist()
                image = self.frame[("image", "")].iloc[i]
                raise AnnotationError(f"{what}: {value} (image {image!r})", row=int(i),
                                      field=field)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        images: Sequence[str],
        keypoints: np.ndarray,
        bodyparts: Sequence[str],
        image_sizes: np.ndarray | Sequence[tuple[int, int]],
        *,
        individuals: Sequence[str] | None = None,
        bboxes: np.ndarray | None = None,
        areas: np.ndarray | Sequence[float] | None = None,
        flip_pairs: Iterable[tuple[int, int]] = (),
        skeleton: Iterable[tuple[int, int]] = (),
        root: str | Path = ".",
        problems: Sequence[str] = (),
        unique_bodyparts: Sequence[str] = (),
        skipped_images: Sequence[str] = (),
    ) -> "PoseTable":
        """Build from arrays: ``keypoints (N, K, 3)``, ``image_sizes (N, 2)`` as (width, height),
        ``bboxes (N, 4)`` xywh (computed from the labelled keypoints when omitted),
        ``areas (N,)`` pixels squared (NaN or omitted: unknown)."""
        kp = np.asarray(keypoints, dtype=np.float64)
        n = len(images)
        if kp.ndim != 3 or kp.shape[0] != n or kp.shape[1] != len(bodyparts) or kp.shape[2] != 3:
            raise AnnotationError(
                f"keypoints shape {kp.shape} does not match (N={n}, K={len(bodyparts)}, 3)",
                field="keypoints")
        sizes = np.asarray(image_sizes, dtype=np.int64).reshape(n, 2)
        if individuals is None:
            individuals = ["individual0"] * n
        if bboxes is None:
            bboxes = bbox_from_keypoints(kp, sizes)
        bboxes = np.asarray(bboxes, dtype=np.float64).reshape(n, 4)
        data: dict[tuple[str, str], object] = {
            ("image", ""): [str(Path(p).as_posix()) for p in images],
            ("individual", ""): [str(i) for i in individuals],
            ("width", ""): sizes[:, 0],
            ("height", ""): sizes[:, 1],
        }
        for j, f in enumerate(BBOX_FIELDS):
            data[("bbox", f)] = bboxes[:, j]
        data[("area", "")] = (np.full(n, np.nan) if areas is None
                              else np.asarray(areas, dtype=np.float64).reshape(n))
        for k, bp in enumerate(bodyparts):
            for c, coord in enumerate(COORDS):
                data[(bp, coord)] = kp[:, k, c]
        frame = pd.DataFrame(data, columns=table_columns(bodyparts))
        return cls(frame, list(bodyparts), list(flip_pairs), list(skeleton), Path(root),
                   list(problems), list(unique_bodyparts), [str(p) for p in skipped_images])

    # -- views --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    @property
    def num_keypoints(self) -> int:
        return len(self.bodyparts)

    @property
    def keypoints(self) -> np.ndarray:
        """``(N, K, 3)`` float32 ``(x, y, v)`` in image pixels."""
        cols = keypoint_columns(self.bodyparts)
        arr = self.frame[cols].to_numpy(dtype=np.float32)
        return arr.reshape(len(self), self.num_keypoints, 3)

    @property
    def bboxes(self) -> np.ndarray:
        """``(N, 4)`` float32 boxes ``(x, y, w, h)`` in image pixels."""
        return self.frame[[("bbox", f) for f in BBOX_FIELDS]].to_numpy(dtype=np.float32)

    @property
    def areas(self) -> np.ndarray:
        """``(N,)`` float32 instance areas in image pixels squared, NaN where unknown."""
        return self.frame[("area", "")].to_numpy(dtype=np.float32)

    @property
    def image_sizes(self) -> np.ndarray:
        """``(N, 2)`` int64 ``(width, height)`` of each row's image."""
        return self.frame[[("width", ""), ("height", "")]].to_numpy(dtype=np.int64)

    @property
    def images(self) -> list[str]:
        """Unique image paths (relative to ``root``), in first-appearance order."""
        return list(dict.fromkeys(self.frame[("image", "")].tolist()))

    @property
    def individuals(self) -> list[str]:
        return self.frame[("individual", "")].tolist()

    def image_path(self, image: str) -> Path:
        return self.root / image

    def frames(self) -> list[np.ndarray]:
        """Row indices grouped by image, in ``images`` order (for whole-frame training)."""
        codes, _ = pd.factorize(self.frame[("image", "")])
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        return np.split(order, bounds)

    def subset(self, rows: Sequence[int] | np.ndarray) -> "PoseTable":
        """A new table with the given rows (same bodyparts, pairs, root)."""
        frame = self.frame.iloc[np.asarray(rows, dtype=np.int64)].reset_index(drop=True)
        return PoseTable(frame, list(self.bodyparts), list(self.flip_pairs), list(self.skeleton),
                         self.root, list(self.problems), list(self.unique_bodyparts),
                         list(self.skipped_images))

    def split(self, train_fraction: float = 0.95, seed: int = 0
              ) -> tuple["PoseTable", "PoseTable"]:
        """``(train, test)`` split by image, like DeepLabCut's shuffles (same rule, not its
        RNG stream): the unique images are permuted with ``seed`` (NumPy ``default_rng``) and
        the first ``round(train_fraction * n_images)`` go to train. All instances of an image
        land on the same side; rows keep their table order."""
        if not 0.0 <= float(train_fraction) <= 1.0:
            raise ValueError(f"train_fraction {train_fraction} outside [0, 1]")
        images = self.images
        n_train = int(round(float(train_fraction) * len(images)))
        perm = np.random.default_rng(seed).permutation(len(images))
        train_images = {images[i] for i in perm[:n_train]}
        in_train = self.frame[("image", "")].isin(sorted(train_images)).to_numpy()
        return self.subset(np.flatnonzero(in_train)), self.subset(np.flatnonzero(~in_train))


def bbox_from_keypoints(keypoints: np.ndarray, image_sizes: np.ndarray,
                        margin: float = 20.0) -> np.ndarray:
    """Boxes ``(N, 4)`` xywh around the labelled (``v > 0``) keypoints, grown by ``margin``
    pixels on each side and clipped to the image; the whole image where nothing is labelled.
    A box is at least 1 pixel wide and high (one keypoint with ``margin=0`` would otherwise
    give a box of zero area).

    Pixel centres are integer coordinates, so the image spans ``[-0.5, size - 0.5]``.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    labelled = kp[..., 2] > 0
    big = np.finfo(np.float64).max
    x = np.where(labelled, kp[..., 0], np.nan)
    y = np.where(labelled, kp[..., 1], np.nan)
    has = labelled.any(axis=1)
    with np.errstate(all="ignore"):
        x0 = np.where(has, np.nanmin(np.where(labelled, x, big), axis=1), -0.5)
        x1 = np.where(has, np.nanmax(np.where(labelled, x, -big), axis=1), sizes[:, 0] - 0.5)
        y0 = np.where(has, np.nanmin(np.where(labelled, y, big), axis=1), -0.5)
        y1 = np.where(has, np.nanmax(np.where(labelled, y, -big), axis=1), sizes[:, 1] - 0.5)
    m = np.where(has, margin, 0.0)
    x0 = np.clip(x0 - m, -0.5, sizes[:, 0] - 0.5)
    y0 = np.clip(y0 - m, -0.5, sizes[:, 1] - 0.5)
    x1 = np.clip(x1 + m, -0.5, sizes[:, 0] - 0.5)
    y1 = np.clip(y1 + m, -0.5, sizes[:, 1] - 0.5)
    x0 = np.minimum(x0, sizes[:, 0] - 1.5)      # >= -0.5 for a 1-pixel image
    y0 = np.minimum(y0, sizes[:, 1] - 1.5)
    x1 = np.maximum(x1, x0 + 1.0)
    y1 = np.maximum(y1, y0 + 1.0)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
