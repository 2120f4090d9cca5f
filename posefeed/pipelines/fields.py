"""The per-batch fields of the feed, as pure functions of plain values: for batch ``i`` of
epoch ``e`` the sample ids (`posefeed.pipelines.order`), the augmentation parameters sampled
with ``np.random.default_rng([seed, e, i, rank])`` and every field the graph reads that needs
no image bytes or frames (`feed_fields`).

NumPy only (no DALI, torch or pandas): the feed's worker process
(`posefeed.pipelines.feed_process`) imports this module and computes the same numbers as the
loader's own process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from posefeed.pipelines.augment import Schedule, config_for_epoch
from posefeed.pipelines.geometry import dali_warp_matrix, shift_origin, source_roi
from posefeed.pipelines.opencv_ops import hsv_luts
from posefeed.pipelines.order import epoch_order, num_batches, shard_batches
from posefeed.pipelines.params import BatchParams, box_kernels, sample_batch

#: every field the feed can compute, by name (the graph reads a subset, `graph_fields`;
#: the source computes only those). ``area`` and ``individual_ids`` pass through the graph
#: to the batch (`GraphSpec.extra_outputs`).
FIELDS = ("images", "roi_anchor", "roi_shape", "warp", "crop_affine", "hue", "saturation",
          "value", "hsv_lut", "hsv_on", "blur", "blur_kernel", "blur_size", "median",
          "median_window", "median_kernel", "median_size", "drop_anchor", "drop_shape",
          "drop_box", "keypoints", "index", "affine", "motion", "motion_kernel",
          "motion_filter", "noise", "noise_std", "noise_cv", "area", "individual_ids")


@dataclass
class SourceSpec:
    """Everything that determines the sample stream (all plain values)."""

    mode: str
    input_size: tuple[int, int]
    batch_size: int
    schedule: Schedule
    seed: int
    shuffle: bool
    drop_last: bool
    rank: int
    world: int
    on_bad_image: str
    roi: bool = False     # crop matrices relative to the decoded region (ROI decode)


@dataclass
class SampleTables:
    """The table's arrays the fields are computed from (picklable, NumPy only).

    ``samples (S, N)`` int64 table rows of each sample (-1 padding; N = 1 topdown),
    ``sample_image (S,)`` the image of each sample's first row, ``row_image (R,)`` each row's
    image, ``keypoints (R, K, 3)`` float32, ``boxes (R, 4)`` xywh, ``sizes (R, 2)`` (w, h)
    image sizes, ``flip_perm (K,)``, ``upper``/``lower`` half-body keypoint sets,
    ``area_of_row (R,)`` float32 (image pixels², NaN unknown), ``individual_of_row (R,)``
    int64 (position in the loader's individuals)."""

    samples: np.ndarray
    sample_image: np.ndarray
    row_image: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    sizes: np.ndarray
    flip_perm: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    area_of_row: np.ndarray
    individual_of_row: np.ndarray

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def nbytes(self) -> int:
        return sum(np.asarray(getattr(self, f)).nbytes for f in self.__dataclass_fields__)


class Plan:
    """This shard's batches of sample ids per epoch, the last epoch's kept."""

    def __init__(self, num_samples: int, spec: SourceSpec):
        self.num_samples, self.spec = int(num_samples), spec
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def __len__(self) -> int:
        s = self.spec
        return num_batches(self.num_samples, s.world, s.batch_size, s.drop_last)

    def __call__(self, epoch: int) -> list[np.ndarray]:
        cached = self._cached          # read once: another thread may replace it
        if cached is None or cached[0] != epoch:
            s = self.spec
            order = epoch_order(self.num_samples, s.seed, epoch, s.shuffle)
            cached = (epoch, shard_batches(order, s.rank, s.world, s.batch_size, s.drop_last))
            self._cached = cached
        return cached[1]


def sample_params(tables: SampleTables, spec: SourceSpec, epoch: int, index: int,
                  ids: np.ndarray) -> tuple[np.ndarray, BatchParams]:
    """Rows ``(B, N)`` (-1 padding) of the samples ``ids`` and the parameters of batch
    ``index`` of ``epoch``, sampled with ``default_rng([seed, epoch, index, rank])``."""
    rows = tables.samples[ids]
    valid = rows >= 0
    safe = np.where(valid, rows, 0)
    kp = tables.keypoints[safe]
    kp[~valid] = 0.0
    first = safe[:, 0]
    rng = np.random.default_rng([int(spec.seed), int(epoch), int(index), int(spec.rank)])
    cfg = config_for_epoch(spec.schedule, epoch)
    params = sample_batch(rng, cfg, spec.mode, kp, tables.boxes[first], tables.sizes[first],
                          spec.input_size, tables.flip_perm, tables.upper, tables.lower)
    params.keypoints[~valid] = 0.0      # padding rows: all zero (v = 0)
    return np.where(valid, rows, -1), params


def batch_fields(tables: SampleTables, spec: SourceSpec, fields: Sequence[str], epoch: int,
                 index: int, ids: np.ndarray, images: Any = None,
                 packing: "Packing | None" = None) -> dict[str, Any]:
    """`feed_fields` of the samples ``ids`` as batch ``index`` of ``epoch`` (packed with
    ``packing``: `Packing.pack`)."""
    rows, p = sample_params(tables, spec, epoch, index, ids)
    feed = feed_fields(fields, images, rows, p, tables.sizes[rows[:, 0]], spec.input_size,
                       spec.roi, tables)
    return feed if packing is None else packing.pack(feed)


def instance_areas(area_of_row: np.ndarray, rows: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``area (B, N)`` float32: each instance's table area (image pixels²) in input pixels²,
    NaN where the table has none, 0 for padding (``rows`` -1).

    The crop maps image to input pixels by an affine map ``F`` (its inverse is the batch's
    ``affine (B, 2, 3)``); an affine map scales every area by ``|det`` of its linear part
    ``|`` (flips make it negative), so ``area_in = area_img * |det F| = area_img /
    |det affine[:, :2]|`` (``k^2`` for a crop that scales by ``k``, ``k_x k_y`` for a
    stretched one, unchanged by rotation). Float32 arithmetic throughout."""
    a = np.asarray(affine, dtype=np.float32)[:, :2, :2]
    det = np.abs(a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0])
    area = area_of_row[np.maximum(rows, 0)] / det[:, None]
    return np.where(rows >= 0, area, np.float32(0.0)).astype(np.float32, copy=False)


def feed_fields(fields: Sequence[str], images: list | None, rows: np.ndarray, p: BatchParams,
                image_sizes: np.ndarray, input_size: tuple[int, int], roi: bool,
                tables: SampleTables | None = None) -> dict[str, Any]:
    """The named feed for one batch: only ``fields`` are computed (see `FIELDS`). With
    ``roi``, the crop matrices are relative to the decoded region ``roi_anchor``/``roi_shape``
    (else to the whole frame). Shapes: per-sample parameters ``(B,)`` or ``(B, ...)``;
    matrices in input pixels (``affine``: input -> image, pixel centres; ``warp``: DALI's
    output -> input, pixel corners). ``area`` and ``individual_ids`` need ``tables``."""
    need = set(fields)
    b = len(rows)
    f32, i32 = np.float32, np.int32
    out: dict[str, Any] = {}
    if "images" in need:
        out["images"] = images
    anchor = shape = None
    if roi or need & {"roi_anchor", "roi_shape"}:
        anchor, shape = source_roi(p.inverse, input_size, image_sizes)
    if need & {"warp", "crop_affine"}:
        inverse = shift_origin(p.inverse, anchor) if roi else p.inverse
        if "warp" in need:
            out["warp"] = dali_warp_matrix(inverse)
        if "crop_affine" in need:
            out["crop_affine"] = inverse[:, :2, :].astype(f32)
    if "roi_anchor" in need:
        out["roi_anchor"] = anchor.astype(f32)
    if "roi_shape" in need:
        out["roi_shape"] = shape.astype(f32)
    if "hue" in need:
        out["hue"] = (2.0 * p.hue_gain).astype(f32)                 # OpenCV hue units -> degrees
    if "saturation" in need:
        out["saturation"] = (1.0 + p.saturation_gain / 128.0).astype(f32)  # additive -> gain
    if "value" in need:
        out["value"] = (1.0 + p.value_gain / 128.0).astype(f32)
    if "hsv_lut" in need:
        out["hsv_lut"] = hsv_luts(p.hue_gain, p.saturation_gain, p.value_gain)
    if "hsv_on" in need:
        out["hsv_on"] = (p.hue_gain != 0) | (p.saturation_gain != 0) | (p.value_gain != 0)
    if "blur" in need:
        out["blur"] = p.blur.copy()
    if "blur_kernel" in need:
        out["blur_kernel"] = box_kernels(p.blur_size)
    if "blur_size" in need:
        out["blur_size"] = np.where(p.blur, p.blur_size, 0).astype(i32)
    if "median" in need:
        out["median"] = p.median.copy()
    if "median_window" in need:
        out["median_window"] = np.stack([p.median_size, p.median_size], axis=1).astype(i32)
    if "median_kernel" in need:
        out["median_kernel"] = box_kernels(p.median_size)
    if "median_size" in need:
        out["median_size"] = np.where(p.median, p.median_size, 0).astype(i32)
    if need & {"drop_anchor", "drop_shape", "drop_box"}:
        box = np.where(p.dropout[:, None], p.dropout_box, 0)
        if "drop_anchor" in need:
            out["drop_anchor"] = box[:, :2].astype(f32)
        if "drop_shape" in need:
            out["drop_shape"] = box[:, 2:].astype(f32)
        if "drop_box" in need:
            out["drop_box"] = box.astype(i32)
    if "motion" in need:
        out["motion"] = p.motion.copy()
    if "motion_kernel" in need:
        out["motion_kernel"] = p.motion_kernel
    if "motion_filter" in need:                       # the OpenCV stage: all zero = off
        out["motion_filter"] = np.where(p.motion[:, None, None], p.motion_kernel, 0.0).astype(f32)
    if "noise" in need:
        out["noise"] = p.noise.copy()
    if "noise_std" in need:
        out["noise_std"] = p.noise_std.astype(f32)
    if "noise_cv" in need:                            # the OpenCV stage: (std, seed), std 0 = off
        out["noise_cv"] = np.stack([np.where(p.noise, p.noise_std, 0.0),
                                    p.noise_seed.astype(np.float64)], axis=1)
    if "keypoints" in need:
        out["keypoints"] = p.keypoints
    index = rows.astype(np.int64).reshape(b, -1)
    if "index" in need:
        out["index"] = index
    if "affine" in need:
        out["affine"] = p.inverse[:, :2, :].astype(f32)
    if need & {"area", "individual_ids"} and tables is None:
        raise ValueError("the fields 'area' and 'individual_ids' need the sample tables")
    if "area" in need:
        out["area"] = instance_areas(tables.area_of_row, index, p.inverse[:, :2, :])
    if "individual_ids" in need:
        out["individual_ids"] = np.where(index >= 0,
                                         tables.individual_of_row[np.maximum(index, 0)], -1)
    return out


#: the names of the packed parameter inputs (`Packing`)
PACKED = ("packed_f32", "packed_i64")


@dataclass(frozen=True)
class Packing:
    """The graph's parameter fields fed as two arrays instead of one input each: DALI's feed
    costs the thread that runs the pipeline ~5-18 us of Python per fed input
    (``Pipeline._feed_input``: stream lookup, conversion, ``SetExternalTLInput``), so 14
    inputs cost ~0.2 ms a batch where 2 cost ~0.03 (measured, docs/benchmarks.md).

    ``floats``: ``(name, start, shape, dtype)`` of each float32 or bool field in the
    ``(B, width_f)`` float32 array ``packed_f32`` (a bool as 0 / 1, exact);
    ``ints``: the int32 / int64 fields in the ``(B, width_i)`` int64 ``packed_i64`` (exact);
    ``shape`` is the per-sample shape, ``start`` the first column. Other dtypes are not
    packed (``rest``: fed as they are). The graph slices them back (`graph.unpack`)."""

    floats: tuple[tuple[str, int, tuple[int, ...], str], ...]
    ints: tuple[tuple[str, int, tuple[int, ...], str], ...]
    rest: tuple[str, ...]
    width_f: int
    width_i: int

    @classmethod
    def of(cls, feed: dict[str, Any], names: Sequence[str]) -> "Packing":
        """The packing of ``names`` from one computed batch ``feed`` (their shapes and
        dtypes do not change between batches)."""
        floats, ints, rest = [], [], []
        wf = wi = 0
        for name in names:
            a = np.asarray(feed[name])
            per, size = tuple(int(s) for s in a.shape[1:]), int(np.prod(a.shape[1:], dtype=np.int64))
            if a.dtype in (np.float32, np.bool_):
                floats.append((name, wf, per, a.dtype.str))
                wf += size
            elif a.dtype in (np.int32, np.int64):
                ints.append((name, wi, per, a.dtype.str))
                wi += size
            else:
                rest.append(name)
        return cls(tuple(floats), tuple(ints), tuple(rest), wf, wi)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The fed fields: `PACKED` (those with columns), then `rest`."""
        return tuple(n for n, w in zip(PACKED, (self.width_f, self.width_i)) if w) + self.rest

    def pack(self, feed: dict[str, Any]) -> dict[str, Any]:
        """``feed`` with the packed fields replaced by `PACKED` (other keys kept)."""
        out = {k: v for k, v in feed.items()
               if k not in {e[0] for e in self.floats + self.ints}}
        b = len(feed[(self.floats + self.ints)[0][0]]) if self.floats + self.ints else 0
        for key, entries, width, dtype in (("packed_f32", self.floats, self.width_f, np.float32),
                                           ("packed_i64", self.ints, self.width_i, np.int64)):
            if not width:
                continue
            packed = np.empty((b, width), dtype=dtype)
            for name, start, shape, _ in entries:
                size = int(np.prod(shape, dtype=np.int64))
                packed[:, start:start + size] = np.asarray(feed[name]).reshape(b, size)
            out[key] = packed
        return out

    def unpack(self, feed: dict[str, Any]) -> dict[str, np.ndarray]:
        """The fields back from a packed ``feed`` (NumPy; the graph does the same with DALI
        ops)."""
        out = {n: feed[n] for n in self.rest if n in feed}
        for key, entries in (("packed_f32", self.floats), ("packed_i64", self.ints)):
            for name, start, shape, dt in entries:
                size = int(np.prod(shape, dtype=np.int64))
                a = np.asarray(feed[key])[:, start:start + size]
                out[name] = a.reshape((len(a),) + shape).astype(np.dtype(dt))
        return out
