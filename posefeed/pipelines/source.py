"""The feed: the batch-mode ``external_source`` callable that drives the DALI graph.

For batch ``i`` of epoch ``e`` the source takes the batch's samples from the order
(`posefeed.pipelines.order`), reads the encoded image bytes or takes decoded frames from a
cache (`posefeed.pipelines.images`), samples every augmentation parameter vectorised with
``np.random.default_rng([seed, e, i, rank])`` and moves the keypoints with the crop
matrices. No per-sample Python beyond reading the bytes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from posefeed.datasets.table import PoseTable
from posefeed.pipelines.augment import Schedule, config_for_epoch
# re-exported: these names were importable from here before the split
from posefeed.pipelines.errors import BadImageError, PipelineError, rows_text  # noqa: F401
from posefeed.pipelines.geometry import dali_warp_matrix, shift_origin, source_roi
from posefeed.pipelines.images import (JPEG_MAGIC, PNG_MAGIC, READ_THREADS,  # noqa: F401
                                       ImageReader, check_image_bytes, decode_problem)
from posefeed.pipelines.opencv_ops import hsv_luts
from posefeed.pipelines.order import epoch_order, num_batches, shard_batches  # noqa: F401
from posefeed.pipelines.params import (BatchParams, box_kernels, flip_permutation,
                                       half_body_sets, sample_batch)

log = logging.getLogger("posefeed.pipelines")

#: names of the source's outputs, in the order the callable returns them (the graph uses the
#: ones its device / backend needs)
OUTPUTS = ("images", "roi_anchor", "roi_shape", "warp", "crop_affine", "hue", "saturation",
           "value", "hsv_lut", "hsv_on", "blur", "blur_kernel", "blur_size", "median",
           "median_window", "median_kernel", "median_size", "drop_anchor", "drop_shape",
           "drop_box", "keypoints", "index", "affine")

# -- the source ------------------------------------------------------------------------------
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


class BatchSource:
    """Deterministic batches for DALI's ``external_source(source=..., batch=True)``.

    Samples are table rows (topdown) or frames (frame mode; each a row list padded to the
    table's largest instance count with -1). ``seek(epoch, batch)`` positions the stream;
    each call returns the next batch and raises ``StopIteration`` at the end of the epoch.
    """

    def __init__(self, table: PoseTable, spec: SourceSpec, reader: ImageReader):
        if spec.mode not in ("topdown", "frame"):
            raise ValueError(f"mode must be 'topdown' or 'frame', got {spec.mode!r}")
        if spec.on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {spec.on_bad_image!r}")
        self.table, self.spec, self.reader = table, spec, reader
        codes = {im: i for i, im in enumerate(table.images)}
        self.row_image = np.array([codes[im] for im in table.frame[("image", "")]], dtype=np.int64)
        if spec.mode == "topdown":
            self.samples = np.arange(len(table), dtype=np.int64)[:, None]
        else:
            frames = table.frames()
            n_max = max((len(f) for f in frames), default=1)
            self.samples = np.full((len(frames), n_max), -1, dtype=np.int64)
            for i, rows in enumerate(frames):
                self.samples[i, : len(rows)] = rows
        self.sample_image = self.row_image[self.samples[:, 0]] if len(self.samples) else \
            np.zeros(0, dtype=np.int64)
        self._kp = table.keypoints
        self._boxes = table.bboxes
        self._sizes = table.image_sizes
        self._flip_perm = flip_permutation(table.num_keypoints, table.flip_pairs)
        self._upper, self._lower = half_body_sets(table.bodyparts)
        self._epoch, self._next = 0, 0
        #: ``(sample, replacement, path, why)`` for each sample `batch` replaced last time
        self.last_replaced: list[tuple] = []
        #: replacements of the batches handed to DALI since `seek`, by ``(epoch, batch)``
        self.replaced: dict[tuple[int, int], list[tuple]] = {}
        #: the exception the last call raised (to tell a source failure from a DALI one)
        self.last_error: BaseException | None = None
        self._plan: tuple[int, list[np.ndarray]] | None = None
        #: image ids of the batches handed to DALI, newest last (to name files on errors)
        self.recent: list[np.ndarray] = []

    # -- plan ---------------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def __len__(self) -> int:
        s = self.spec
        return num_batches(self.num_samples, s.world, s.batch_size, s.drop_last)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """This shard's batches of sample ids for ``epoch``."""
        if self._plan is None or self._plan[0] != epoch:
            s = self.spec
            order = epoch_order(self.num_samples, s.seed, epoch, s.shuffle)
            self._plan = (epoch, shard_batches(order, s.rank, s.world, s.batch_size, s.drop_last))
        return self._plan[1]

    def seek(self, epoch: int, batch: int = 0) -> None:
        self._epoch, self._next = int(epoch), int(batch)
        self.recent.clear()
        self.replaced.clear()
        self.last_error = None

    # -- batches ------------------------------------------------------------------------------
    def image_rows(self, image_id: int) -> list[int]:
        """Table rows whose image is ``image_id``."""
        return np.flatnonzero(self.row_image == image_id).tolist()

    def bad_image_error(self, image_id: int, why: str) -> BadImageError:
        path = self.reader.paths[image_id]
        rows = self.image_rows(image_id)
        return BadImageError(f"cannot decode image {path} ({rows_text(rows)}): {why}",
                             file=path, rows=rows)

    def _replace_bad(self, ids: np.ndarray) -> tuple[np.ndarray, list[tuple]]:
        """Check each sample's image; bad ones raise, or are replaced by the next good sample
        (in table order, wrapping around; a pure function of the set of bad files, so the
        same seed gives the same replacement). Returns the ids and one
        ``(sample, replacement, path, why)`` per replaced sample. Vectorised once every file
        has been checked."""
        images = self.sample_image[ids]
        for i in np.unique(images[~self.reader.checked[images]]):
            self.reader.bad_reason(int(i))
        if not self.reader.bad[images].any():
            return ids, []
        out = ids.copy()
        replaced = []
        for j, sid in enumerate(ids):
            image = int(self.sample_image[sid])
            why = self.reader.bad_reason(image)
            if why is None:
                continue
            if self.spec.on_bad_image == "raise":
                raise self.bad_image_error(image, why)
            nxt = int(sid)
            for _ in range(self.num_samples):
                nxt = (nxt + 1) % self.num_samples
                if self.reader.bad_reason(int(self.sample_image[nxt])) is None:
                    break
            else:
                raise BadImageError("no decodable image in the dataset",
                                    file=self.reader.paths[image])
            replaced.append((int(sid), nxt, self.reader.paths[image], why))
            out[j] = nxt
        return out, replaced

    def batch(self, epoch: int, index: int, check_images: bool = True
              ) -> tuple[np.ndarray, BatchParams]:
        """Rows ``(B, N)`` (-1 padding) and sampled parameters for batch ``index`` of ``epoch``
        (``check_images=False`` skips reading the files, for inspecting the plan)."""
        s = self.spec
        ids = self.plan(epoch)[index]
        self.last_replaced = []
        if check_images:
            ids, self.last_replaced = self._replace_bad(ids)
        rows = self.samples[ids]
        valid = rows >= 0
        safe = np.where(valid, rows, 0)
        kp = self._kp[safe]
        kp[~valid] = 0.0
        first = safe[:, 0]
        rng = np.random.default_rng([int(s.seed), int(epoch), int(index), int(s.rank)])
        cfg = config_for_epoch(s.schedule, epoch)
        params = sample_batch(rng, cfg, s.mode, kp, self._boxes[first], self._sizes[first],
                              s.input_size, self._flip_perm, self._upper, self._lower)
        params.keypoints[~valid] = 0.0      # padding rows: all zero (v = 0)
        return np.where(valid, rows, -1), params

    def __call__(self) -> tuple:
        if self._next >= len(self):
            raise StopIteration
        try:
            rows, p = self.batch(self._epoch, self._next)
            if self.last_replaced:
                self.replaced[(self._epoch, self._next)] = self.last_replaced
            self._next += 1
            image_ids = self.row_image[rows[:, 0]]
            images = self.reader.get_many(image_ids)
        except Exception as e:
            self.last_error = e
            raise
        self.recent.append(image_ids)
        del self.recent[:-4]
        return dali_feed(images, rows, p, self._sizes[rows[:, 0]], self.spec.input_size,
                         self.spec.roi)


def dali_feed(images: list, rows: np.ndarray, p: BatchParams, image_sizes: np.ndarray,
              input_size: tuple[int, int], roi: bool) -> tuple:
    """The source outputs (see `OUTPUTS`) for one batch. With ``roi``, the crop matrices are
    relative to the decoded region ``roi_anchor``/``roi_shape`` (else to the whole frame)."""
    b = len(rows)
    f32, i32 = np.float32, np.int32
    anchor, shape = source_roi(p.inverse, input_size, image_sizes)
    inverse = shift_origin(p.inverse, anchor) if roi else p.inverse
    drop = p.dropout[:, None]
    box = np.where(drop, p.dropout_box, 0)
    on = (p.hue_gain != 0) | (p.saturation_gain != 0) | (p.value_gain != 0)
    return (
        images,
        anchor.astype(f32),
        shape.astype(f32),
        dali_warp_matrix(inverse),
        inverse[:, :2, :].astype(f32),
        (2.0 * p.hue_gain).astype(f32),                 # OpenCV hue units -> degrees
        (1.0 + p.saturation_gain / 128.0).astype(f32),  # additive -> gain at mid-range
        (1.0 + p.value_gain / 128.0).astype(f32),
        hsv_luts(p.hue_gain, p.saturation_gain, p.value_gain),
        on,
        p.blur.copy(),
        box_kernels(p.blur_size),
        np.where(p.blur, p.blur_size, 0).astype(i32),
        p.median.copy(),
        np.stack([p.median_size, p.median_size], axis=1).astype(i32),
        box_kernels(p.median_size),
        np.where(p.median, p.median_size, 0).astype(i32),
        box[:, :2].astype(f32),
        box[:, 2:].astype(f32),
        box.astype(i32),
        p.keypoints,
        rows.astype(np.int64).reshape(b, -1),
        p.inverse[:, :2, :].astype(f32),
    )


SourceFn = Callable[[], tuple]
