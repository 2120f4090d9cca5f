"""posefeed's PoseLoader as DeepLabCut 3's training data loader.

``make_loaders(config, shuffle, trainingsetindex)`` reads the shuffle the way DeepLabCut does
(``DLCLoader``: the shuffle's ``pytorch_config.yaml`` and its train/test split from the
training-dataset's ``Documentation_data-*.pickle``, rows of the training-dataset's
``CollectedData_*.h5``), maps the shuffle's ``data.train`` augmentation onto posefeed's
`AugmentConfig` and returns two iterables whose batches are the dict
``PoseTrainingRunner.step`` consumes (see `to_dlc_batch`).

Bottom-up shuffles (posefeed's frame mode): one sample per frame, all its individuals
(``N`` = the config's individuals, DeepLabCut's order, ``individual_ids`` their positions
in the config's list). Coordinates: DeepLabCut's keypoints are the CollectedData label
coordinates as they are, in image pixels with integer coordinates at pixel centres; that is
posefeed's convention too (origin at the centre of the top-left pixel), so there is no
conversion at the boundary: ``annotations["keypoints"]`` are posefeed's batch keypoints
(input pixels after augmentation) and map back to image pixels with the batch's ``affine``;
``offsets`` are 0 and ``scales`` 1. With augmentation off and the input the frame's size,
the affine is the identity and the keypoints are the labels exactly (tested against
DeepLabCut's own dataset). ``boxes`` / ``area``: DeepLabCut's box (the visible labels
+- ``data.bbox_margin``, clipped to the frame; `posefeed.integrations.dlc_boxes`) moved by
the augmentation (the box of its moved corners, as albumentations moves boxes).

Top-down shuffles (``method: td``, e.g. ``net_type: top_down_resnet_50``; posefeed's topdown
mode): one sample per DeepLabCut annotation (an individual with a visible label), the crop
DeepLabCut's ``PoseDataset`` makes from ``data.train.top_down_crop {width, height, margin}``
(``crop_with_context: false`` raises): the box from the labels with ``bbox_margin``, cast
to int, grown by ``margin``, widened to the crop's aspect and rounded to the pixel region
``[X1, X2) x [Y1, Y2)``, which is resized to (width, height) (`dlc_boxes.top_down_regions`;
posefeed crops it with ``box_padding=1``, ``box_keep_aspect=False``). Coordinates: the crop's
scales ``s = ((X2 - X1) / width, (Y2 - Y1) / height)``; DeepLabCut's crop keypoints are
``x_d = (x - X1) / s`` (``offsets = (X1, Y1)``, ``scales = s``, and evaluation maps back with
``x = x_d * s + offset``), while the resize puts input pixel ``j``'s centre at image
``X1 - 1/2 + (j + 1/2) s`` (posefeed's ``affine``), so posefeed's keypoint ``j`` is
``x_d = j + 1/2 - 1/(2 s)`` (``to_dlc_batch`` converts; tested against DeepLabCut's items).
Labels that are not visible sit where DeepLabCut puts them (image (0, 0) -> ``-offset / s``)
with ``v = 0``; DeepLabCut's out-of-crop rule sets ``v = 0`` too (``x`` outside
``[0, height]``, ``y`` outside ``[0, width]``: its shape swap, kept). DeepLabCut normalises
the frame before cropping, so outside the frame its crop is 0 (the ImageNet mean colour),
blended bilinearly at the frame's edge: ``to_dlc_batch`` adds that to posefeed's
black-bordered crop (`pad_with_mean`). Known pixel difference: DeepLabCut resizes the float
image, posefeed warps uint8 bilinearly, a fraction of a grey level.

Augmentation (``data.train`` of pytorch_config.yaml, as DeepLabCut 3.0.2's
``build_transforms`` builds it with albumentations 1.4.3) -> posefeed's `AugmentConfig`
(DeepLabCut's default bottom-up recipe maps completely: `AugmentConfig.deeplabcut_default`):

* ``normalize_images: true`` -> posefeed's ImageNet normalisation (the same mean/std on 0..1);
* ``colormode: RGB`` -> posefeed decodes RGB (anything else raises);
* ``hflip`` (``true``: p 0.5; a float: p; a dict: ``p`` and ``symmetries``) -> ``flip_prob``;
  the left/right channels swapped are DeepLabCut's: ``symmetries`` (bodypart index pairs;
  posefeed swaps them in every individual) or none at all (``A.HorizontalFlip``), never the
  table's inferred pairs;
* ``affine {p, rotation, scaling}`` -> ``affine_prob = p`` (default 0.9: one draw for the whole
  transform), ``rotate_factor = rotation``, the zoom range ``scaling`` as the box scale range
  ``(1 / hi, 1 / lo)``, ``affine_distribution="uniform"`` (albumentations ``Affine`` draws the
  angle and the zoom uniformly), about the frame centre; ``translation`` must be 0 (DeepLabCut
  draws integer pixels: not reproduced);
* ``crop_sampling {width, height, max_shift, method}`` -> the input size, ``crop_size``,
  ``crop_shift = max_shift`` (capped at 0.4 as DeepLabCut does), ``crop_sampling = method``
  (DeepLabCut's ``KeypointAwareCrop`` centre methods "uniform", "keypoints", "density",
  "hybrid", with its ``PadIfNeeded`` before it);
* ``motion_blur`` (truthy) -> ``motion_blur_prob = 0.5``, kernels 3, 5, 7 (``MotionBlur(p=0.5)``);
* ``gaussian_noise`` (a number ``s``; ``true`` is the number 1 to DeepLabCut, anything else
  non-numeric 12.75) -> ``noise_prob = 0.5``, ``noise_var = (0, s**2)`` (``GaussNoise``, per
  channel);
* top-down shuffles' ``affine``: DeepLabCut transforms the frame and the box together and
  then crops the box, so its ``scaling`` and ``translation`` do not change the crop's
  content (up to its integer rounding of the box) and are not mapped; ``rotation`` ->
  posefeed's crop rotation about the box centre (uniform, probability ``p``), but
  DeepLabCut crops the box of the rotated box's corners: an error unless ``ignore`` names
  ``affine.top_down_rotation``; its ``motion_blur`` and ``gaussian_noise`` act on the whole
  frame before the crop is resized, posefeed's on the crop: an error unless ``ignore`` names
  ``motion_blur.top_down`` / ``gaussian_noise.top_down`` (then posefeed's, on the crop);
* anything else that is set (``covering``, ``resize``, ``longest_max_size``,
  ``random_bbox_transform``, ``hist_eq``, ``elastic_transform``, ``grayscale``,
  ``auto_padding``, ``scale_to_unit_range``, ``top_down_crop`` in a bottom-up shuffle,
  ``collate``):
  `UnsupportedAugmentation` naming it, unless ``ignore`` names it (then it is left out, and
  said so in ``loaders.dropped``).

The order is DeepLabCut's: flip, affine, pad, crop, motion blur, noise, normalise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from deeplabcut.pose_estimation_pytorch.data import DLCLoader
from deeplabcut.utils import auxiliaryfunctions as af

from posefeed.constants import IMAGENET_MEAN, IMAGENET_STD
from posefeed.datasets import load_dlc
from posefeed.datasets.table import PoseTable
from posefeed.integrations.dlc_boxes import (crop_boxes, dlc_boxes, dlc_visible, region_boxes,
                                             to_dlc_crop, top_down_regions)
from posefeed.pipelines import AugmentConfig, CacheTooLarge, PoseLoader
from posefeed.targets.dekr import add_centers
from posefeed.pipelines.augment import CROP_SAMPLING

log = logging.getLogger("posefeed.integrations")

# data.train keys that posefeed maps (the rest must be unset, or named in ``ignore``)
MAPPED = ("normalize_images", "crop_sampling", "affine", "colormode", "hflip", "motion_blur",
          "gaussian_noise")
#: ``gaussian_noise`` that is not a number: DeepLabCut's std (0.05 * 255)
DLC_NOISE_STD = 0.05 * 255
NO_AUGMENTATION = AugmentConfig.none().with_(crop_size=None)


class UnsupportedAugmentation(ValueError):
    """A DeepLabCut augmentation option posefeed cannot reproduce (``option``: its name)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"pytorch_config.yaml data.train.{option}: {message} (pass "
                         f"ignore=('{option}',) to leave it out)")
        self.option = option


