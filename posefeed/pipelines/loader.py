"""`PoseLoader`: the PyTorch-facing iterable over DALI pose batches.

It drives the pipeline with ``pipe.run()`` and converts outputs with DLPack (DESIGN.md:
``DALIGenericIterator`` fails on GPU ``python_function`` outputs with recent torch).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from posefeed.datasets.table import PoseTable
from posefeed.pipelines import cache as cache_mod
from posefeed.pipelines.augment import AugmentConfig, Schedule, as_schedule
from posefeed.pipelines.graph import GraphSpec, build_pipeline, output_names
from posefeed.pipelines.source import BadImageError, BatchSource, ImageReader, SourceSpec
from posefeed.targets.base import Codec


def _cuda_ok() -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


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
        device: "cpu", "gpu" or "auto" (GPU when CUDA is available).
        seed, shuffle, drop_last: the sample order is a pure function of (seed, epoch, shard).
        num_threads: DALI threads (default: the CPUs this process may use).
        shard: ``(rank, world)``; default from ``torch.distributed`` when initialised.
        cache: None, "host" or "device": keep decoded frames in memory (filled on first use).
        image_dtype: "float32" (ImageNet-normalised) or "uint8".
        on_bad_image: "raise" (error naming the file) or "skip" (replace by the next good
            sample, counted in ``skipped`` and logged). Files are checked once each, in the
            source (empty, JPEG/PNG magic number, PIL ``verify``); a file that passes these
            checks but still fails in the decoder raises `BadImageError` listing the files of
            the batches in flight.
        device_id: CUDA device (default: torch's current device).
        cpu_backend: on CPU, "opencv" (crop, HSV, blurs and dropout in one OpenCV stage of
            the graph; exact MMPose/albumentations ops, ~3x faster) or "dali" (DALI ops as on
            the GPU: HSV approximated multiplicatively, median blur replaced by a box blur).
        roi_decode: decode only the image region the crop reads (default: on for CPU, off
            for GPU); ignored with a cache.
        opencv_png: with the CPU opencv backend and a PNG-only dataset, decode with
            ``cv2.imdecode`` inside the OpenCV stage (faster than DALI's CPU PNG decoder).
    """

    def __init__(self, table: PoseTable, codecs: Codec | Sequence[Codec] = (), mode: str = "topdown",
                 input_size: tuple[int, int] = (192, 256), batch_size: int = 64,
                 schedule: Schedule | AugmentConfig | None = None, device: str = "auto",
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 num_threads: int | None = None, shard: tuple[int, int] | None = None,
                 cache: str | None = None, image_dtype: str = "float32",
                 on_bad_image: str = "raise", device_id: int | None = None,
                 cpu_backend: str = "opencv", roi_decode: bool | None = None,
                 opencv_png: bool = True):
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
        if device == "auto":
            device = "gpu" if _cuda_ok() else "cpu"
        if device == "gpu" and not _cuda_ok():
            raise RuntimeError("device='gpu' but CUDA is not available")
        if cache not in (None, "host", "device"):
            raise ValueError(f"cache must be None, 'host' or 'device', got {cache!r}")
        if cache == "device" and device != "gpu":
            raise ValueError("cache='device' needs device='gpu'")
        if cpu_backend not in ("opencv", "dali"):
            raise ValueError(f"cpu_backend must be 'opencv' or 'dali', got {cpu_backend!r}")
        if image_dtype not in ("float32", "uint8"):
            raise ValueError(f"image_dtype must be 'float32' or 'uint8', got {image_dtype!r}")
        if len(table) == 0:
            raise ValueError("the table is empty")
        self.table = table
        self.codecs = [codecs] if isinstance(codecs, Codec) else list(codecs or ())
        self.mode = mode
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = int(batch_size)
        self.device = device
        self.device_id = (torch.cuda.current_device() if device_id is None else device_id) \
            if device == "gpu" else None
        self.num_threads = int(num_threads or len(os.sched_getaffinity(0)))
        rank, world = shard if shard is not None else _default_shard()
        if not 0 <= rank < world:
            raise ValueError(f"shard {(rank, world)} needs 0 <= rank < world")
        default = AugmentConfig() if mode == "topdown" else AugmentConfig.frame_default()
        self.schedule = as_schedule(schedule, default)
        self.cache = cache
        if cache is not None:
            self.cache_bytes = cache_mod.check_fits(table, cache, self.device_id or 0)
        self.image_dtype = image_dtype
        self.cpu_backend = cpu_backend
        self.roi_decode = (device == "cpu") if roi_decode is None else bool(roi_decode)
        self.opencv_png = bool(opencv_png)
        self.spec = SourceSpec(mode=mode, input_size=self.input_size, batch_size=self.batch_size,
                               schedule=self.schedule, seed=int(seed), shuffle=bool(shuffle),
                               drop_last=bool(drop_last), rank=int(rank), world=int(world),
                               on_bad_image=on_bad_image)
        self.source = BatchSource(table, self.spec, ImageReader(table))
        self.names = ["image", "keypoints", "index", "affine"] + output_names(self.codecs)
        self._pipe = None
        self._clean = False
        self._epoch = 0
        self._batch = 0

    # -- torch DataLoader-like API ------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def skipped(self) -> int:
        """Samples replaced because their image could not be decoded (``on_bad_image="skip"``)."""
        return self.source.skipped

    def set_epoch(self, epoch: int) -> None:
        """Move to the start of ``epoch`` (kept as is when already inside that epoch, e.g. after
        `load_state_dict`). An epoch iterated to the end advances the epoch by one."""
        if int(epoch) != self._epoch:
            self._epoch, self._batch = int(epoch), 0

    def state_dict(self) -> dict[str, Any]:
        """Position to resume from: the epoch and the number of batches already yielded."""
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.spec.seed,
                "shard": (self.spec.rank, self.spec.world), "num_batches": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("seed", self.spec.seed)) != self.spec.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, loader has {self.spec.seed}")
        self._epoch, self._batch = int(state["epoch"]), int(state["batch"])
        if self._batch >= len(self):
            self._epoch, self._batch = self._epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch, start = self._epoch, self._batch
        pipe = self._pipeline()
        self.source.seek(epoch, start)
        self._clean = False
        done = start
        try:
            while True:
                try:
                    outs = pipe.run()
                except StopIteration:
                    pipe.reset()
                    break
                except BadImageError:
                    raise
                except Exception as e:
                    raise self._decode_error(e) from e
                batch = self._to_torch(outs)
                done += 1
                self._batch = done
                yield batch
            self._clean = True
            self._epoch, self._batch = epoch + 1, 0
        finally:
            if not self._clean:  # abandoned mid-epoch: prefetched batches are stale
                self._pipe = None

    # -- internals --------------------------------------------------------------------------
    def _pipeline(self):
        if self._pipe is not None and self._clean:
            return self._pipe
        self._pipe = None
        if self.cache is not None and self.source.reader.frames is None:
            self._fill_cache()
        cv_decode = (self.device == "cpu" and self.cpu_backend == "opencv"
                     and self.cache is None and self.opencv_png
                     and all(p.lower().endswith(".png") for p in self.source.reader.paths))
        roi = self.roi_decode and self.cache is None and not cv_decode
        self.spec.roi = roi
        spec = GraphSpec(device=self.device, input_size=self.input_size,
                         image_dtype=self.image_dtype, frames=self.cache,
                         cpu_backend=self.cpu_backend, roi=roi, opencv_decode=cv_decode)
        pipe = build_pipeline(spec, self.source, self.codecs, self.batch_size, self.num_threads,
                              self.device_id)
        with warnings.catch_warnings():  # unused parameters on some devices are expected
            warnings.filterwarnings("ignore", message=".*outputs, but the output")
            pipe.build()
        self._pipe = pipe
        return pipe

    def _fill_cache(self) -> None:
        reader = self.source.reader
        bad = {i for i in range(len(reader.paths)) if reader.bad_reason(i) is not None}
        if bad and self.spec.on_bad_image == "raise":
            i = min(bad)
            raise BadImageError(f"cannot decode image {reader.paths[i]}: {reader.bad_reason(i)}",
                                file=reader.paths[i])
        frames = cache_mod.decode_all(reader.paths, self.cache, self.device_id, self.num_threads,
                                      skip=bad)
        self.source.reader = ImageReader(self.table, frames)

    def _decode_error(self, e: Exception) -> Exception:
        paths = self.source.reader.paths
        files = sorted({paths[i] for ids in self.source.recent for i in ids})
        return BadImageError(f"DALI failed on a batch with one of these files: {files[:8]}"
                             f"{' ...' if len(files) > 8 else ''}: {e}",
                             file=files[0] if len(files) == 1 else None)

    def _to_torch(self, outs) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for name, out in zip(self.names, outs):
            if self.device == "gpu" and hasattr(out, "as_cpu"):
                t = torch.from_dlpack(out.as_tensor()).clone()
            else:
                t = torch.from_numpy(np.array(out.as_tensor()))
            batch[name] = t
        if self.mode == "topdown" and batch["keypoints"].ndim == 3:
            batch["keypoints"] = batch["keypoints"][:, None]
        return batch
