"""Procedural synthetic keypoint dataset: the built-in default, the demo's data, the tests'
fixture.

Each frame is a textured, photograph-like background (smooth multi-scale colour noise, a
lighting gradient, muted clutter shapes, grain) with 1..``max_instances`` articulated
figures: a tree of tapered, cylinder-shaded limbs in a saturated colour whose joints are
the keypoints, each joint marked by a flat disc of its own colour (left/right twins share
one colour, so a flip stays consistent) with a dark rim. Pose, scale, rotation and
placement vary; occluder shapes are drawn over some figures.

Labels are exact: a joint's disc is centred on its labelled ``(x, y)`` in the pixel-centre
convention (pixel ``(i, j)`` covers ``[i - 0.5, i + 0.5]``), so at a ``v = 2`` keypoint the
pixel ``(round(y), round(x))`` of the rendered frame has exactly the joint's colour.
Visibility: ``v = 2`` where that pixel shows the joint's own disc, ``v = 1`` where something
covers it (another limb, another figure or an occluder), ``v = 0`` outside the frame and for
some covered joints (left unlabelled, as an annotator would); ``v = 0`` keypoints are stored
as ``(0, 0, 0)``.

Written as JPEG frames plus a DeepLabCut project (``config.yaml`` and CollectedData
``.h5`` + ``.csv``; multi-animal format when ``max_instances > 1``) and a COCO JSON. The
DeepLabCut files cannot say "occluded", so ``v = 1`` reads back from them as ``v = 2``;
the COCO file keeps it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from posefeed.datasets.coco import write_coco
from posefeed.datasets.dlc import write_dlc, write_dlc_config
from posefeed.datasets.flip import infer_flip_pairs
from posefeed.datasets.table import PoseTable, bbox_from_keypoints

# name, parent index, rest position (body units, y down, head up; "left" is -x)
_TEMPLATE: tuple[tuple[str, int, tuple[float, float]], ...] = (
    ("head", -1, (0.0, -1.55)),
    ("neck", 0, (0.0, -1.12)),
    ("left_shoulder", 1, (-0.42, -1.0)),
    ("right_shoulder", 1, (0.42, -1.0)),
    ("left_elbow", 2, (-0.6, -0.5)),
    ("right_elbow", 3, (0.6, -0.5)),
    ("left_wrist", 4, (-0.66, 0.0)),
    ("right_wrist", 5, (0.66, 0.0)),
    ("pelvis", 1, (0.0, 0.0)),
    ("left_hip", 8, (-0.26, 0.06)),
    ("right_hip", 8, (0.26, 0.06)),
    ("left_knee", 9, (-0.32, 0.76)),
    ("right_knee", 10, (0.32, 0.76)),
    ("left_ankle", 11, (-0.34, 1.46)),
    ("right_ankle", 12, (0.34, 1.46)),
    ("left_ear", 0, (-0.22, -1.6)),
    ("right_ear", 0, (0.22, -1.6)),
)
# joint-angle spread (degrees) of the bone ending at each joint
_SPREAD = (0, 12, 8, 8, 35, 35, 40, 40, 10, 5, 5, 25, 25, 30, 30, 10, 10)
# limb radii (units) at the parent and the child end of the bone ending at each joint
_RADII = ((0, 0), (0.09, 0.09), (0.1, 0.1), (0.1, 0.1), (0.11, 0.085), (0.11, 0.085),
          (0.085, 0.06), (0.085, 0.06), (0.2, 0.17), (0.14, 0.14), (0.14, 0.14),
          (0.14, 0.11), (0.14, 0.11), (0.11, 0.075), (0.11, 0.075), (0.08, 0.06),
          (0.08, 0.06))
_ID = 1000          # idmap value of joint k of instance i: i * _ID + k
_LIMB = _ID - 1     # idmap value of instance i's limbs: i * _ID + _LIMB
_OCCLUDER = -2
_BACKGROUND = -1


def synthetic_skeleton(n_keypoints: int) -> tuple[list[str], list[int], np.ndarray]:
    """``(names, parents, rest (K, 2))`` for ``n_keypoints`` joints: a prefix of a 17-joint
    figure, extended by a tail chain (``tail1``, ``tail2``...) beyond 17."""
    if n_keypoints < 1:
        raise ValueError("n_keypoints must be >= 1")
    names, parents, rest = [], [], []
    for name, parent, pos in _TEMPLATE[:n_keypoints]:
        names.append(name)
        parents.append(parent)
        rest.append(pos)
    for t in range(n_keypoints - len(_TEMPLATE)):
        names.append(f"tail{t + 1}")
        parents.append(8 if t == 0 else len(names) - 2)
        rest.append((0.0, 0.25 * (t + 1)))
    return names, parents, np.asarray(rest, dtype=np.float64)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in 0..1) as float RGB 0..255."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb) * 255.0


def joint_colours(n_keypoints: int) -> np.ndarray:
    """``(K, 3)`` uint8 disc colour of each joint; left/right twins share a colour."""
    names, _, _ = synthetic_skeleton(n_keypoints)
    types = list(dict.fromkeys(n.replace("left_", "").replace("right_", "") for n in names))
    out = np.zeros((len(names), 3), dtype=np.uint8)
    for k, n in enumerate(names):
        t = types.index(n.replace("left_", "").replace("right_", ""))
        out[k] = np.round(_hsv((t * 0.618034) % 1.0, 0.35 + 0.3 * (t % 3) / 2, 1.0))
    return out


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """``(H, W, 3)`` float32 muted, textured background."""
    base = _hsv(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.65))
    img = np.broadcast_to(base.astype(np.float32), (h, w, 3)).copy()
    for cells, amp in ((rng.integers(3, 7), 55.0), (rng.integers(12, 30), 25.0)):
        gh = max(2, int(cells * h / w))
        small = (rng.random((gh, int(cells), 3)) * 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
        img += (big - 127.5) * (amp / 127.5) * rng.uniform(0.5, 1.0)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ang) * np.linspace(-1, 1, w, dtype=np.float32)[None, :]
            + np.sin(ang) * np.linspace(-1, 1, h, dtype=np.float32)[:, None])
    img *= (1.0 + rng.uniform(0.1, 0.3) * ramp)[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(6, 16))):
        col = tuple(int(c) for c in _hsv(rng.random(), rng.uniform(0.0, 0.3),
                                         rng.uniform(0.2, 0.75)))
        x0, y0 = rng.uniform(-0.1 * w, w), rng.uniform(-0.1 * h, h)
        sw, sh = rng.uniform(0.03, 0.25) * w, rng.uniform(0.03, 0.25) * h
        kind = rng.integers(4)
        if kind == 0:
            draw.ellipse([x0, y0, x0 + sw, y0 + sh], fill=col)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + sw, y0 + sh], fill=col)
        elif kind == 2:
            pts = [(x0 + rng.uniform(0, sw), y0 + rng.uniform(0, sh)) for _ in range(5)]
            draw.polygon(pts, fill=col)
        else:
            draw.line([x0, y0, x0 + sw, y0 + sh], fill=col, width=int(rng.integers(2, 8)))
    img = np.asarray(pil, dtype=np.float32)
    grain = rng.integers(-7, 8, size=(h, w, 1), dtype=np.int16).astype(np.float32)
    return img + grain


def _window(shape: tuple[int, ...], lo: np.ndarray, hi: np.ndarray
            ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    h, w = shape[:2]
    x0, y0 = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
    x1, y1 = min(int(np.ceil(hi[0])) + 1, w), min(int(np.ceil(hi[1])) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    return slice(y0, y1), slice(x0, x1), xs, ys


def _capsule(img: np.ndarray, idmap: np.ndarray, p0: np.ndarray, p1: np.ndarray, r0: float,
             r1: float, colour: np.ndarray, ident: int) -> None:
    """A tapered limb from ``p0`` (radius ``r0``) to ``p1`` (``r1``), cylinder-shaded."""
    rmax = max(r0, r1)
    win = _window(img.shape, np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
    if win is None:
        return
    sy, sx, xs, ys = win
    d = p1 - p0
    l2 = float(d @ d) or 1e-9
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / l2, 0.0, 1.0)
    dist = np.hypot(xs - (p0[0] + t * d[0]), ys - (p0[1] + t * d[1]))
    r = r0 + (r1 - r0) * t
    mask = dist <= r
    shade = 0.5 + 0.5 * np.sqrt(np.clip(1.0 - (dist / np.maximum(r, 1e-6)) ** 2, 0.0, 1.0))
    img[sy, sx][mask] = (colour[None, :] * shade[mask][:, None]).astype(np.float32)
    idmap[sy, sx][mask] = ident


def _disc(img: np.ndarray, idmap: np.ndarray, c: np.ndarray, r: float, colour: np.ndarray,
          ident: int, rim: float = 1.5) -> None:
    """A flat disc of radius ``r`` centred on ``c`` (pixel centres at integers), dark rim."""
    win = _window(img.shape, c - r - rim, c + r + rim)
    if win is None:
        return
    sy, sx, xs, ys = win
    d2 = (xs - c[0]) ** 2 + (ys - c[1]) ** 2
    ring = d2 <= (r + rim) ** 2
    img[sy, sx][ring] = 0.35 * colour.astype(np.float32)
    idmap[sy, sx][ring] = ident
    inner = d2 <= r * r
    img[sy, sx][inner] = colour.astype(np.float32)


def _pose(rng: np.random.Generator, parents: list[int], rest: np.ndarray, scale: float,
          angle: float, centre: np.ndarray) -> np.ndarray:
    """Joint positions ``(K, 2)`` in pixels: bones rotated by random joint angles (applied
    down the tree), lengths jittered, then rotated by ``angle`` and scaled about the root."""
    k = len(parents)
    spread = np.deg2rad([_SPREAD[j] if j < len(_SPREAD) else 20 for j in range(k)])
    local = rng.normal(0.0, 1.0, k) * spread
    stretch = rng.uniform(0.88, 1.12, k)
    cum = np.zeros(k)
    pos = np.zeros((k, 2))
    for j in range(k):
        p = parents[j]
        if p < 0:
            continue
        cum[j] = cum[p] + local[j]
        bone = (rest[j] - rest[p]) * stretch[j]
        c, s = np.cos(cum[j]), np.sin(cum[j])
        pos[j] = pos[p] + np.array([c * bone[0] - s * bone[1], s * bone[0] + c * bone[1]])
    anchor = pos[8] if k > 8 else pos.mean(axis=0)
    pos = pos - anchor
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return centre + scale * pos @ rot.T


def render_frame(rng: np.random.Generator, n_keypoints: int = 17, max_instances: int = 2,
                 image_size: tuple[int, int] = (640, 480), occlusion: float = 0.5,
                 hide: float = 0.3, animals: Sequence[np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame: ``(image (H, W, 3) uint8 RGB, keypoints (n, K, 3) float64)`` with
    ``1 <= n <= max_instances`` instances, every one with at least one labelled keypoint.

    ``occlusion``: probability of drawing occluder shapes over the figures; ``hide``:
    probability that a covered joint is left unlabelled (``v = 0``) rather than ``v = 1``.

    ``animals``: one body colour (RGB, 0..255) per identity: then every identity appears
    (``n = len(animals)``, keypoints row ``i`` = identity ``i``), the figures are placed
    close together so that they overlap, and they are drawn in a random order, so that any
    one may cover another (a covered joint gets ``v = 1`` or, with ``hide``, 0).
    """
    w, h = int(image_size[0]), int(image_size[1])
    names, parents, rest = synthetic_skeleton(n_keypoints)
    k = len(names)
    colours = joint_colours(k)
    img = _background(rng, w, h)
    idmap = np.full((h, w), _BACKGROUND, dtype=np.int32)
    n = len(animals) if animals is not None else int(rng.integers(1, max_instances + 1))
    lo, hi = (0.07, 0.17) if max_instances > 1 else (0.09, 0.2)
    group = None if animals is None else np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h])
    poses, centres = [], []
    for _ in range(n):
        for _attempt in range(30):
            scale = h * rng.uniform(lo, hi)
            if animals is None:
                centre = np.array([rng.uniform(0.08, 0.92) * w, rng.uniform(0.12, 0.88) * h])
            else:  # a crowd: within about one body length of the group's centre
                centre = group + rng.normal(0.0, 0.7 * scale, 2)
            pos = _pose(rng, parents, rest, scale, rng.uniform(-np.pi / 3, np.pi / 3), centre)
            inside = ((pos >= -0.5) & (pos < np.array([w, h]) - 0.5)).all(axis=1)
            apart = animals is not None or all(np.hypot(*(centre - c)) > 1.6 * scale for c in centres)
            if inside.sum() >= max(1, (k + 1) // 2) and (apart or _attempt > 20):
                break
        poses.append((pos, scale))
        centres.append(centre)
    order = range(n) if animals is None else rng.permutation(n)
    for i in order:
        pos, scale = poses[i]
        if animals is None:
            body = _hsv(rng.random(), rng.uniform(0.7, 0.95), rng.uniform(0.7, 0.95))
        else:
            body = np.asarray(animals[i], dtype=np.float64)
        ident = i * _ID + _LIMB
        if k > 8:
            _capsule(img, idmap, pos[1], pos[8], 0.26 * scale, 0.22 * scale, body, ident)
        if k > 10:
            for a, b in ((2, 9), (3, 10)):
                _capsule(img, idmap, pos[a], pos[b], 0.13 * scale, 0.12 * scale, body, ident)
        for j in range(1, k):
            r0, r1 = _RADII[j] if j < len(_RADII) else (0.07, 0.05)
            _capsule(img, idmap, pos[parents[j]], pos[j], r0 * scale, r1 * scale, body, ident)
        _capsule(img, idmap, pos[0], pos[0] + (pos[0] - pos[1]) * 0.15 if k > 1 else pos[0],
                 0.24 * scale, 0.22 * scale, body, ident)
        rj = max(2.5, 0.05 * scale)
        for j in range(k):
            _disc(img, idmap, pos[j], rj, colours[j].astype(np.float64), i * _ID + j)
    if rng.random() < occlusion:
        for _ in range(int(rng.integers(1, 3))):
            pos, scale = poses[int(rng.integers(n))]
            c = pos[int(rng.integers(k))] + rng.normal(0, 0.3 * scale, 2)
            half = rng.uniform(0.25, 0.6, 2) * scale
            col = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.7))
            win = _window(img.shape, c - half, c + half)
            if win is None:
                continue
            sy, sx, xs, ys = win
            if rng.random() < 0.5:
                mask = ((xs - c[0]) / half[0]) ** 2 + ((ys - c[1]) / half[1]) ** 2 <= 1.0
            else:
                mask = np.ones((ys.shape[0], xs.shape[1]), dtype=bool)
            stripes = 0.85 + 0.15 * np.sin((xs + ys) * 0.4)
            img[sy, sx][mask] = (col[None, :] * np.broadcast_to(stripes, mask.shape)[mask][:, None]
                                 ).astype(np.float32)
            idmap[sy, sx][mask] = _OCCLUDER
    kps = np.zeros((n, k, 3))
    for i, (pos, _) in enumerate(poses):
        inside = ((pos >= -0.5) & (pos < np.array([w, h]) - 0.5)).all(axis=1)
        cols = np.clip(np.floor(pos[:, 0] + 0.5).astype(int), 0, w - 1)
        rows = np.clip(np.floor(pos[:, 1] + 0.5).astype(int), 0, h - 1)
        own = idmap[rows, cols] == i * _ID + np.arange(k)
        covered = inside & ~own
        hidden = covered & (rng.random(k) < hide)
        v = np.where(inside & own, 2.0, np.where(covered & ~hidden, 1.0, 0.0))
        if not (v > 0).any():
            v = np.where(inside, 1.0, 0.0)
        kps[i, :, :2] = np.where(v[:, None] > 0, pos, 0.0)
        kps[i, :, 2] = v
    return np.clip(np.round(img), 0, 255).astype(np.uint8), kps


