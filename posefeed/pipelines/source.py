"""The sample source: a deterministic order over (seed, epoch, shard), and the batch-mode
``external_source`` callable that feeds the DALI graph.

For batch ``i`` of epoch ``e`` the source takes the batch's samples from the order, reads the
encoded image bytes (or takes decoded frames from a cache), samples every augmentation
parameter vectorised with ``np.random.default_rng([seed, e, i, rank])`` and moves the
keypoints with the crop matrices. No per-sample Python beyond reading the bytes.
"""
from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from posefeed.datasets.table import PoseTable
from posefeed.pipelines.augment import Schedule, config_for_epoch
from posefeed.pipelines.params import (BatchParams, box_kernels, flip_permutation,
                                       half_body_sets, sample_batch)
from posefeed.pipelines.geometry import dali_warp_matrix, shift_origin, source_roi
from posefeed.pipelines.opencv_ops import hsv_luts

log = logging.getLogger("posefeed.pipelines")

#: names of the source's outputs, in the order the callable returns them (the graph uses the
#: ones its device / backend needs)
OUTPUTS = ("images", "roi_anchor", "roi_shape", "warp", "crop_affine", "hue", "saturation",
           "value", "hsv_lut", "hsv_on", "blur", "blur_kernel", "blur_size", "median",
           "median_window", "median_kernel", "median_size", "drop_anchor", "drop_shape",
           "drop_box", "keypoints", "index", "affine")

#: threads that read encoded files in the source
READ_THREADS = 4

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class BadImageError(RuntimeError):
    """An image file that cannot be decoded (``file`` names it, ``rows`` lists the table rows
    that use it)."""

    def __init__(self, message: str, file: str | None = None, rows: list[int] | None = None):
        super().__init__(message)
        self.file = file
        self.rows = list(rows or [])


class PipelineError(RuntimeError):
    """The DALI pipeline failed on a batch whose image files all decode (a codec or another
    stage raised); the original exception is the ``__cause__``."""


def rows_text(rows: list[int], limit: int = 8) -> str:
    more = f" ... ({len(rows)} rows)" if len(rows) > limit else ""
    return f"table row{'s' if len(rows) != 1 else ''} {rows[:limit]}{more}"


def decode_problem(data: bytes, size: tuple[int, int] | None = None) -> str | None:
    """Why ``data`` cannot be fully decoded, or ``None``: the cheap checks
    (`check_image_bytes`), then a full decode with PIL and with OpenCV (a truncated JPEG passes
    the header checks but fails here). Used to find the file behind a decoder error."""
    why = check_image_bytes(data, size)
    if why is not None:
        return why
    try:
        from PIL import Image, ImageFile  # noqa: PLC0415

        if not ImageFile.LOAD_TRUNCATED_IMAGES:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        return f"PIL cannot decode it: {type(e).__name__}: {e}"
    import cv2  # noqa: PLC0415

    try:
        ok = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) is not None
    except cv2.error as e:
        return f"OpenCV cannot decode it: {e}"
    return None if ok else "OpenCV cannot decode it"


# -- order -----------------------------------------------------------------------------------
def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's sample order: a permutation seeded by ``(seed, epoch)``, or ``arange``."""
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_samples)