@dataclass
class MappedAugmentation:
    """``data.train`` as posefeed sees it: the config, the input size (crop) or None (the
    frame), and the DeepLabCut options left out because ``ignore`` named them."""

    config: AugmentConfig
    input_size: tuple[int, int] | None
    dropped: list[str] = field(default_factory=list)
    #: the channels a flip swaps (DeepLabCut's ``hflip.symmetries``; [] swaps none); None: no
    #: flip configured (the table's pairs are left alone)
    flip_pairs: list[tuple[int, int]] | None = None


def _is_set(value: Any) -> bool:
    return value not in (None, False, 0, {}, [], "")


def map_augmentation(train_cfg: dict, ignore: Iterable[str] = (),
                     top_down: bool = False) -> MappedAugmentation:
    """DeepLabCut's ``data.train`` (a dict from pytorch_config.yaml) -> posefeed (see the
    module docstring for the mapping and what raises `UnsupportedAugmentation`).
    ``top_down``: the shuffle's pose model trains on crops around each box (its
    ``top_down_crop`` is read by `make_loaders`)."""
    ignore = set(ignore)
    dropped: list[str] = []

    def unsupported(option: str, message: str) -> None:
        if option in ignore:
            dropped.append(option)
            return
        raise UnsupportedAugmentation(option, message)

    cfg = NO_AUGMENTATION
    if not train_cfg.get("normalize_images", False):
        unsupported("normalize_images", "posefeed always normalises with the ImageNet mean/std "
                    "(normalize_images: true)")
    if str(train_cfg.get("colormode") or "RGB").upper() != "RGB":
        unsupported("colormode", "posefeed decodes RGB")
    for key, value in train_cfg.items():
        if key in MAPPED or not _is_set(value):
            continue
        unsupported(key, "not reproduced by posefeed")
    input_size = None
    crop = train_cfg.get("crop_sampling")
    if _is_set(crop):
        input_size = (int(crop["width"]), int(crop["height"]))
        method = str(crop.get("method", "hybrid"))
        if method not in CROP_SAMPLING:
            unsupported("crop_sampling.method", f"{method!r} is not one of DeepLabCut's "
                        f"KeypointAwareCrop methods {CROP_SAMPLING}")
            method = "keypoints"
        cfg = cfg.with_(crop_size=input_size, crop_shift=float(crop.get("max_shift", 0.4)),
                        crop_sampling=method)
    affine = train_cfg.get("affine")
    if affine is not None and top_down:
        cfg = _top_down_affine(cfg, dict(affine or {}), unsupported)
    elif affine is not None:                   # DeepLabCut builds Affine for any mapping
        affine = dict(affine or {})
        if _is_set(affine.get("translation")):
            unsupported("affine.translation", "DeepLabCut translates by whole pixels drawn "
                        "uniformly (translate_px); posefeed does not reproduce it")
        rot = affine.get("rotation")
        scaling = affine.get("scaling")
        if rot is None and scaling is None and affine.get("translation") is None:
            unsupported("affine", "with no rotation, scaling or translation albumentations "
                        "uses its own defaults (shear, translation): not reproduced")
        lo, hi = (1.0, 1.0) if scaling is None else (
            (float(scaling), float(scaling)) if np.isscalar(scaling) else map(float, scaling))
        # DeepLabCut zooms the frame by s (uniform in scaling); posefeed's scale is the size
        # of the region read, 1 / s
        cfg = cfg.with_(affine_distribution="uniform", affine_prob=float(affine.get("p", 0.9)),
                        rotate_factor=float(rot or 0.0), rotate_prob=float(affine.get("p", 0.9)),
                        scale_range=(1.0 / hi, 1.0 / lo), scale_prob=float(affine.get("p", 0.9)))
    flip_pairs = None
    hflip = train_cfg.get("hflip")
    if hflip:                                   # as build_transforms reads it
        p, flip_pairs = 0.5, []
        if isinstance(hflip, float):
            p = hflip
        elif isinstance(hflip, dict):
            p = float(hflip.get("p", 0.5))
            flip_pairs = [(int(a), int(b)) for a, b in hflip.get("symmetries", [])]
        cfg = cfg.with_(flip_prob=float(p))
    if train_cfg.get("motion_blur"):
        cfg = cfg.with_(motion_blur_prob=0.5, motion_blur_sizes=(3, 5, 7))
    noise = train_cfg.get("gaussian_noise")
    if noise:
        std = noise if isinstance(noise, (int, float)) else DLC_NOISE_STD   # (True is 1)
        cfg = cfg.with_(noise_prob=0.5, noise_var=(0.0, float(std) ** 2))
    if top_down:
        for option in ("motion_blur", "gaussian_noise"):
            if train_cfg.get(option):
                unsupported(f"{option}.top_down", "a top-down shuffle applies it to the whole "
                            "frame before the box is cropped and resized (its strength in the "
                            "crop follows the box's size); posefeed applies it to the crop")
    return MappedAugmentation(cfg, input_size, dropped, flip_pairs)


