"""posefeed's PoseLoader as DeepLabCut 3's training data loader.

``make_loaders(config, shuffle, trainingsetindex)`` reads the shuffle the way DeepLabCut does
(``DLCLoader``: the shuffle's ``pytorch_config.yaml`` and its train/test split from the
training-dataset's ``Documentation_data-*.pickle``, rows of the training-dataset's
``CollectedData_*.h5``), maps the shuffle's ``data.train`` augmentation onto posefeed's
`AugmentConfig` and returns two iterables whose batches are the dict
``PoseTrainingRunner.step`` consumes (see `to_dlc_batch`).

Coordinates: DeepLabCut's keypoints are the CollectedData label coordinates as they are, in
image pixels with integer coordinates at pixel centres; that is posefeed's convention too
(origin at the centre of the top-left pixel), so there is no conversion at the boundary:
``annotations["keypoints"]`` are posefeed's batch keypoints (input pixels after augmentation)
and map back to image pixels with the batch's ``affine``. With augmentation off and the input
the frame's size, the affine is the identity and the keypoints are the labels exactly (tested
against DeepLabCut's own dataset).

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
* anything else that is set (``covering``, ``resize``, ``longest_max_size``,
  ``random_bbox_transform``, ``hist_eq``, ``elastic_transform``, ``grayscale``,
  ``auto_padding``, ``scale_to_unit_range``, ``top_down_crop``, ``collate``):
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

from posefeed.datasets import load_dlc
from posefeed.datasets.table import PoseTable
from posefeed.pipelines import AugmentConfig, CacheTooLarge, PoseLoader
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


def map_augmentation(train_cfg: dict, ignore: Iterable[str] = ()) -> MappedAugmentation:
    """DeepLabCut's ``data.train`` (a dict from pytorch_config.yaml) -> posefeed (see the
    module docstring for the mapping and what raises `UnsupportedAugmentation`)."""
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
    if affine is not None:                     # DeepLabCut builds Affine for any mapping
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
    return MappedAugmentation(cfg, input_size, dropped, flip_pairs)


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


@dataclass(frozen=True)
class TableRows:
    """Per table row, what `to_dlc_batch` reads (looked up once per loader, not per batch:
    pandas lookups cost ~10-30 ms a batch): ``paths (R,)`` image paths (str objects),
    ``sizes (R, 2)`` int64 (w, h), ``ids (R,)`` int64 the individual's position among the
    table's sorted individual names."""

    paths: np.ndarray
    sizes: np.ndarray
    ids: np.ndarray


def table_rows(table: PoseTable) -> TableRows:
    """`TableRows` of ``table``."""
    images = table.frame[("image", "")].tolist()
    inds = [str(i) for i in table.frame[("individual", "")].tolist()]
    names = {n: i for i, n in enumerate(sorted(set(inds)))}
    return TableRows(np.array([str(table.image_path(im)) for im in images], dtype=object),
                     table.image_sizes, np.array([names[i] for i in inds], dtype=np.int64))


