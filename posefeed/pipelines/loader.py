"""`PoseLoader`: the PyTorch-facing iterable over DALI pose batches.

It drives the pipeline with ``pipe.run()`` and converts outputs with DLPack (docs/design.md:
``DALIGenericIterator`` fails on GPU ``python_function`` outputs with recent torch).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from nvidia.dali.tensors import TensorListGPU

from posefeed.datasets.table import PoseTable
from posefeed.pipelines import cache as cache_mod
from posefeed.pipelines.arguments import check_batches, check_codecs, check_loader_arguments
from posefeed.pipelines.augment import AugmentConfig, Schedule, as_schedule
from posefeed.pipelines.graph import (PREFETCH, GraphSpec, build_pipeline, graph_fields,
                                      graph_params, output_names)
from posefeed.pipelines.slab import BatchRing, FrameSlab, check_slab_fits
from posefeed.pipelines.errors import BadImageError, PipelineError  # noqa: F401
from posefeed.pipelines.images import ImageReader, decode_problem, find_undecodable
from posefeed.pipelines.source import LOOKAHEADS, BatchSource, SourceSpec
from posefeed.pipelines.target_stage import DenseTargets
from posefeed.targets import cupy_or_none
from posefeed.targets.base import Codec

log = logging.getLogger("posefeed.pipelines")


def _cuda_ok() -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def default_threads() -> int:
    """DALI threads per loader: the CPUs this process may use, shared by the ranks of this
    node (``LOCAL_WORLD_SIZE``, set by torchrun), at least 1."""
    cores = len(os.sched_getaffinity(0))
    try:
        local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    except ValueError:
        local = 1
    return max(cores // local, 1)


def _cache_memory(where: str, device_id: int | None) -> tuple[int, int]:
    """(free, total) bytes for a GPU path cache: CUDA memory, or available host memory."""
    if where == "device":
        free, total = torch.cuda.mem_get_info(device_id)
        return int(free), int(total)
    have = cache_mod.available_host_bytes()
    return have, have


def _default_shard() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


class PoseLoader:
    """Batches of augmented pose samples as dicts of torch tensors (see docs/architecture.md).

    Args:
        table: the annotations.
        codecs: target codecs; each runs inside the graph through ``codec.dali_function()``.
        mode: "topdown" (one sample per instance, box crop) or "frame" (one sample per image,
            the whole frame letterboxed, all instances).
        input_size: network input (w, h) in pixels.
        schedule: list of ``(start_epoch, AugmentConfig)``, one config, or ``None`` (RTMPose
            stage 1 for topdown, `AugmentConfig.frame_default` for frame mode). Use
            ``AugmentConfig.none()`` for evaluation.
        device: "cpu", "gpu" or "auto" (GPU when CUDA is available and, with codecs, CuPy is
            installed: the codecs run on CuPy inside a GPU pipeline).
        seed, shuffle, drop_last: the sample order is a pure function of (seed, epoch, shard).
        num_threads: DALI threads (default: the CPUs this process may use, divided by the
            ranks on this node, ``LOCAL_WORLD_SIZE``).
        shard: ``(rank, world)``; default from ``torch.distributed`` when initialised.
        cache: None, "host" or "device": keep decoded frames in memory (filled on first use).
        image_dtype: "float32" (ImageNet-normalised) or "uint8".
        on_bad_image: "raise" (`BadImageError` naming the file and its table rows) or "skip"
            (replace the sample by the next sample in table order whose image is good, so the
            epoch keeps its length and the same seed gives the same replacement; counted in
            ``skipped`` and logged as a warning on the ``posefeed.pipelines`` logger). Files
            are checked once each, in the source (empty, JPEG/PNG magic number, PIL
            ``verify``, size against the table). A file that passes these checks but fails
            in the decoder or the OpenCV stage (e.g. a truncated JPEG) is found after the
            error by decoding the files of the batches in flight (PIL, OpenCV, then DALI's
            decoder one file at a time): "raise" names it, "skip" marks it bad, rebuilds the
            pipeline and continues from the same batch. An error that no file explains (a
            codec raising) is a `PipelineError`; an exception from the sample source passes
            through unchanged.
        device_id: CUDA device (default: torch's current device).
        cpu_backend: on CPU, "opencv" (crop, HSV, blurs and dropout in one OpenCV stage of
            the graph; exact MMPose/albumentations ops, ~3x faster) or "dali" (DALI ops as on
            the GPU: HSV approximated multiplicatively, median blur replaced by a box blur).
        roi_decode: decode only the image region the crop reads (default: on for CPU, off
            for GPU); ignored with a cache.
        opencv_png: with the CPU opencv backend and a PNG-only dataset, decode with
            ``cv2.imdecode`` inside the OpenCV stage (faster than DALI's CPU PNG decoder).
        dense_targets: run the codecs after the DALI graph on the dense keypoint batch
            (`DenseTargets`); always on the GPU, default `graph.CPU_DENSE_TARGETS` on CPU.
        cache_headroom: memory a cache keeps free (for DALI, CuPy, the model and the
            optimizer), as a fraction of the device's total (host: available) memory or in
            bytes. GPU path caches (one zero-padded slab + a ring of batches): default 0.5
            (device), 0.2 (host); CPU host cache: default 20 % of the available memory.
            `CacheTooLarge` names the numbers when the cache does not fit.
        lookahead: where the batches after the one DALI runs are prepared (order,
            augmentation parameters, the fields the graph reads): "process" (a worker
            process, `posefeed.pipelines.feed_process`; started on first iteration, ~0.1-0.3 s),
            "thread" (a thread of this process, which competes with the training loop for
            the interpreter lock), "off" (on demand) or "auto" (default: "process" on the
            GPU path, "thread" on the CPU). Every choice gives the same batches.
    """

    def __init__(self, table: PoseTable, codecs: Codec | Sequence[Codec] = (), mode: str = "topdown",
                 input_size: tuple[int, int] = (192, 256), batch_size: int = 64,
                 schedule: Schedule | AugmentConfig | None = None, device: str = "auto",
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 num_threads: int | None = None, shard: tuple[int, int] | None = None,
                 cache: str | None = None, image_dtype: str = "float32",
                 on_bad_image: str = "raise", device_id: int | None = None,
                 cpu_backend: str = "opencv", roi_decode: bool | None = None,
                 opencv_png: bool = True, dense_targets: bool | None = None,
                 cache_headroom: float | int | None = None, lookahead: str = "auto"):
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
        check_loader_arguments(mode=mode, input_size=input_size, batch_size=batch_size,
                               seed=seed, num_threads=num_threads, shard=shard,
                               on_bad_image=on_bad_image)
        gpu_targets = cupy_or_none() is not None or not codecs  # codecs run on CuPy on the GPU
        if device == "auto":
            device = "gpu" if _cuda_ok() and gpu_targets else "cpu"
        if device == "gpu" and not _cuda_ok():
            raise RuntimeError("device='gpu' but CUDA is not available")
        if device == "gpu" and not gpu_targets:
            raise RuntimeError("device='gpu' generates targets with CuPy, which is not installed: "
                               "pip install 'posefeed[gpu]' (CUDA 12) or cupy-cuda13x")
        if cache not in (None, "host", "device"):
            raise ValueError(f"cache must be None, 'host' or 'device', got {cache!r}")
        if cache == "device" and device != "gpu":
            raise ValueError("cache='device' needs device='gpu'")
        if cpu_backend not in ("opencv", "dali"):
            raise ValueError(f"cpu_backend must be 'opencv' or 'dali', got {cpu_backend!r}")
        if lookahead != "auto" and lookahead not in LOOKAHEADS:
            raise ValueError(f"lookahead must be 'auto' or one of {list(LOOKAHEADS)}, got "
                             f"{lookahead!r}")
        if image_dtype not in ("float32", "uint8"):
            raise ValueError(f"image_dtype must be 'float32' or 'uint8', got {image_dtype!r}")
        if len(table) == 0:
            raise ValueError("the table is empty")
        self.table = table
        self.codecs = [codecs] if isinstance(codecs, Codec) else list(codecs or ())
        check_codecs(self.codecs, (int(input_size[0]), int(input_size[1])))
        self.mode = mode
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = int(batch_size)
        self.device = device
        self.device_id = (torch.cuda.current_device() if device_id is None else device_id) \
            if device == "gpu" else None
        self.num_threads = int(num_threads or default_threads())
        rank, world = shard if shard is not None else _default_shard()
        if not 0 <= rank < world:
            raise ValueError(f"shard {(rank, world)} needs 0 <= rank < world")
        default = AugmentConfig() if mode == "topdown" else AugmentConfig.frame_default()
        self.schedule = as_schedule(schedule, default)
        self.cache = cache
        self.image_dtype = image_dtype
        self.cpu_backend = cpu_backend
        reader = ImageReader(table)
        #: the graph's shape (OpenCV stage or DALI ops, ROI decode, OpenCV PNG decode),
        #: decided once here; the source's matrices follow its ``roi``
        #: codecs that take the instances' areas (``Codec.inputs``) run after the graph,
        #: where the batch's ``area`` is
        wants_area = [c for c in self.codecs if "area" in getattr(c, "inputs", ())]
        if wants_area and dense_targets is False:
            raise ValueError(f"{wants_area[0]!r} takes instance areas, which only the targets "
                             "after the graph get: leave dense_targets at None (or True)")
        if wants_area:
            dense_targets = True
        #: batches carry ``area (B, N)`` when the table has areas (COCO ``area``, DeepLabCut's
        #: box area; `PoseTable.areas`): NaN for the rows without, 0 for padding
        self.has_areas = bool(np.isfinite(np.asarray(table.areas, dtype=np.float32)).any())
        # area and identities are fed fields the graph passes through (computed with the
        # parameters, in the look-ahead), not torch ops on the batch
        extra = (("area",) if self.has_areas else ()) + \
            (("individual_ids",) if mode == "frame" else ())
        self.graph = GraphSpec.choose(device, self.input_size, image_dtype, cache, cpu_backend,
                                      roi_decode, opencv_png, reader.paths, dense_targets,
                                      motion_noise=any(c.motion_blur_prob > 0 or c.noise_prob > 0
                                                       for _, c in self.schedule),
                                      extra_outputs=extra)
        self.cache_channels = self.graph.frame_channels
        self.cache_headroom = cache_headroom
        #: batches of the GPU path's frame ring: DALI's prefetch queue, the batch being
        #: consumed, the source's look-ahead and one spare
        self.ring_depth = PREFETCH + 4
        if cache is not None and device == "gpu":
            free, total = _cache_memory(cache, self.device_id)
            self.cache_info = check_slab_fits(reader.sizes, 3, self.batch_size, self.ring_depth,
                                              cache, free, total, cache_headroom)
            self.cache_bytes = self.cache_info["total"]
        elif cache is not None:
            self.cache_bytes = cache_mod.check_fits(table, cache, self.device_id or 0,
                                                    self.cache_channels, cache_headroom)
        reader.dense_bytes = device == "gpu" and cache is None
        self.roi_decode = self.graph.roi
        self.opencv_png = self.graph.opencv_decode
        self.spec = SourceSpec(mode=mode, input_size=self.input_size, batch_size=self.batch_size,
                               schedule=self.schedule, seed=int(seed), shuffle=bool(shuffle),
                               drop_last=bool(drop_last), rank=int(rank), world=int(world),
                               on_bad_image=on_bad_image, roi=self.graph.roi)
        # GPU path: the parameters go to DALI as tensor lists built in the feed's look-ahead
        # (the main thread's host cost); not on the CPU path, where the host-cache loader ran
        # ~20 % fewer samples/s with them (A/B under load 12-14, docs/benchmarks.md)
        #: where the batches after the current one are prepared (`source.LOOKAHEADS`): "auto"
        #: is a worker process on the GPU path (the main thread's host cost,
        #: docs/benchmarks.md) and a thread on the CPU path
        self.lookahead = ("process" if device == "gpu" else "thread") \
            if lookahead == "auto" else lookahead
        self.source = BatchSource(table, self.spec, reader, fields=graph_fields(self.graph),
                                  tensor_lists=graph_params(self.graph) if device == "gpu"
                                  and not self.graph.packed else (), lookahead=self.lookahead)
        # before the packing, which samples the epoch's first batch
        check_batches(len(self.source), num_samples=self.source.num_samples,
                      batch_size=self.batch_size, drop_last=bool(drop_last), world=int(world),
                      mode=mode)
        #: the DALI-ops graph's parameters fed packed in two arrays (`fields.Packing`)
        self.packing = self.source.pack(graph_params(self.graph), tensor_lists=device == "gpu") \
            if self.graph.packed else None
        #: the codecs' output names in the batch (`output_names`)
        self.target_names = output_names(self.codecs)
        self.names = ["image", "keypoints", "index", "affine"] + self.target_names
        #: the table's individuals in first-seen order; frame-mode batches carry
        #: ``individual_ids (B, N)``: each instance's position in this list, -1 for padding
        self.individuals = self.source.individuals
        #: the codecs after the graph (`DenseTargets`), or None when they run inside it
        self.targets = DenseTargets(self.codecs, self.target_names) \
            if self.graph.dense_targets else None
        #: the pipeline's outputs, in order
        self.graph_names = self.names[:4] + list(self.graph.extra_outputs) + \
            (self.target_names if self.targets is None else [])
        self._pipe = None
        self._closes = 0          # `close` calls: an iteration running across one stops
        #: the pipeline's outputs may be used in place (its executor is ``exec_dynamic``)
        self._zero_copy = False
        self._clean = False
        self._epoch = 0
        self._batch = 0
        self._skipped = 0
        self._done_epoch: int | None = None  # load_state_dict moved past this (complete) epoch

    # -- torch DataLoader-like API ------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def skipped(self) -> int:
        """Samples replaced because their image could not be decoded (``on_bad_image="skip"``),
        counted in the batches yielded (kept in `state_dict`)."""
        return self._skipped

    def set_epoch(self, epoch: int) -> None:
        """Move to the start of ``epoch`` (kept as is when already inside that epoch, e.g. after
        `load_state_dict`, also of a state saved right after the epoch's last batch, which then
        yields nothing). An epoch iterated to the end advances the epoch by one."""
        e = int(epoch)
        if e == self._done_epoch and (self._epoch, self._batch) == (e + 1, 0):
            self._epoch, self._batch = e, len(self)   # resumed after its last batch: nothing left
        elif e != self._epoch:
            self._epoch, self._batch = e, 0
        self._done_epoch = None

    def _order_facts(self) -> dict[str, Any]:
        """What the sample order of an epoch depends on (besides the seed)."""
        return {"shard": (self.spec.rank, self.spec.world), "batch_size": self.batch_size,
                "shuffle": self.spec.shuffle, "drop_last": self.spec.drop_last,
                "mode": self.mode, "samples": len(self.source.samples), "num_batches": len(self)}

    def state_dict(self) -> dict[str, Any]:
        """Position to resume from: the epoch and the number of batches already yielded, with
        the seed and what the order depends on (checked by :meth:`load_state_dict`)."""
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.spec.seed,
                "skipped": self._skipped, **self._order_facts()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``. The seed must match. A mid-epoch position also needs the
        same world size, batch size, shuffle / drop_last, mode and number of samples (otherwise
        samples of that epoch would repeat or be skipped; the rank may differ, so every DDP rank
        can load the state rank 0 saved): a mismatch raises ``ValueError``
        naming each difference. At an epoch boundary (``batch == 0``, or after the epoch's
        last batch) those may change, e.g. to resume on a different number of GPUs."""
        if int(state.get("seed", self.spec.seed)) != self.spec.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, loader has {self.spec.seed}")
        batch = int(state["batch"])
        mine = self._order_facts()
        saved_batches = int(state.get("num_batches", mine["num_batches"]))
        if 0 < batch < saved_batches:
            diffs = []
            for key, have in mine.items():
                if key not in state:
                    continue
                was = state[key]
                if key == "shard":  # every rank may load rank 0's state: ranks run in lockstep,
                    key, was, have = "world size", int(was[1]), have[1]  # the world must match
                if was != have:
                    diffs.append(f"{key} {was!r} (saved) vs {have!r} (this loader)")
            if diffs:
                raise ValueError("cannot resume in the middle of an epoch with a loader whose sample "
                                 "order differs from the saved one: " + "; ".join(diffs)
                                 + ". Resume at an epoch boundary instead, or rebuild the loader "
                                   "as it was.")
        elif batch >= saved_batches:
            batch = len(self)  # after the saved epoch's last batch: that epoch is done here too
        self._epoch, self._batch = int(state["epoch"]), batch
        self._skipped = int(state.get("skipped", self._skipped))
        self._done_epoch = None
        if self._batch >= len(self):
            self._done_epoch = self._epoch
            self._epoch, self._batch = self._epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch, start = self._epoch, self._batch
        self._done_epoch = None
        if start >= len(self):   # stopped after the epoch's last batch: nothing left of it
            self._epoch, self._batch = epoch + 1, 0
            return
        pipe = self._pipeline()
        self.source.seek(epoch, start)
        self._clean = False
        finished = False
        done = start
        closes = self._closes
        try:
            while True:
                if self._closes != closes:   # its pipeline and feed are gone: say so
                    raise PipelineError(
                        f"the loader was closed during iteration (after epoch {epoch} batch "
                        f"{done - 1}); iterate again to continue from state_dict (epoch "
                        f"{self._epoch}, batch {self._batch})")
                try:
                    outs = pipe.run(self._stream())
                except StopIteration:
                    pipe.reset()
                    break
                except Exception as e:
                    if e is self.source.last_error:      # the sample source raised
                        raise
                    self._release(pipe)
                    self._handle_failure(e)               # raises unless files were marked bad
                    pipe = self._pipeline()               # skip: continue from batch `done`
                    self.source.seek(epoch, done)
                    self._clean = False
                    continue
                batch = self._to_torch(outs)
                if self.source.reader.ring is not None:
                    self.source.reader.ring.consumed()   # its slot may be reused after this
                self._count_replaced(epoch, done)
                done += 1
                self._batch = done
                yield batch
            finished = True
            self._clean = True
            self._epoch, self._batch = epoch + 1, 0
        finally:
            if not finished:  # abandoned mid-epoch or failed: prefetched batches are stale
                self._release(pipe)

    def close(self) -> None:
        """Stop the pipeline and the loader's threads now. The loader stays usable: the next
        iteration builds a new pipeline and continues from `state_dict`; an iteration running
        (a generator of `__iter__`) raises `PipelineError` on its next batch."""
        self._closes += 1
        self._release(self._pipe)
        self.source.close()

    def __enter__(self) -> "PoseLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- internals --------------------------------------------------------------------------
    def _pipeline(self):
        if self._pipe is not None and self._clean:
            return self._pipe
        self._release(self._pipe)
        self.source.cancel()      # nothing prepared ahead reads the reader while it changes
        if self.cache is not None and self.source.reader.frames is None:
            self._fill_cache()
        ring = self.source.reader.ring
        if ring is not None:
            ring.reset()                      # the new pipeline has read nothing of it
        pipe = build_pipeline(self.graph, self.source,
                              self.codecs if self.targets is None else (), self.batch_size,
                              self.num_threads, self.device_id,
                              frames_stream=ring.stream if ring is not None else None,
                              packing=self.packing)
        pipe.build()
        self._pipe = pipe
        self._zero_copy = bool(getattr(pipe, "exec_dynamic", False))
        return pipe

    def _release(self, pipe) -> None:
        """Shut ``pipe`` down (its DALI threads and the OpenCV stage's pool)."""
        if pipe is None:
            return
        if self._pipe is pipe:
            self._pipe = None
        cache_mod.shutdown_pipeline(pipe)
        for r in getattr(pipe, "posefeed_resources", ()):
            r.close()

    def _count_replaced(self, epoch: int, index: int) -> None:
        for sid, nxt, path, why in self.source.replaced.pop((epoch, index), ()):
            self._skipped += 1
            log.warning("skipping bad image %s (%s): epoch %d batch %d uses sample %d instead "
                        "of %d", path, why, epoch, index, nxt, sid)

    def _fill_cache(self) -> None:
        reader = self.source.reader
        bad = {i for i in range(len(reader.paths)) if reader.bad_reason(i) is not None}
        if bad and self.spec.on_bad_image == "raise":
            i = min(bad)
            raise self.source.bad_image_error(i, reader.bad_reason(i))
        failures: dict[int, str] = {}
        slab = ring = None
        if self.device == "gpu":   # one slab (device memory, or pinned host memory)
            slab = FrameSlab(reader.sizes, 3, device=f"cuda:{self.device_id}"
                             if self.cache == "device" else "cpu",
                             pin_memory=self.cache == "host")
        frames = cache_mod.decode_all(reader.paths, self.cache, self.device_id, self.num_threads,
                                      skip=bad, failures=failures, channels=self.cache_channels,
                                      slab=slab)
        # DALI's message often ends in "Current pipeline object is no longer valid": name the
        # file's own problem (PIL / OpenCV) when they find one
        for i in failures:
            why = decode_problem(reader.read(i), tuple(reader.sizes[i]))
            if why is not None:
                failures[i] = why
        if failures and self.spec.on_bad_image == "raise":
            i = min(failures)
            raise self.source.bad_image_error(i, failures[i])
        if slab is not None:
            stream = torch.cuda.Stream(self.device_id) if self.cache == "device" else None
            ring = BatchRing(slab, self.batch_size, self.ring_depth, stream=stream,
                             make_event=self._consumer_event)
        new = ImageReader(self.table, slab if slab is not None else frames, ring=ring)
        for i, why in {**{i: reader.bad_reason(i) for i in bad}, **failures}.items():
            new.mark_bad(i, why)
        reader.close()
        self.source.reader = new

    def _handle_failure(self, e: Exception) -> None:
        """After the pipeline failed: find the files of the batches in flight that do not
        decode. "raise" (or nothing found) raises; "skip" marks them bad and returns."""
        self.source.cancel()
        reader, source = self.source.reader, self.source
        ids = sorted({int(i) for b in source.recent for i in np.asarray(b).ravel()})
        found = find_undecodable(reader, ids)
        if not found:
            files = [reader.paths[i] for i in ids]
            raise PipelineError(
                f"the pipeline failed in epoch {self._epoch}, batch {self._batch} or the one "
                f"after, and every image of those batches decodes, so a stage other than "
                f"decoding raised (files: {files[:8]}{' ...' if len(files) > 8 else ''}): "
                f"{e}") from e
        if self.spec.on_bad_image == "raise":
            i = min(found)
            raise source.bad_image_error(i, found[i]) from e
        for i, why in found.items():
            reader.mark_bad(i, why)
            log.warning("image %s fails in the decoder (%s); its samples will be replaced",
                        reader.paths[i], why)

    def _consumer_event(self):
        """An event recorded on torch's current stream (the consumer's): work queued after
        it, e.g. the next gather into a ring slot, waits for everything before it."""
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(self.device_id))
        return ev

    def _stream(self):
        """The stream DALI binds the outputs to: torch's current stream on the GPU (DALI makes
        it wait for the outputs with an event; the host does not wait), None on the CPU."""
        if self.device != "gpu":
            return None
        return torch.cuda.current_stream(self.device_id)

    def _to_torch(self, outs) -> dict[str, torch.Tensor]:
        """The pipeline's outputs as torch tensors, without copies (DLPack on the GPU, the
        buffer protocol on the CPU), then the dense targets.

        Buffer lifetime: the default DALI 2.4 executor (``exec_dynamic``, which these
        pipelines use: pipelined, asynchronous, one prefetch queue) allocates every
        iteration's outputs anew and keeps each buffer alive while anything references it
        (DALI >= 1.44 "zero-copy outputs"; ``Pipeline.release_outputs``: "the buffers are not
        invalidated"). A tensor here references its buffer, so batch N stays intact while
        DALI produces N+1 .. N+prefetch and after (tested in
        ``tests/test_pipeline_feed.py``). The legacy executor (``exec_dynamic=False``)
        recycles its ``prefetch_queue_depth`` buffers on the next ``run()``: for it the
        outputs are copied. On the GPU the tensors are ordered on torch's current stream
        (``pipe.run(stream)``); use them there, or make another stream wait for it."""
        zero_copy = self._zero_copy
        batch: dict[str, torch.Tensor] = {}
        for name, out in zip(self.graph_names, outs):
            if isinstance(out, TensorListGPU):
                t = torch.from_dlpack(out.as_tensor())
                if not zero_copy:
                    t = t.clone()
            else:
                a = np.asarray(out.as_tensor())
                t = torch.from_numpy(a if zero_copy else np.array(a))
            batch[name] = t
        if self.mode == "topdown" and batch["keypoints"].ndim == 3:
            batch["keypoints"] = batch["keypoints"][:, None]
        if self.targets is not None:
            try:
                batch.update(self.targets(batch["keypoints"], area=batch.get("area")))
            except Exception as e:
                raise PipelineError(
                    f"a target codec failed in epoch {self._epoch}, batch {self._batch} "
                    f"(the images of the batch decoded): {type(e).__name__}: {e}") from e
        return batch