def _top_down_affine(cfg: AugmentConfig, affine: dict, unsupported) -> AugmentConfig:
    """A top-down shuffle's ``affine``: DeepLabCut transforms the whole image and the box
    together, then crops the transformed box. Its scaling and translation move the box with
    the image, so the crop's content is the same (up to DeepLabCut's integer rounding of
    the box): nothing to map. Its rotation turns the content about the box centre (posefeed
    rotates the crop box by the same angle, ``rotate_factor``), but DeepLabCut's crop is
    the box of the rotated box's corners (larger by up to ``|cos| + |sin|``), posefeed's the
    rotated box itself: an error unless ``ignore`` names ``affine.top_down_rotation``
    (both draw the angle uniformly with probability ``p``)."""
    p = float(affine.get("p", 0.9))
    rot = affine.get("rotation")
    if _is_set(rot):
        cfg = cfg.with_(affine_distribution="uniform", affine_prob=p, rotate_factor=float(rot),
                        rotate_prob=p)
        unsupported("affine.top_down_rotation", "DeepLabCut crops the box around the rotated "
                    "box's corners, posefeed the rotated box (the crop's zoom differs)")
    return cfg


def shuffle_tables(dlc_loader: Any) -> tuple[PoseTable, PoseTable]:
    """The shuffle's train and test rows (DeepLabCut's split) as posefeed tables, from the
    training-dataset ``CollectedData_*.h5`` DeepLabCut's ``DLCLoader`` reads."""
    project_cfg = dlc_loader.project_cfg
    root = Path(dlc_loader.project_path)
    trainset_dir = root / af.get_training_set_folder(project_cfg)
    h5 = trainset_dir / f"CollectedData_{project_cfg['scorer']}.h5"
    table = load_dlc(h5, root=root)

    def name(index: Any) -> str:
        parts = index if isinstance(index, tuple) else (str(index),)
        return "/".join(str(p).replace("\\", "/") for p in parts)

    images = np.asarray(table.frame[("image", "")]).astype(str)
    out = []
    for split in ("train", "test"):
        wanted = {name(dlc_loader.df.index[i]) for i in dlc_loader.split[split]}
        rows = np.flatnonzero(np.isin(images, list(wanted)))
        missing = wanted - set(images[rows])
        if missing:
            raise ValueError(f"{h5}: {len(missing)} {split} images of the shuffle's split are not "
                             f"in the table, e.g. {sorted(missing)[0]}")
        out.append(table.subset(rows))
    return out[0], out[1]


