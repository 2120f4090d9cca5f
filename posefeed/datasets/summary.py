"""A plain-dict summary of a `PoseTable` (what ``posefeed inspect`` prints)."""
from __future__ import annotations

from collections import Counter

import numpy as np

from posefeed.datasets.table import PoseTable


def summarize(table: PoseTable) -> dict:
    """Counts, bodyparts, labelled fraction per bodypart (rows with ``v > 0``), visible
    fraction (``v == 2``), image sizes (frames per ``"WxH"``), flip pairs and skeleton by
    name, images left out at load (``skipped_images``, a count; each has a problem line),
    problems. JSON-serialisable."""
    kp = table.keypoints
    v = kp[..., 2] if len(table) else np.zeros((0, table.num_keypoints))
    n = max(len(table), 1)
    labelled = (v > 0).sum(axis=0) / n
    visible = (v == 2).sum(axis=0) / n
    per_frame = [len(r) for r in table.frames()] if len(table) else [0]
    first = {}
    for im, (w, h) in zip(table.frame[("image", "")], table.image_sizes.tolist()):
        first.setdefault(im, f"{w}x{h}")
    names = table.bodyparts
    return {
        "root": str(table.root),
        "frames": len(table.images),
        "instances": len(table),
        "max_instances_per_frame": int(max(per_frame)),
        "individuals": list(dict.fromkeys(table.individuals)),
        "bodyparts": list(names),
        "unique_bodyparts": list(table.unique_bodyparts),
        "labelled_fraction": {b: round(float(f), 6) for b, f in zip(names, labelled)},
        "visible_fraction": {b: round(float(f), 6) for b, f in zip(names, visible)},
        "image_sizes": dict(Counter(first.values()).most_common()),
        "flip_pairs": [[names[a], names[b]] for a, b in table.flip_pairs],
        "skeleton": [[names[a], names[b]] for a, b in table.skeleton],
        "skipped_images": len(table.skipped_images),
        "problems": list(table.problems),
    }
