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
# re-exported: these names were importable from here before the split
from posefeed.pipelines.errors import BadImageError, PipelineError, rows_text  # noqa: F401
from posefeed.pipelines.feed_process import IDS, FeedProcess
from posefeed.pipelines.fields import (FIELDS, Packing, Plan, SampleTables,  # noqa: F401
                                       SourceSpec, feed_fields, sample_params)
from posefeed.pipelines.images import (JPEG_MAGIC, PNG_MAGIC, READ_THREADS,  # noqa: F401
                                       ImageReader, check_image_bytes, decode_problem)
from posefeed.pipelines.order import epoch_order, num_batches, shard_batches  # noqa: F401
from posefeed.pipelines.params import BatchParams, flip_permutation, half_body_sets

log = logging.getLogger("posefeed.pipelines")

OUTPUTS = FIELDS  # the name before the feed was named
#: where the batches after the current one are prepared: "process" (a worker process,
#: `posefeed.pipelines.feed_process`), "thread" (a thread of this process) or "off" (on
#: demand, on the thread DALI calls the source from)
LOOKAHEADS = ("process", "thread", "off")


def lookahead_mode(lookahead: bool | str) -> str:
    """``lookahead`` as one of `LOOKAHEADS` (``True`` = "thread", ``False`` = "off")."""
    if lookahead is True:
        return "thread"
    if lookahead is False:
        return "off"
    if lookahead not in LOOKAHEADS:
        raise ValueError(f"lookahead must be one of {list(LOOKAHEADS)} (or a bool), got "
                         f"{lookahead!r}")
    return lookahead