@dataclass
class ShuffleRows:
    """What a DeepLabCut batch needs per table row besides posefeed's batch (made once per
    loader, read by `to_dlc_batch` with array gathers).

    Looked up once per loader, not per batch (pandas lookups cost ~10-30 ms a batch):
    ``paths (R,)`` image paths (str objects), ``sizes (R, 2)`` int64 (w, h);
    ``individuals``: the config's individuals (``individual_ids`` are positions in it);
    ``ids (R,)`` each row's position; ``boxes (R, 4)`` DeepLabCut's box (image pixels,
    `dlc_boxes`); ``num_animals``: DeepLabCut's instance count per frame (bottom-up: the
    individuals; top-down: 1); ``crop_size`` (W, H) for top-down (else None);
    ``with_center``: the model config's ``with_center_keypoints`` (DEKR: each instance's
    centre appended as keypoint K)."""

    individuals: list[str]
    ids: np.ndarray
    boxes: np.ndarray
    num_animals: int
    crop_size: tuple[int, int] | None = None
    with_center: bool = False
    paths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))


def shuffle_rows(table: PoseTable, individuals: list[str], bbox_margin: float,
                 crop_size: tuple[int, int] | None = None,
                 with_center: bool = False) -> ShuffleRows:
    code = {name: i for i, name in enumerate(individuals)}
    names = np.asarray(table.frame[("individual", "")]).astype(str)
    if len(individuals) == 1 and len(set(names) - {"single"}) == 1:
        names = np.where(names == "single", names, individuals[0])   # a single-animal project
    unknown = sorted(set(names) - set(code) - {"single"})
    if unknown:
        raise ValueError(f"individuals {unknown} of the labels are not in the config's "
                         f"individuals {individuals}")
    ids = np.asarray([code.get(n, -1) for n in names], dtype=np.int64)
    boxes, _ = dlc_boxes(table.keypoints, table.image_sizes, bbox_margin)
    paths = np.array([str(table.image_path(im)) for im in table.frame[("image", "")].tolist()],
                     dtype=object)
    return ShuffleRows(list(individuals), ids, boxes,
                       1 if crop_size is not None else max(len(individuals), 1), crop_size,
                       bool(with_center), paths, table.image_sizes)


def default_rows(table: PoseTable) -> ShuffleRows:
    """`ShuffleRows` of a table on its own: its sorted individual names, DeepLabCut's
    default ``bbox_margin`` (20), bottom-up."""
    return shuffle_rows(table, sorted(set(map(str, table.frame[("individual", "")]))), 20.0)


def _gather(values: np.ndarray, index: np.ndarray, fill) -> np.ndarray:
    safe = np.where(index >= 0, index, 0)
    out = values[safe]
    out[index < 0] = fill
    return out


