"""The feed: the batch-mode ``external_source`` callable that drives the DALI graph.

For batch ``i`` of epoch ``e`` the source takes the batch's samples from the order
(`posefeed.pipelines.order`), reads the encoded image bytes or takes decoded frames from a
cache (`posefeed.pipelines.images`), samples every augmentation parameter vectorised with
``np.random.default_rng([seed, e, i, rank])`` and moves the keypoints with the crop
matrices. No per-sample Python beyond reading the bytes.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from nvidia.dali.tensors import TensorListCPU

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

#: every field the feed can compute, by name (the graph reads a subset, `GraphSpec.fields`;
#: the source computes only those)
FIELDS = ("images", "roi_anchor", "roi_shape", "warp", "crop_affine", "hue", "saturation",
          "value", "hsv_lut", "hsv_on", "blur", "blur_kernel", "blur_size", "median",
          "median_window", "median_kernel", "median_size", "drop_anchor", "drop_shape",
          "drop_box", "keypoints", "index", "affine", "motion", "motion_kernel",
          "motion_filter", "noise", "noise_std", "noise_cv")
OUTPUTS = FIELDS  # the name before the feed was named

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

    def __init__(self, table: PoseTable, spec: SourceSpec, reader: ImageReader,
                 fields: Sequence[str] = FIELDS, lookahead: bool = True,
                 tensor_lists: Sequence[str] = ()):
        if spec.mode not in ("topdown", "frame"):
            raise ValueError(f"mode must be 'topdown' or 'frame', got {spec.mode!r}")
        if spec.on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {spec.on_bad_image!r}")
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown feed fields {unknown}; known: {list(FIELDS)}")
        self.table, self.spec, self.reader = table, spec, reader
        #: the fields each call computes (the graph's `GraphSpec.fields`)
        self.fields = tuple(fields)
        not_fed = [f for f in tensor_lists if f not in self.fields]
        if not_fed:
            raise ValueError(f"tensor_lists {not_fed} are not among the fields {list(self.fields)}")
        #: fields handed to DALI as ``TensorListCPU`` built in `prepare` (in the look-ahead
        #: thread): DALI's feed then takes them as they are, where it converts a NumPy array
        #: with ~11 us of Python per field on the thread that runs the pipeline
        #: (``_prep_data_for_feed_input``); the tensor list shares the array's memory
        self.tensor_lists = tuple(tensor_lists)
        #: prepare batch N+1 in a background thread while DALI runs batch N
        self.lookahead = bool(lookahead)
        self._ahead: tuple[tuple[int, int], Future] | None = None
        self._thread: ThreadPoolExecutor | None = None
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
        #: batches per epoch (read on every call of the feed; `seek` counts them again)
        self._len = self._count_batches()
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
        return self._len

    def _count_batches(self) -> int:
        s = self.spec
        return num_batches(self.num_samples, s.world, s.batch_size, s.drop_last)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """This shard's batches of sample ids for ``epoch``."""
        cached = self._plan          # read once: the look-ahead thread may replace it
        if cached is None or cached[0] != epoch:
            s = self.spec
            order = epoch_order(self.num_samples, s.seed, epoch, s.shuffle)
            cached = (epoch, shard_batches(order, s.rank, s.world, s.batch_size, s.drop_last))
            self._plan = cached
        return cached[1]

    def seek(self, epoch: int, batch: int = 0) -> None:
        """Position the stream at ``batch`` of ``epoch`` (drops a prepared batch)."""
        self.cancel()
        self._len = self._count_batches()
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
        unchecked = ~self.reader.checked[images]
        if unchecked.any():
            for i in np.unique(images[unchecked]):
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
        rows, params, self.last_replaced = self._batch(epoch, index, check_images)
        return rows, params

    def _batch(self, epoch: int, index: int, check_images: bool = True
               ) -> tuple[np.ndarray, BatchParams, list[tuple]]:
        """`batch` and its replacements, without touching shared state (the look-ahead
        thread runs it)."""
        s = self.spec
        ids = self.plan(epoch)[index]
        replaced: list[tuple] = []
        if check_images:
            ids, replaced = self._replace_bad(ids)
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
        return np.where(valid, rows, -1), params, replaced

    def prepare(self, epoch: int, index: int) -> "PreparedBatch":
        """Everything batch ``index`` of ``epoch`` feeds the graph: a pure function of (seed,
        epoch, index, rank) and the set of bad files. The batch's files are read and checked
        first, by the reader's threads (each file checked once, its bytes reused)."""
        ids = self.plan(epoch)[index]
        first = self.sample_image[ids]
        ring = self.reader.ring is not None      # frames checked when cached: gather once
        early = "images" in self.fields and not ring
        images = self.reader.get_many(first) if early else None
        rows, p, replaced = self._batch(epoch, index)
        image_ids = self.row_image[rows[:, 0]]
        if "images" in self.fields and (ring or (replaced and self.reader.dense_bytes)):
            images = self.reader.get_many(image_ids)
        elif images is not None and replaced:     # rare: read the replacements
            changed = np.flatnonzero(image_ids != first)
            for j, data in zip(changed, self.reader.get_many(image_ids[changed])):
                images[j] = data
        feed = feed_fields(self.fields, images, rows, p, self._sizes[rows[:, 0]],
                           self.spec.input_size, self.spec.roi)
        for name in self.tensor_lists:
            feed[name] = TensorListCPU(np.ascontiguousarray(feed[name]), "")
        return PreparedBatch(epoch, index, image_ids, replaced, feed)

    def __call__(self) -> dict[str, Any]:
        """The next batch's feed (`fields` by name); ``StopIteration`` at the epoch's end."""
        if self._next >= len(self):
            raise StopIteration
        key = (self._epoch, self._next)
        try:
            if self._ahead is not None and self._ahead[0] == key:
                fut, self._ahead = self._ahead[1], None
                prepared = fut.result()
            else:
                self.cancel()
                prepared = self.prepare(*key)
        except Exception as e:
            self.last_error = e
            raise
        self._next += 1
        if prepared.replaced:
            self.replaced[key] = prepared.replaced
        self.last_replaced = prepared.replaced
        self.recent.append(prepared.image_ids)
        del self.recent[:-4]
        if self.lookahead and self._next < len(self):
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="posefeed-feed")
            nxt = (self._epoch, self._next)
            self._ahead = (nxt, self._thread.submit(self.prepare, *nxt))
        return prepared.feed

    def cancel(self) -> None:
        """Drop the batch being prepared ahead (waits for it: it reads the reader's state)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].exception()     # wait; its result or error is discarded

    def close(self) -> None:
        """Stop the look-ahead thread and the reader's threads (both restart on use)."""
        self.cancel()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)
        self.reader.close()