# -- the source ------------------------------------------------------------------------------
class BatchSource:
    """Deterministic batches for DALI's ``external_source(source=..., batch=True)``.

    Samples are table rows (topdown) or frames (frame mode; each a row list padded to the
    table's largest instance count with -1). ``seek(epoch, batch)`` positions the stream;
    each call returns the next batch and raises ``StopIteration`` at the end of the epoch.
    ``lookahead`` (`LOOKAHEADS`; ``True`` = "thread", ``False`` = "off"): where the batches
    after the current one are prepared; every mode gives the same numbers.
    """

    def __init__(self, table: PoseTable, spec: SourceSpec, reader: ImageReader,
                 fields: Sequence[str] = FIELDS, lookahead: bool | str = True,
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
        #: the parameter fields packed into two arrays (`Packing`; set by `pack`), or None
        self.packing: Packing | None = None
        #: fields handed to DALI as ``TensorListCPU`` (sharing the arrays' memory; built in
        #: `prepare`, or once per slot of the worker process): DALI's feed then takes them as
        #: they are, where it converts a NumPy array with ~11 us of Python per field on the
        #: thread that runs the pipeline (``_prep_data_for_feed_input``)
        self.tensor_lists = tuple(tensor_lists)
        self._check_tensor_lists()
        self.lookahead = lookahead
        self._ahead: tuple[tuple[int, int], Future] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._worker: FeedProcess | None = None
        self._slot_feeds: list[dict[str, Any]] = []
        self._reading: tuple[tuple[int, int], Future] | None = None  # process mode, uncached
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
        upper, lower = half_body_sets(table.bodyparts)
        #: the table's individuals in first-seen order (``individual_ids`` index it)
        self.individuals = list(dict.fromkeys(table.individuals))
        code = {name: i for i, name in enumerate(self.individuals)}
        #: the arrays every field is computed from (shared with the worker process)
        self.tables = SampleTables(
            samples=self.samples, sample_image=self.sample_image, row_image=self.row_image,
            keypoints=table.keypoints, boxes=table.bboxes, sizes=table.image_sizes,
            flip_perm=flip_permutation(table.num_keypoints, table.flip_pairs),
            upper=upper, lower=lower,
            area_of_row=np.ascontiguousarray(table.areas, dtype=np.float32),
            individual_of_row=np.asarray([code[i] for i in table.individuals], dtype=np.int64))
        self._sizes = self.tables.sizes
        self._plan = Plan(len(self.samples), spec)
        self._epoch, self._next = 0, 0
        #: batches per epoch (read on every call of the feed; `seek` counts them again)
        self._len = self._count_batches()
        #: ``(sample, replacement, path, why)`` for each sample `batch` replaced last time
        self.last_replaced: list[tuple] = []
        #: replacements of the batches handed to DALI since `seek`, by ``(epoch, batch)``
        self.replaced: dict[tuple[int, int], list[tuple]] = {}
        #: the exception the last call raised (to tell a source failure from a DALI one)
        self.last_error: BaseException | None = None
        #: image ids of the batches handed to DALI, newest last (to name files on errors)
        self.recent: list[np.ndarray] = []

    @property
    def fed(self) -> tuple[str, ...]:
        """The names in each batch's feed: `fields`, with the packed ones replaced by the
        packing's outputs."""
        if self.packing is None:
            return self.fields
        packed = {e[0] for e in self.packing.floats + self.packing.ints}
        return tuple(f for f in self.fields if f not in packed) + \
            tuple(n for n in self.packing.outputs if n not in self.fields)

    def _check_tensor_lists(self) -> None:
        not_fed = [f for f in self.tensor_lists if f not in self.fed]
        if not_fed:
            raise ValueError(f"tensor_lists {not_fed} are not among the fields {list(self.fed)}")

    def pack(self, names: Sequence[str], tensor_lists: bool = False) -> Packing:
        """Feed ``names`` (of `fields`) packed in two arrays (`Packing`, laid out from one
        sampled batch), as tensor lists with ``tensor_lists``; returns the packing."""
        self.cancel()
        if self._worker is not None:         # its slots hold the unpacked fields
            self._worker.close()
            self._worker = None
        rows, p, sizes = self._sample_batch()
        feed = feed_fields(names, None, rows, p, sizes, self.spec.input_size, self.spec.roi,
                           self.tables)
        self.packing = Packing.of(feed, names)
        if tensor_lists:
            self.tensor_lists = self.packing.outputs
        self._check_tensor_lists()
        return self.packing

    @property
    def lookahead(self) -> str:
        """"process", "thread" or "off" (settable; a bool means "thread" / "off")."""
        return self._lookahead

    @lookahead.setter
    def lookahead(self, value: bool | str) -> None:
        self._lookahead = lookahead_mode(value)

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
        return self._plan(epoch)

    def seek(self, epoch: int, batch: int = 0) -> None:
        """Position the stream at ``batch`` of ``epoch`` (drops a prepared batch, except
        the worker's file reads for exactly that batch: the next epoch's first)."""
        reading = self._reading
        keep = reading is not None and reading[0] == (int(epoch), int(batch))
        if keep:
            self._reading = None
        self.cancel()
        if keep:
            self._reading = reading
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
        ids = self.plan(epoch)[index]
        replaced: list[tuple] = []
        if check_images:
            ids, replaced = self._replace_bad(ids)
        rows, params = sample_params(self.tables, self.spec, epoch, index, ids)
        return rows, params, replaced

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
                           self.spec.input_size, self.spec.roi, self.tables)
        if self.packing is not None:
            feed = self.packing.pack(feed)
        for name in self.tensor_lists:
            feed[name] = TensorListCPU(np.ascontiguousarray(feed[name]), "")
        return PreparedBatch(epoch, index, image_ids, replaced, feed)

    def __call__(self) -> dict[str, Any]:
        """The next batch's feed (`fields` by name); ``StopIteration`` at the epoch's end."""
        if self._next >= len(self):
            raise StopIteration
        key = (self._epoch, self._next)
        try:
            if self._lookahead == "process":
                prepared = self._from_worker(*key)
            elif self._ahead is not None and self._ahead[0] == key:
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
        if self._lookahead == "thread" and self._next < len(self):
            nxt = (self._epoch, self._next)
            self._ahead = (nxt, self._pool().submit(self.prepare, *nxt))
        return prepared.feed

    def _pool(self) -> ThreadPoolExecutor:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="posefeed-feed")
        return self._thread

    # -- the worker process ---------------------------------------------------------------------
    def worker(self) -> FeedProcess:
        """The worker process (started on first use, again after it stopped)."""
        if self._worker is None or self._worker.closed:
            if self._worker is not None:
                self._worker.close()
            fields = [f for f in self.fields if f != "images"]
            sample = feed_fields(fields, None, *self._sample_batch(), self.spec.input_size,
                                 self.spec.roi, self.tables)
            if self.packing is not None:
                sample = self.packing.pack(sample)
            self._worker = FeedProcess(self.tables, self.spec, fields, sample, self.packing)
            b = self.spec.batch_size
            self._slot_feeds = [self._feed_of(views, b) for views in self._worker.views]
        return self._worker

    def _sample_batch(self) -> tuple:
        rows, p = sample_params(self.tables, self.spec, 0, 0, self.plan(0)[0])
        return rows, p, self._sizes[rows[:, 0]]

    def _feed_of(self, views: dict[str, np.ndarray], n: int) -> dict[str, Any]:
        """The feed of a slot's first ``n`` rows (tensor lists share the slot's memory)."""
        feed: dict[str, Any] = {}
        for name in self.fed:
            if name == "images":
                continue
            a = views[name] if n == len(views[name]) else views[name][:n]
            feed[name] = TensorListCPU(a, "") if name in self.tensor_lists else a
        return feed

    def _from_worker(self, epoch: int, index: int) -> "PreparedBatch":
        """Batch ``index`` of ``epoch`` from the worker's slot, with its images: encoded
        files (no cache) and host-ring gathers (a copy of every frame) are done ahead, while
        the batch before runs, by the feed's thread (file reads and ``index_select`` release
        the interpreter lock); a device ring's gather (a kernel launch) and a frame list are
        taken here. A batch with a bad file is prepared here instead (its replacements
        depend on the files checked, which only this process knows)."""
        worker = self.worker()
        slot, n, views = worker.take(epoch, index)
        first = self.sample_image[views[IDS][:n]]
        reader, images = self.reader, None
        want = "images" in self.fields
        ring = reader.ring
        ahead = want and (reader.frames is None or
                          (ring is not None and ring.slab.device.type == "cpu"))
        reading, self._reading = self._reading, None
        if reading is not None:
            if reading[0] == (epoch, index):
                images = reading[1].result()
            else:
                reading[1].exception()              # wait: it uses the reader
        if reader.frames is None and want and images is None:
            images = reader.get_many(first)         # reads and checks the files
        # (cached frames were all checked when the cache was filled)
        if (reader.frames is None or reader.any_bad) and (
                reader.bad[first].any() or not reader.checked[first].all()):
            return self.prepare(epoch, index)       # replacements: on this thread (rare)
        if want and images is None:
            images = reader.get_many(first)         # cached frames (a ring's gather)
        feed = dict(self._slot_feeds[slot]) if n == self.spec.batch_size else \
            self._feed_of(views, n)
        if want:
            feed["images"] = images
        # files are read ahead across an epoch's end too (`seek` keeps them); a ring's
        # gather is not (one dropped would leave its slot counted as in use)
        nxt = worker.peek() if ahead and (index + 1 < len(self) or reader.frames is None) \
            else None
        if nxt is not None:                         # the next batch's images, ahead
            key, m, v = nxt
            ids = self.sample_image[v[IDS][:m]]
            if reader.frames is None or not reader.bad[ids].any():   # (a bad one: in prepare)
                self._reading = (key, self._pool().submit(reader.get_many, ids))
        return PreparedBatch(epoch, index, first, [], feed)

    def cancel(self) -> None:
        """Drop the batch being prepared ahead (waits for it: it reads the reader's state)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].exception()     # wait; its result or error is discarded
        reading, self._reading = self._reading, None
        if reading is not None:
            reading[1].exception()

    def close(self) -> None:
        """Stop the look-ahead thread or process and the reader's threads (all restart on
        use)."""
        self.cancel()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()
        self.reader.close()


@dataclass
class PreparedBatch:
    """One batch ready for the graph: its feed and what the loader reports about it."""

    epoch: int
    index: int
    image_ids: np.ndarray                    # (B,) image of each sample
    replaced: list = field(default_factory=list)   # (sample, replacement, path, why)
    feed: dict[str, Any] = field(default_factory=dict)


def dali_feed(images: list, rows: np.ndarray, p: BatchParams, image_sizes: np.ndarray,
              input_size: tuple[int, int], roi: bool) -> tuple:
    """All of `FIELDS` but the table-derived ``area`` / ``individual_ids`` for one batch, as
    a tuple in that order."""
    fields = [f for f in FIELDS if f not in ("area", "individual_ids")]
    feed = feed_fields(fields, images, rows, p, image_sizes, input_size, roi)
    return tuple(feed[f] for f in fields)


SourceFn = Callable[[], dict]