def to_dlc_batch(batch: dict[str, torch.Tensor], table: PoseTable,
                 rows: TableRows | None = None) -> dict[str, Any]:
    """A PoseLoader batch (frame mode) -> the dict DeepLabCut's ``PoseTrainingRunner.step``
    and its evaluation read (names, dtypes and shapes as DeepLabCut's collated
    ``PoseDataset`` items): ``image`` (B, 3, H, W) float32 (ImageNet-normalised),
    ``annotations`` {``keypoints`` (B, N, K, 3) float32 (input pixels; x, y = -1 where
    ``v <= 0``, as DeepLabCut marks invisible keypoints), ``keypoints_unique`` (B, 0),
    ``with_center_keypoints`` (B,) bool, ``area`` (B, N) float32, ``boxes`` (B, N, 4) float32
    xywh (input pixels), ``is_crowd`` (B, N) int64, ``labels`` (B, N) int64 (1, -1 for
    padding), ``individual_ids`` (B, N) int64 (-1 for padding)}, ``image_id`` (B,) int64,
    ``path`` list of B str, ``original_size`` (B, 3) int64 (h, w, 3), ``offsets`` (B, 2)
    int64 zeros and ``scales`` (B, 2) float64 ones (bottom-up: the input is the image space
    DeepLabCut evaluates in), ``context`` {} and posefeed's ``affine`` (B, 2, 3). ``rows``:
    `table_rows` ``(table)``, made once by the caller (else here, each call)."""
    kp = batch["keypoints"].float().clone()                      # (B, N, K, 3)
    index = batch["index"].cpu().numpy()                        # (B, N) table rows, -1 padding
    b, n = index.shape
    hidden = kp[..., 2] <= 0
    kp[..., 0][hidden] = -1.0
    kp[..., 1][hidden] = -1.0
    valid = index >= 0
    first = index[:, 0]
    rows = table_rows(table) if rows is None else rows
    paths = rows.paths[first].tolist()
    sizes = rows.sizes[first]                                   # (B, 2) w, h
    ids = np.where(valid, rows.ids[np.where(valid, index, 0)], -1)
    # boxes: the labelled keypoints' extent in input pixels (DeepLabCut adds its bbox_margin;
    # bottom-up heads and their metrics do not read them)
    vis = ~hidden
    big = torch.tensor(1e9)
    x0 = torch.where(vis, kp[..., 0], big).amin(-1)
    y0 = torch.where(vis, kp[..., 1], big).amin(-1)
    x1 = torch.where(vis, kp[..., 0], -big).amax(-1)
    y1 = torch.where(vis, kp[..., 1], -big).amax(-1)
    has = vis.any(-1)
    boxes = torch.stack([x0, y0, x1 - x0, y1 - y0], -1)
    boxes = torch.where(has[..., None], boxes, torch.zeros_like(boxes))
    area = boxes[..., 2].clamp(min=1) * boxes[..., 3].clamp(min=1)
    dev = batch["image"].device
    annotations = {
        "keypoints": kp,
        "keypoints_unique": torch.zeros((b, 0), dtype=torch.float32, device=dev),
        "with_center_keypoints": torch.zeros(b, dtype=torch.bool, device=dev),
        "area": torch.where(torch.as_tensor(valid, device=dev), area, torch.zeros_like(area)),
        "boxes": boxes,
        "is_crowd": torch.zeros((b, n), dtype=torch.int64, device=dev),
        "labels": torch.as_tensor(np.where(valid, 1, -1), dtype=torch.int64, device=dev),
        "individual_ids": torch.as_tensor(ids, dtype=torch.int64, device=dev),
    }
    return {
        "image": batch["image"],
        "image_id": torch.as_tensor(first + 1, dtype=torch.int64),
        "path": paths,
        "original_size": torch.as_tensor(np.stack([sizes[:, 1], sizes[:, 0], np.full(b, 3)], 1),
                                         dtype=torch.int64),
        "offsets": torch.zeros((b, 2), dtype=torch.int64),
        "scales": torch.ones((b, 2), dtype=torch.float64),
        "annotations": annotations,
        "context": {},
        "affine": batch["affine"],
    }


class DLCBatches:
    """An iterable of DeepLabCut batch dicts over a PoseLoader (``len``, ``set_epoch`` and
    ``state_dict`` pass through; each pass over it is the next epoch)."""

    def __init__(self, loader: PoseLoader, dropped: list[str] | None = None) -> None:
        self.loader = loader
        self.table = loader.table
        self.rows = table_rows(self.table)
        self.dropped = list(dropped or [])
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
    if str(dlc.pose_task.name) != "BOTTOM_UP":
        raise ValueError(f"{dlc.model_config_path}: method {model_cfg.get('method')!r}: "
                         "make_loaders supports bottom-up shuffles only (no top-down crops yet)")
    train_table, test_table = shuffle_tables(dlc)
    if augment:
        mapped = map_augmentation(dict(model_cfg["data"]["train"]), ignore)
    else:
        mapped = MappedAugmentation(NO_AUGMENTATION, None, [])
    if mapped.dropped:
        log.warning("make_loaders: left out DeepLabCut augmentation %s", ", ".join(mapped.dropped))
    if mapped.flip_pairs is not None:         # DeepLabCut's symmetries, or none
        train_table = replace(train_table, flip_pairs=mapped.flip_pairs)
    frame = tuple(int(v) for v in train_table.image_sizes[0])
    size = input_size or mapped.input_size or frame
    bs = int(batch_size or model_cfg["train_settings"]["batch_size"])
    s = int(model_cfg["train_settings"].get("seed", 42) if seed is None else seed)
    train, used = _cached_loader(cache, train_table, (), mode="frame", input_size=size,
                                 batch_size=bs, schedule=mapped.config, device=device, seed=s,
                                 shuffle=True, drop_last=True, num_threads=num_threads)
    test_sizes = {tuple(int(v) for v in r) for r in test_table.image_sizes}
    if len(test_sizes) != 1:
        raise ValueError(f"test frames have several sizes {sorted(test_sizes)}: the test loader "
                         "needs one (DeepLabCut evaluates each frame at its own size)")
    test, _ = _cached_loader(cache if used is not None else None, test_table, (),
                             mode="frame", input_size=test_sizes.pop(), batch_size=1,
                             schedule=NO_AUGMENTATION, device=device, seed=s, shuffle=False,
                             drop_last=False, num_threads=num_threads)
    log.info("make_loaders: %s pipeline, frame cache %s", train.device, used or "none")
    return Loaders(DLCBatches(train, mapped.dropped), DLCBatches(test), model_cfg,
                   Path(dlc.model_folder), mapped.dropped, cache=used)


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