def to_dlc_batch(batch: dict[str, torch.Tensor], table: PoseTable,
                 rows: ShuffleRows | None = None) -> dict[str, Any]:
    """A PoseLoader batch -> the dict DeepLabCut's ``PoseTrainingRunner.step`` and its
    evaluation read (names, dtypes and shapes as DeepLabCut's collated ``PoseDataset``
    items): ``image`` (B, 3, H, W) float32 (ImageNet-normalised), ``annotations``
    {``keypoints`` (B, N, K, 3) float32, ``keypoints_unique`` (B, 0),
    ``with_center_keypoints`` (B,) bool, ``area`` (B, N) float32, ``boxes`` (B, N, 4)
    float32 xywh, ``is_crowd`` (B, N) int64, ``labels`` (B, N) int64 (1, -1 for padding),
    ``individual_ids`` (B, N) int64 (-1 for padding)}, ``image_id`` (B,) int64, ``path``
    list of B str, ``original_size`` (B, 3) int64 (h, w, 3), ``offsets`` (B, 2) int64,
    ``scales`` (B, 2) float64, ``context`` {} and posefeed's ``affine`` (B, 2, 3).

    Frame mode (bottom-up): ``N`` = the config's individuals; with ``with_center_keypoints``
    (DEKR) each instance's centre appended as keypoint ``K`` (the mean of its keypoints with
    ``v > 0``, ``v = 2``; ``(0, 0, 0)`` for none); DeepLabCut's instance order
    (instances with a visible keypoint first, in the config's order, then padding);
    keypoints as posefeed's (no conversion), ``x, y = 0`` where ``v <= 0`` (DeepLabCut's
    unlabelled keypoints, which its generators never read); ``boxes``:
    DeepLabCut's box (`dlc_boxes`) mapped through the augmentation (the box of its four
    corners), clipped to the input, ``area = max(1, w) * max(1, h)``; offsets 0, scales 1.

    Topdown mode (one instance per sample, `make_loaders` on a top-down shuffle): ``N = 1``;
    keypoints in DeepLabCut's crop convention (see the module docstring), ``offsets`` /
    ``scales`` DeepLabCut's (crop -> image: ``x = x_crop * scale + offset``), ``boxes`` and
    ``area`` DeepLabCut's in-crop box (`crop_boxes`)."""
    kp = batch["keypoints"].detach().cpu().double().clone()      # (B, N, K, 3), small
    index = batch["index"].cpu().numpy()                        # (B, N) table rows, -1 padding
    b = index.shape[0]
    if rows is None:
        rows = default_rows(table)
    first = index[:, 0]
    paths = rows.paths[first].tolist()
    sizes = rows.sizes[first]                                   # (B, 2) w, h
    dev = batch["image"].device
    affine = batch["affine"].double().cpu()                      # (B, 2, 3) input -> image
    if rows.crop_size is not None:
        kp, offsets, scales, boxes, area = _top_down(kp, index, affine, rows)
        index = index[:, :1]
        pad_with_mean(batch["image"], affine.numpy(), sizes)
    else:
        kp, index, boxes, area = _bottom_up(kp, index, affine, rows, batch["image"].shape)
        if rows.with_center:     # DeepLabCut's add_center_keypoints, after the augmentation
            x, y, v = add_centers(np, *(kp[..., i].numpy() for i in range(3)))
            kp = torch.from_numpy(np.stack([x, y, v], -1))
        offsets = np.zeros((b, 2), dtype=np.int64)
        scales = np.ones((b, 2), dtype=np.float64)
    valid = index >= 0
    n = index.shape[1]
    annotations = {
        "keypoints": kp.float().to(dev),
        "keypoints_unique": torch.zeros((b, 0), dtype=torch.float32, device=dev),
        "with_center_keypoints": torch.full((b,), rows.with_center, dtype=torch.bool,
                                            device=dev),
        "area": torch.as_tensor(np.where(valid, area, 0), dtype=torch.float32, device=dev),
        "boxes": torch.as_tensor(np.where(valid[..., None], boxes, 0), dtype=torch.float32,
                                 device=dev),
        "is_crowd": torch.zeros((b, n), dtype=torch.int64, device=dev),
        "labels": torch.as_tensor(np.where(valid, 1, -1), dtype=torch.int64, device=dev),
        "individual_ids": torch.as_tensor(_gather(rows.ids, index, -1), dtype=torch.int64,
                                          device=dev),
    }
    return {
        "image": batch["image"],
        "image_id": torch.as_tensor(first + 1, dtype=torch.int64),
        "path": paths,
        "original_size": torch.as_tensor(np.stack([sizes[:, 1], sizes[:, 0], np.full(b, 3)], 1),
                                         dtype=torch.int64),
        "offsets": torch.as_tensor(offsets, dtype=torch.int64),
        "scales": torch.as_tensor(scales, dtype=torch.float64),
        "annotations": annotations,
        "context": {},
        "affine": batch["affine"],
    }