def shard_batches(order: np.ndarray, rank: int, world: int, batch_size: int,
                  drop_last: bool) -> list[np.ndarray]:
    """Split an epoch order into this shard's batches (sample ids).

    Shards take every ``world``-th sample, so they are disjoint. ``drop_last``: each shard
    gets ``n // world`` samples and drops its last partial batch. Otherwise the order is
    extended cyclically to a multiple of ``world`` (as torch's ``DistributedSampler``), and
    the last batch may be short. All shards get the same number of batches.
    """
    n = len(order)
    if drop_last:
        per = n // world
        mine = order[: per * world][rank::world]
        nb = per // batch_size
        return [mine[i * batch_size:(i + 1) * batch_size] for i in range(nb)]
    per = -(-n // world)
    mine = np.resize(order, per * world)[rank::world] if n else order
    nb = -(-per // batch_size)
    return [mine[i * batch_size:(i + 1) * batch_size] for i in range(nb)]


def num_batches(num_samples: int, world: int, batch_size: int, drop_last: bool) -> int:
    if drop_last:
        return (num_samples // world) // batch_size
    return -(-(-(-num_samples // world)) // batch_size)


# -- image bytes ---------------------------------------------------------------------------
def check_image_bytes(data: bytes, size: tuple[int, int] | None = None) -> str | None:
    """Why ``data`` is not a decodable JPEG/PNG of ``size`` (w, h), or ``None`` when it looks
    fine (magic number, header size, and PIL's ``verify``, which parses the headers / PNG
    chunks without decoding)."""
    if len(data) == 0:
        return "empty file"
    if not (data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC)):
        return "not a JPEG or PNG file (bad magic number)"
    try:
        from PIL import Image  # noqa: PLC0415

        with Image.open(io.BytesIO(data)) as im:
            got = (int(im.size[0]), int(im.size[1]))
            im.verify()
    except Exception as e:  # PIL raises many kinds
        return f"{type(e).__name__}: {e}"
    if size is not None and got != (int(size[0]), int(size[1])):
        return f"image is {got[0]}x{got[1]} but the table says {size[0]}x{size[1]}"
    return None


class ImageReader:
    """Reads encoded bytes of the table's unique images, validating each file once.

    ``frames``, when given, holds decoded frames (the cache) and replaces reading.
    """

    def __init__(self, table: PoseTable, frames: list | None = None):
        self.table = table
        self.paths = [str(table.image_path(im)) for im in table.images]
        first = ~table.frame[("image", "")].duplicated().to_numpy()
        #: ``(num_images, 2)`` (w, h) the table expects for each image
        self.sizes = table.image_sizes[first]
        self.frames = frames
        self._bad: dict[int, str] = {}
        self._checked = np.zeros(len(self.paths), dtype=bool)
        self._bad_mask = np.zeros(len(self.paths), dtype=bool)
        self._pool: ThreadPoolExecutor | None = None
        if frames is not None:
            for i, f in enumerate(frames):
                if f is None:
                    self._bad[i] = "failed to decode"
                    self._bad_mask[i] = True
            self._checked[:] = True

    @property
    def checked(self) -> np.ndarray:
        """``(num_images,)`` bool: the file has been read and checked."""
        return self._checked

    @property
    def bad(self) -> np.ndarray:
        """``(num_images,)`` bool: the file is known to be bad."""
        return self._bad_mask

    def bad_reason(self, image_id: int) -> str | None:
        """Why the image is bad (reads and checks it the first time), or ``None``."""
        if not self._checked[image_id]:
            self._read(image_id)
        return self._bad.get(image_id)

    def mark_bad(self, image_id: int, why: str) -> None:
        """Record that an image failed to decode (found by the decoder, after the checks)."""
        self._checked[image_id] = True
        self._bad[image_id] = why
        self._bad_mask[image_id] = True

    def read(self, image_id: int) -> bytes:
        """The file's bytes (empty when it cannot be read)."""
        try:
            with open(self.paths[image_id], "rb") as f:
                return f.read()
        except OSError:
            return b""

    def close(self) -> None:
        """Stop the reading threads (a later read starts them again)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _read(self, image_id: int) -> bytes:
        path = self.paths[image_id]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            data, why = b"", f"{type(e).__name__}: {e}"
        else:
            why = None if self._checked[image_id] else \
                check_image_bytes(data, tuple(self.sizes[image_id]))
        if not self._checked[image_id]:
            self._checked[image_id] = True
            if why is not None:
                self._bad[image_id] = why
                self._bad_mask[image_id] = True
        return data

    def get(self, image_id: int):
        """Encoded bytes (1-D uint8 array) or the cached decoded frame."""
        if self.frames is not None:
            return self.frames[image_id]
        return np.frombuffer(self._read(image_id), dtype=np.uint8)

    def get_many(self, image_ids: np.ndarray) -> list:
        """`get` for a batch; files are read by a few threads (reads release the GIL), each
        unique image once."""
        if self.frames is not None:
            return [self.frames[i] for i in image_ids]
        unique, inverse = np.unique(image_ids, return_inverse=True)
        if len(unique) > 4:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="posefeed-read")
            data = list(self._pool.map(self.get, unique.tolist()))
        else:
            data = [self.get(int(i)) for i in unique]
        return [data[j] for j in inverse.ravel()]


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