@dataclass
class PreparedBatch:
    """One batch ready for the graph: its feed and what the loader reports about it."""

    epoch: int
    index: int
    image_ids: np.ndarray                    # (B,) image of each sample
    replaced: list = field(default_factory=list)   # (sample, replacement, path, why)
    feed: dict[str, Any] = field(default_factory=dict)


def feed_fields(fields: Sequence[str], images: list | None, rows: np.ndarray, p: BatchParams,
                image_sizes: np.ndarray, input_size: tuple[int, int], roi: bool
                ) -> dict[str, Any]:
    """The named feed for one batch: only ``fields`` are computed (see `FIELDS`). With
    ``roi``, the crop matrices are relative to the decoded region ``roi_anchor``/``roi_shape``
    (else to the whole frame). Shapes: per-sample parameters ``(B,)`` or ``(B, ...)``;
    matrices in input pixels (``affine``: input -> image, pixel centres; ``warp``: DALI's
    output -> input, pixel corners)."""
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
    if "index" in need:
        out["index"] = rows.astype(np.int64).reshape(b, -1)
    if "affine" in need:
        out["affine"] = p.inverse[:, :2, :].astype(f32)
    return out


def dali_feed(images: list, rows: np.ndarray, p: BatchParams, image_sizes: np.ndarray,
              input_size: tuple[int, int], roi: bool) -> tuple:
    """All of `FIELDS` for one batch, as a tuple in that order."""
    feed = feed_fields(FIELDS, images, rows, p, image_sizes, input_size, roi)
    return tuple(feed[f] for f in FIELDS)


SourceFn = Callable[[], dict]