def _bottom_up(kp: torch.Tensor, index: np.ndarray, affine: torch.Tensor, rows: ShuffleRows,
               image_shape) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    b, n = index.shape
    hidden = kp[..., 2] <= 0
    kp[..., :2] = torch.where(hidden[..., None], torch.zeros_like(kp[..., :2]), kp[..., :2])
    # DeepLabCut's order: instances with a visible keypoint, in the config's order, padded
    ids = _gather(rows.ids, index, -1)
    keep = (index >= 0) & (~hidden).any(-1).cpu().numpy() & (ids >= 0)
    order = np.argsort(np.where(keep, ids, np.iinfo(np.int64).max), axis=1, kind="stable")
    index = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(index, order, 1), -1)
    kp = torch.take_along_dim(kp, torch.as_tensor(order)[..., None, None], 1)
    kp[torch.as_tensor(index < 0)] = 0.0
    m = rows.num_animals
    if m > n:
        kp = torch.cat([kp, kp.new_zeros((b, m - n) + tuple(kp.shape[2:]))], 1)
        index = np.concatenate([index, np.full((b, m - n), -1)], 1)
    elif m < n:
        if (index[:, m:] >= 0).any():
            raise ValueError(f"a frame has more instances than the config's {m} individuals")
        kp, index = kp[:, :m], index[:, :m]
    # DeepLabCut's box, moved by the augmentation (image -> input: the affine's inverse)
    box = _gather(rows.boxes, index, 0.0)                         # (B, M, 4) image xywh
    x0, y0, x1, y1 = box[..., 0], box[..., 1], box[..., 0] + box[..., 2], box[..., 1] + box[..., 3]
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1),
                        np.stack([x0, y1], -1), np.stack([x1, y1], -1)], -2)   # (B, M, 4, 2)
    a = np.concatenate([affine.numpy(), np.tile([[[0.0, 0.0, 1.0]]], (b, 1, 1))], 1)
    fwd = np.linalg.inv(a)
    xy = np.einsum("bij,bmcj->bmci", fwd[:, :2, :2], corners) + fwd[:, None, None, :2, 2]
    h, w = int(image_shape[-2]), int(image_shape[-1])
    lo = np.clip(xy.min(-2), 0, [w, h])
    hi = np.clip(xy.max(-2), 0, [w, h])
    boxes = np.concatenate([lo, hi - lo], -1)
    area = np.maximum(boxes[..., 2], 1) * np.maximum(boxes[..., 3], 1)
    return kp, index, boxes, area