@dataclass
class SyntheticDataset:
    """Paths of a generated dataset and its exact labels (``table``, with ``v = 1``)."""

    root: Path
    dlc_project: Path
    dlc_h5: Path
    dlc_csv: Path
    coco_json: Path
    table: PoseTable


@dataclass
class SyntheticConfig:
    """Parameters of `make_synthetic` (also written to ``<out_dir>/synthetic.json``)."""

    n_frames: int = 200
    n_keypoints: int = 17
    max_instances: int = 2
    image_size: tuple[int, int] = (640, 480)
    seed: int = 0
    quality: int = 92
    animals: int | None = None

    def tag(self) -> str:
        w, h = self.image_size
        crowd = "" if self.animals is None else f"-a{self.animals}"
        return (f"synthetic-f{self.n_frames}-k{self.n_keypoints}-i{self.max_instances}{crowd}"
                f"-{w}x{h}-s{self.seed}")


VIDEO = "synthetic"
SCORER = "posefeed"


def make_synthetic(out_dir: str | Path, n_frames: int = 200, n_keypoints: int = 17,
                   max_instances: int = 2, image_size: tuple[int, int] = (640, 480),
                   seed: int = 0, quality: int = 92, animals: int | None = None) -> SyntheticDataset:
    """Render ``n_frames`` JPEG frames of ``image_size`` (width, height) into
    ``out_dir/labeled-data/synthetic/`` and write the labels as a DeepLabCut project
    (``out_dir/config.yaml`` + ``CollectedData_posefeed.h5/.csv``) and ``out_dir/coco.json``.
    Deterministic in ``seed``.

    ``animals=N``: a multi-animal project with identities: every frame shows the same
    ``N`` individuals (``individual0`` ... each with its own body colour in every frame),
    crowded so that they overlap and occlude each other (see `render_frame`); the project
    is written multi-animal (4-level columns scorer / individuals / bodyparts / coords,
    ``multianimalproject: true``, ``individuals``, ``multianimalbodyparts``) whatever
    ``max_instances`` says (it is set to ``N``)."""
    if animals is not None:
        if int(animals) < 1:
            raise ValueError(f"animals must be >= 1; got {animals!r}")
        max_instances = int(animals)
    cfg = SyntheticConfig(n_frames, n_keypoints, max_instances,
                          (int(image_size[0]), int(image_size[1])), seed, quality,
                          animals=None if animals is None else int(animals))
    if n_frames < 1 or max_instances < 1:
        raise ValueError("n_frames and max_instances must be >= 1")
    out = Path(out_dir)
    folder = out / "labeled-data" / VIDEO
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names, parents, _ = synthetic_skeleton(n_keypoints)
    bodies = None
    if animals is not None:  # identity colours: evenly spaced hues, fixed for the project
        bodies = [_hsv((i + 0.5) / animals, 0.85, 0.9) for i in range(animals)]
    images, individuals, kps = [], [], []
    for f in range(n_frames):
        img, kp = render_frame(rng, n_keypoints, max_instances, cfg.image_size, animals=bodies)
        rel = f"labeled-data/{VIDEO}/img{f:05d}.jpg"
        Image.fromarray(img).save(out / rel, quality=quality, subsampling=0)
        for i in range(len(kp)):
            images.append(rel)
            individuals.append(f"individual{i}")
            kps.append(kp[i])
    kp_arr = np.stack(kps)
    sizes = np.tile(np.asarray(cfg.image_size, dtype=np.int64), (len(images), 1))
    boxes = bbox_from_keypoints(kp_arr, sizes)
    table = PoseTable.from_arrays(
        images, kp_arr, names, sizes, individuals=individuals,
        bboxes=boxes, areas=boxes[:, 2] * boxes[:, 3],     # the box's area (COCO's "area")
        flip_pairs=infer_flip_pairs(names),
        skeleton=[(p, j) for j, p in enumerate(parents) if p >= 0], root=out)
    multi = max_instances > 1 or animals is not None
    h5 = write_dlc(table, folder / f"CollectedData_{SCORER}.h5", scorer=SCORER,
                   multianimal=multi)
    csv = write_dlc(table, folder / f"CollectedData_{SCORER}.csv", scorer=SCORER,
                    multianimal=multi)
    write_dlc_config(table, out, scorer=SCORER, task=VIDEO, multianimal=multi)
    coco = write_coco(table, out / "coco.json")
    params = asdict(cfg)
    with open(out / "synthetic.json", "w", encoding="utf-8") as fh:
        json.dump(params, fh)
    return SyntheticDataset(out, out, h5, csv, coco, table)
