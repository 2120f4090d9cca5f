"""COCO person-keypoints style annotations (one JSON file).

Like MMPose, crowd instances (``iscrowd = 1``) and instances with no labelled keypoint (all
``v == 0``) are dropped. Keypoint names and the skeleton come from the keypoint category
(the COCO skeleton is 1-based; `PoseTable` stores it 0-based). Individuals are named
``individual0``, ``individual1``... in annotation order within each image. Keypoints with
``v == 0`` are stored as ``(0, 0, 0)``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from posefeed.datasets.checks import clear_outside
from posefeed.datasets.errors import AnnotationError
from posefeed.datasets.flip import resolve_flip_pairs
from posefeed.datasets.images import check_on_bad_image, header_sizes, skipped_lines
from posefeed.datasets.table import (BBOX_FIELDS, PoseTable, bbox_from_keypoints,
                                     keypoint_columns)


def _num(value: object, *, file: Path, row: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnnotationError(f"{value!r} is not a number", file=file, row=row, field=field)
    if not math.isfinite(value):
        raise AnnotationError(f"non-finite value {value!r}", file=file, row=row, field=field)
    return float(value)


def _category(data: dict, path: Path, category: str | int | None) -> dict:
    """The keypoint category to load. ``category`` (a name or an id) picks one; else the
    only keypoint category; else, of several, the only one that has annotations. Several
    with annotations (or none) is refused, naming them and how to choose."""
    cats = [c for c in data.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")]
    if not cats:
        raise AnnotationError("no category with keypoints", file=path, field="categories")
    counts: dict[object, int] = {}
    for ann in data.get("annotations") or []:
        if isinstance(ann, dict):
            counts[ann.get("category_id")] = counts.get(ann.get("category_id"), 0) + 1

    def listing(cs: list[dict]) -> str:
        return ", ".join(f"{c.get('name')!r} (id {c.get('id')!r}, "
                         f"{counts.get(c.get('id'), 0)} annotations)" for c in cs)

    how = ("choose one with load_coco(..., category=NAME or ID), or --category NAME|ID on "
           "the posefeed command line")
    if category is not None:
        chosen = [c for c in cats if c.get("id") == category or str(c.get("name")) == str(category)
                  or (isinstance(category, str) and category.isdigit()
                      and c.get("id") == int(category))]
        if not chosen:
            raise AnnotationError(f"no keypoint category {category!r}; the file has "
                                  f"{listing(cats)}", file=path, field="categories")
        return chosen[0]
    if len(cats) == 1:
        return cats[0]
    used = [c for c in cats if counts.get(c.get("id"), 0) > 0]
    if len(used) == 1:
        return used[0]
    what = "several keypoint categories have annotations" if used else \
        "several keypoint categories and none has annotations"
    raise AnnotationError(f"{what}: {listing(used or cats)}; {how}", file=path,
                          field="categories")


def load_coco(json_path: str | Path, image_root: str | Path | None = None, *,
              flip_pairs: Iterable[tuple[int | str, int | str]] | None = None,
              category: str | int | None = None,
              category_id: int | None = None, on_bad_image: str = "raise") -> PoseTable:
    """Load a COCO keypoints JSON. ``image_root`` defaults to the JSON's folder; image sizes
    come from the image file headers (a size that differs from the JSON's is a problem
    line). ``flip_pairs``: ``(left, right)`` indices or names; inferred from names if None.
    ``category`` (name or id; ``category_id`` is the older spelling): which keypoint category
    to load when the file has several (default: the only one with annotations).
    ``on_bad_image``: "raise" (one `AnnotationError` listing every missing image or image
    whose header cannot be read) or "skip" (those images and their annotations leave the
    table, listed in ``table.skipped_images`` and ``table.problems``; a warning is logged)."""
    check_on_bad_image(on_bad_image)
    path = Path(json_path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise AnnotationError("annotation file not found", file=path) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"not valid JSON: {e}", file=path) from e
    if not isinstance(data, dict):
        raise AnnotationError("top level is not an object", file=path)
    root = Path(image_root) if image_root is not None else path.parent
    cat = _category(data, path, category if category is not None else category_id)
    names = [str(n) for n in cat["keypoints"]]
    k = len(names)
    skeleton = []
    for s, pair in enumerate(cat.get("skeleton") or []):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(p, int) and 1 <= p <= k for p in pair)):
            raise AnnotationError(f"skeleton entry {pair!r} is not a pair of 1-based indices "
                                  f"in 1..{k}", file=path, row=f"skeleton[{s}]",
                                  field="skeleton")
        skeleton.append((pair[0] - 1, pair[1] - 1))

    images: dict[object, dict] = {}
    for i, im in enumerate(data.get("images") or []):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise AnnotationError("image entry lacks id or file_name", file=path,
                                  row=f"images[{i}]", field="file_name")
        if im["id"] in images:
            raise AnnotationError(f"duplicated image id {im['id']!r} (also "
                                  f"{images[im['id']].get('file_name')!r})", file=path,
                                  row=f"images[{i}]", field="id")
        images[im["id"]] = im

    seen_ids: dict[object, int] = {}
    for i, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict):
            raise AnnotationError("annotation is not an object", file=path,
                                  row=f"annotations[{i}]")
        aid = ann.get("id")
        if aid is not None and aid in seen_ids:
            raise AnnotationError(f"duplicated annotation id {aid!r} (also annotations"
                                  f"[{seen_ids[aid]}])", file=path,
                                  row=f"annotations[{i}] (id {aid})", field="id")
        seen_ids[aid] = i

    rows, kps, boxes, ims, areas = [], [], [], [], []
    for i, ann in enumerate(data.get("annotations") or []):
        row = f"annotations[{i}] (id {ann.get('id')})"
        if ann.get("category_id", cat.get("id")) != cat.get("id"):
            continue
        if ann.get("iscrowd", 0):
            continue
        flat = ann.get("keypoints")
        if not isinstance(flat, list) or len(flat) != 3 * k:
            raise AnnotationError(f"keypoints must be a list of {3 * k} numbers",
                                  file=path, row=row, field="keypoints")
        if all(type(v) in (int, float) for v in flat):          # fast path
            kp = np.asarray(flat, dtype=np.float64).reshape(k, 3)
            if not np.isfinite(kp).all():
                j = int(np.flatnonzero(~np.isfinite(kp.ravel()))[0])
                _num(flat[j], file=path, row=row, field=f"keypoints[{j}]")
        else:
            kp = np.asarray([_num(v, file=path, row=row, field=f"keypoints[{j}]")
                             for j, v in enumerate(flat)], dtype=np.float64).reshape(k, 3)
        for j in range(k):
            if kp[j, 2] not in (0.0, 1.0, 2.0):
                raise AnnotationError(f"visibility {flat[3 * j + 2]!r} of {names[j]!r} is not "
                                      "0, 1 or 2", file=path, row=row,
                                      field=f"keypoints[{3 * j + 2}] ({names[j]}.v)")
        if not (kp[:, 2] > 0).any():
            continue
        kp[kp[:, 2] == 0] = 0.0
        if ann.get("image_id") not in images:
            raise AnnotationError(f"unknown image_id {ann.get('image_id')!r}", file=path,
                                  row=row, field="image_id")
        bbox = ann.get("bbox")
        if bbox is None:
            box = None
        else:
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise AnnotationError("bbox must be [x, y, w, h]", file=path, row=row,
                                      field="bbox")
            box = [_num(v, file=path, row=row, field=f"bbox[{j}]") for j, v in enumerate(bbox)]
            with np.errstate(under="ignore"):   # the table's views are float32: 1e-164 is 0
                empty = not (np.float32(box[2]) > 0 and np.float32(box[3]) > 0)
            if empty:
                raise AnnotationError(f"box of zero area (w={box[2]}, h={box[3]})", file=path,
                                      row=row, field="bbox")
        area = ann.get("area")
        if area is not None:
            area = _num(area, file=path, row=row, field="area")
            with np.errstate(under="ignore", over="ignore"):
                if not (np.isfinite(np.float32(area)) and np.float32(area) > 0):
                    raise AnnotationError(f"area {area!r} is not > 0", file=path, row=row,
                                          field="area")
        rows.append(row)
        kps.append(kp)
        areas.append(np.nan if area is None else float(area))
        boxes.append(box)
        ims.append(images[ann["image_id"]])
    if not rows:
        raise AnnotationError("empty dataset: no usable (non-crowd, labelled) instances",
                              file=path, field="annotations")

    files = [str(im["file_name"]).replace("\\", "/") for im in ims]
    found_sizes = header_sizes(root, files, source=path, on_bad_image=on_bad_image)
    size_of = found_sizes.sizes
    problems = []
    if found_sizes.bad:
        used: dict[str, list[str]] = {}
        for f, r in zip(files, rows):
            used.setdefault(f, []).append(r)
        problems += skipped_lines(path, root, found_sizes.bad, used)
        keep = [i for i, f in enumerate(files) if f in size_of]
        rows, kps, boxes, ims, files, areas = ([seq[i] for i in keep]
                                               for seq in (rows, kps, boxes, ims, files, areas))
    for im in {id(m): m for m in ims}.values():
        real = size_of[str(im["file_name"]).replace("\\", "/")]
        declared = (im.get("width"), im.get("height"))
        if declared != (None, None) and tuple(declared) != real:
            problems.append(f"{path}: image {im['file_name']!r} is {real[0]}x{real[1]} but the "
                            f"JSON says {declared[0]}x{declared[1]}; using the file's size")
    sizes = np.asarray([size_of[f] for f in files], dtype=np.int64).reshape(-1, 2)
    counter: dict[str, int] = {}
    individuals = []
    for f in files:
        individuals.append(f"individual{counter.get(f, 0)}")
        counter[f] = counter.get(f, 0) + 1
    for i, box in enumerate(boxes):
        if box is not None and not (box[0] < sizes[i, 0] - 0.5 and box[0] + box[2] > -0.5
                                    and box[1] < sizes[i, 1] - 0.5 and box[1] + box[3] > -0.5):
            raise AnnotationError(f"bbox {box} does not overlap its {sizes[i, 0]}x{sizes[i, 1]}"
                                  f" image {files[i]!r}", file=path, row=rows[i], field="bbox")
    kp_arr, outside = clear_outside(np.stack(kps), sizes, rows, individuals, names, path)
    problems += outside
    auto = bbox_from_keypoints(kp_arr, sizes)
    bbox_arr = np.asarray([b if b is not None else auto[i] for i, b in enumerate(boxes)],
                          dtype=np.float64)
    return PoseTable.from_arrays(files, kp_arr, names, sizes, individuals=individuals,
                                 bboxes=bbox_arr, areas=areas, flip_pairs=resolve_flip_pairs(names, flip_pairs),
                                 skeleton=skeleton, root=root, problems=problems,
                                 skipped_images=[str(root / f) for f in found_sizes.bad])


def coco_dict(table: PoseTable, json_dir: str | Path, *, category: str = "person") -> dict:
    """The table as a COCO keypoints dict; ``file_name`` relative to ``json_dir``."""
    json_dir = Path(json_dir)
    images, annotations = [], []
    image_id = {}
    sizes = dict(zip(table.frame[("image", "")], table.image_sizes.tolist()))
    for i, im in enumerate(table.images, start=1):
        image_id[im] = i
        rel = os.path.relpath(os.path.abspath(table.image_path(im)), os.path.abspath(json_dir))
        w, h = sizes[im]
        images.append({"id": i, "file_name": Path(rel).as_posix(), "width": int(w),
                       "height": int(h)})
    kp = table.frame[keypoint_columns(table.bodyparts)].to_numpy(np.float64).reshape(
        len(table), table.num_keypoints, 3)
    boxes = table.frame[[("bbox", f) for f in BBOX_FIELDS]].to_numpy(np.float64)
    areas = table.frame[("area", "")].to_numpy(np.float64)
    for r, im in enumerate(table.frame[("image", "")]):
        flat = []
        for x, y, v in kp[r]:
            flat += [float(x), float(y), int(v)] if v > 0 else [0, 0, 0]
        x, y, w, h = (float(b) for b in boxes[r])
        annotations.append({"id": r + 1, "image_id": image_id[im], "category_id": 1,
                            "iscrowd": 0, "keypoints": flat,
                            "num_keypoints": int((kp[r, :, 2] > 0).sum()),
                            "bbox": [x, y, w, h],
                            "area": float(areas[r]) if np.isfinite(areas[r]) else w * h})
    cat = {"id": 1, "name": category, "supercategory": category,
           "keypoints": list(table.bodyparts),
           "skeleton": [[a + 1, b + 1] for a, b in table.skeleton]}
    return {"info": {"description": "written by posefeed"}, "images": images,
            "annotations": annotations, "categories": [cat]}


def write_coco(table: PoseTable, path: str | Path, *, category: str = "person") -> Path:
    """Write a COCO keypoints JSON; image paths relative to the JSON's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(coco_dict(table, path.parent, category=category), f)
    return path