def pad_with_mean(image: torch.Tensor, affine: np.ndarray, sizes: np.ndarray) -> None:
    """DeepLabCut's top-down padding, in place on posefeed's normalised ``image`` (B, 3, H, W).

    DeepLabCut normalises the frame, zero-pads it where the crop leaves it (0 is the ImageNet
    mean colour) and resizes; posefeed warps the uint8 frame with a black border, then
    normalises. Bilinear weights ``w_i`` over frame pixels ``x_i``: DeepLabCut's value is
    ``sum_in w_i n(x_i)``, posefeed's ``n(sum_in w_i x_i)`` (``n(x) = (x - MEAN) / STD``), so
    DeepLabCut's = posefeed's + ``alpha * MEAN / STD`` with ``alpha = 1 - sum_in w_i``, the
    warp's weight outside the frame: 1 minus the frame's mask warped by the same matrix
    (``affine (B, 2, 3)`` input -> image pixel centres; ``sizes (B, 2)`` the frames' w, h).
    Exact up to posefeed's rounding of the warp to uint8; crops inside their frame are left
    alone (nothing to add)."""
    import cv2  # noqa: PLC0415 - OpenCV only where it runs

    if not image.is_floating_point():
        return
    b, _, h, w = image.shape
    corners = np.array([[0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], np.float64)
    colour = None
    ones: dict[tuple[int, int], np.ndarray] = {}     # the frame mask, once per frame size
    for i in range(b):
        fw, fh = (int(v) for v in sizes[i])
        x, y = np.asarray(affine[i], np.float64) @ corners
        if x.min() >= 0 and y.min() >= 0 and x.max() <= fw - 1 and y.max() <= fh - 1:
            continue
        mask = ones.get((fh, fw))
        if mask is None:
            mask = ones[(fh, fw)] = np.ones((fh, fw), np.float32)
        inside = cv2.warpAffine(mask, np.asarray(affine[i], np.float64),
                                (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        if colour is None:
            colour = torch.as_tensor(np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD),
                                     dtype=image.dtype, device=image.device)[:, None, None]
        alpha = torch.from_numpy(1.0 - inside).to(device=image.device, dtype=image.dtype)
        image[i] += alpha[None] * colour


def _top_down(kp: torch.Tensor, index: np.ndarray, affine: torch.Tensor, rows: ShuffleRows):
    """Top-down: DeepLabCut's crop keypoints, offsets and scales (`dlc_boxes.to_dlc_crop`)
    and its in-crop box and area (`dlc_boxes.crop_boxes`)."""
    kp_d, offsets, scales = to_dlc_crop(kp[:, :1].cpu().numpy(), affine.numpy(), rows.crop_size)
    box = _gather(rows.boxes, index[:, 0], 0.0)
    boxes, area = crop_boxes(box, offsets, scales, rows.crop_size)
    return torch.from_numpy(kp_d), offsets, scales, boxes[:, None], area[:, None]


class DLCBatches:
    """An iterable of DeepLabCut batch dicts over a PoseLoader (``len``, ``set_epoch`` and
    ``state_dict`` pass through; each pass over it is the next epoch)."""

    def __init__(self, loader: PoseLoader, dropped: list[str] | None = None,
                 rows: ShuffleRows | None = None) -> None:
        self.loader = loader
        self.table = loader.table
        self.dropped = list(dropped or [])
        self.rows = rows if rows is not None else default_rows(self.table)
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.loader.set_epoch(self._epoch)
        self._epoch += 1
        for batch in self.loader:
            yield to_dlc_batch(batch, self.table, self.rows)

    def close(self) -> None:
        self.loader.close()


@dataclass
class Loaders:
    """The train and test loaders of a shuffle, and what was read to make them."""

    train: DLCBatches
    test: DLCBatches
    model_cfg: dict
    model_folder: Path
    dropped: list[str]
    history: dict = field(default_factory=dict)  # train_network: the runner's loss history
    #: train_network: whether a top-down shuffle's detector was trained first (DeepLabCut's)
    detector_trained: bool = False
    #: the decoded-frame cache the loaders have ("device", "host" or None)
    cache: str | None = None


def make_loaders(config: str | Path, shuffle: int = 1, trainingsetindex: int = 0,
                 device: str = "auto", batch_size: int | None = None,
                 augment: bool = True, ignore: Iterable[str] = (), modelprefix: str = "",
                 seed: int | None = None, num_threads: int | None = None,
                 cache: str | None = "auto",
                 input_size: tuple[int, int] | None = None) -> Loaders:
    """Train and test loaders for a DeepLabCut 3 shuffle (project ``config.yaml``).

    Train: the shuffle's train split, ``data.train`` mapped onto posefeed (``augment=False``:
    none, the whole frame), ``train_settings.batch_size`` (or ``batch_size``), shuffled,
    full batches only. Test: the test split, one frame per batch at its own size, no
    augmentation, in order (what DeepLabCut's ``valid_dataloader`` gives).
    ``input_size``: the train loader's (w, h) (default: the crop size, or the frame).
    ``ignore``: DeepLabCut augmentation options to leave out instead of raising.
    ``cache``: the decoded-frame cache of both loaders: "auto" (default) picks as ``posefeed
    train`` does, the device cache on a GPU pipeline, else the host cache, else none when
    neither fits (`CacheTooLarge`; logged, and kept in ``loaders.cache``); or "host",
    "device", None (decode every step). Measured on openfield (docs/benchmarks.md): the host
    cache takes the PNG decode (~4.5 ms a frame here) out of every step."""
    dlc = DLCLoader(config=str(config), shuffle=shuffle, trainset_index=trainingsetindex,
                    modelprefix=modelprefix)
    model_cfg = dlc.model_cfg
    task = str(dlc.pose_task.name)
    if task not in ("BOTTOM_UP", "TOP_DOWN"):
        raise ValueError(f"{dlc.model_config_path}: method {model_cfg.get('method')!r}: "
                         "make_loaders supports bottom-up and top-down shuffles")
    top_down = task == "TOP_DOWN"
    train_table, test_table = shuffle_tables(dlc)
    train_cfg = dict(model_cfg["data"]["train"])
    margin = float(model_cfg["data"].get("bbox_margin", 20))
    individuals = [str(i) for i in model_cfg["metadata"]["individuals"]]
    if top_down:
        crop, train_table, test_table = _top_down_tables(model_cfg, train_table, test_table,
                                                         margin)
        train_cfg.pop("top_down_crop", None)
    if augment:
        mapped = map_augmentation(train_cfg, ignore, top_down=top_down)
    else:
        mapped = MappedAugmentation(NO_AUGMENTATION, None, [])
    if mapped.dropped:
        log.warning("make_loaders: left out DeepLabCut augmentation %s", ", ".join(mapped.dropped))
    if mapped.flip_pairs is not None:         # DeepLabCut's symmetries, or none
        train_table = replace(train_table, flip_pairs=mapped.flip_pairs)
    bs = int(batch_size or model_cfg["train_settings"]["batch_size"])
    s = int(model_cfg["train_settings"].get("seed", 42) if seed is None else seed)
    common = dict(device=device, seed=s, num_threads=num_threads)
    if top_down:
        geometry = dict(box_padding=1.0, box_keep_aspect=False)
        train, used = _cached_loader(cache, train_table, (), mode="topdown",
                                     input_size=input_size or crop, batch_size=bs,
                                     schedule=mapped.config.with_(**geometry), shuffle=True,
                                     drop_last=True, **common)
        test, _ = _cached_loader(cache if used is not None else None, test_table, (),
                                 mode="topdown", input_size=crop, batch_size=1,
                                 schedule=NO_AUGMENTATION.with_(**geometry), shuffle=False,
                                 drop_last=False, **common)
        crop_size: tuple[int, int] | None = crop
    else:
        frame = tuple(int(v) for v in train_table.image_sizes[0])
        train, used = _cached_loader(cache, train_table, (), mode="frame",
                                     input_size=input_size or mapped.input_size or frame,
                                     batch_size=bs, schedule=mapped.config, shuffle=True,
                                     drop_last=True, **common)
        test_sizes = {tuple(int(v) for v in r) for r in test_table.image_sizes}
        if len(test_sizes) != 1:
            raise ValueError(f"test frames have several sizes {sorted(test_sizes)}: the test "
                             "loader needs one (DeepLabCut evaluates each frame at its own size)")
        test, _ = _cached_loader(cache if used is not None else None, test_table, (),
                                 mode="frame", input_size=test_sizes.pop(), batch_size=1,
                                 schedule=NO_AUGMENTATION, shuffle=False, drop_last=False,
                                 **common)
        crop_size = None
    log.info("make_loaders: %s pipeline, frame cache %s", train.device, used or "none")
    center = bool(model_cfg.get("with_center_keypoints", False))
    if center and top_down:
        raise ValueError(f"{dlc.model_config_path}: with_center_keypoints in a top-down shuffle")
    rows = [shuffle_rows(t, individuals, margin, crop_size, center)
            for t in (train_table, test_table)]
    return Loaders(DLCBatches(train, mapped.dropped, rows[0]), DLCBatches(test, [], rows[1]),
                   model_cfg, Path(dlc.model_folder), mapped.dropped, cache=used)


def _top_down_tables(model_cfg: dict, train: PoseTable, test: PoseTable, margin: float
                     ) -> tuple[tuple[int, int], PoseTable, PoseTable]:
    """The crop size and the tables of a top-down shuffle: one row per DeepLabCut
    annotation (an individual with a visible label; unique bodyparts' rows left out), its
    box the region DeepLabCut's ``top_down_crop`` reads (`top_down_regions`)."""
    crop_cfg = dict(model_cfg["data"]["train"].get("top_down_crop") or {})
    crop = (int(crop_cfg.get("width", 256)), int(crop_cfg.get("height", 256)))
    if not crop_cfg.get("crop_with_context", True):
        raise UnsupportedAugmentation("top_down_crop.crop_with_context", "false pads the box "
                                      "to the crop's aspect with black instead of the image "
                                      "around it; posefeed's crop reads the image")
    out = []
    for table in (train, test):
        vis = dlc_visible(table.keypoints, table.image_sizes)
        names = np.asarray(table.frame[("individual", "")]).astype(str)
        table = table.subset(np.flatnonzero(vis.any(axis=1) & (names != "single")))
        boxes, _ = dlc_boxes(table.keypoints, table.image_sizes, margin)
        regions = top_down_regions(boxes, crop, float(crop_cfg.get("margin", 0)))
        frame = table.frame.copy()
        for j, f in enumerate(("x", "y", "w", "h")):
            frame[("bbox", f)] = region_boxes(regions)[:, j]
        out.append(PoseTable(frame, table.bodyparts, table.flip_pairs, table.skeleton,
                             table.root, table.problems, table.unique_bodyparts))
    return crop, out[0], out[1]


def _cached_loader(cache: str | None, table: PoseTable, codecs: tuple, device: str = "auto",
                   **kw: Any) -> tuple[PoseLoader, str | None]:
    """A PoseLoader with ``cache``; "auto": the device cache (GPU pipelines), then the host
    cache, then none, the first that fits. Returns the loader and the cache it has."""
    if cache != "auto":
        return PoseLoader(table, codecs, cache=cache, device=device, **kw), cache
    gpu = device == "gpu" or (device == "auto" and torch.cuda.is_available())
    why = []
    for option in (("device", "host") if gpu else ("host",)):
        try:
            return PoseLoader(table, codecs, cache=option, device=device, **kw), option
        except CacheTooLarge as e:
            why.append(f"cache={option!r} does not fit: {e}")
    log.info("make_loaders: no frame cache (%s)", "; ".join(why))
    return PoseLoader(table, codecs, device=device, **kw), None
