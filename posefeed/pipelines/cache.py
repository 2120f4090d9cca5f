"""Decoded-frame cache: decode every unique image once (with DALI, the same decoder as the
uncached graph) and keep the RGB frames in host or device memory, so later epochs skip
decoding. The memory needed is estimated first and a cache that does not fit is refused.

Frames for the CPU OpenCV stage are kept as RGBA (4 channels, alpha 255): OpenCV's bilinear
``warpAffine`` has a vectorised path for 4 channels that is 2x faster than its 3-channel one,
with bit-identical RGB results (checked in ``tests/test_pipeline_opencv.py``); that costs a
third more memory, which the estimate includes.
"""
from __future__ import annotations

import os

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
import torch
from nvidia.dali import pipeline_def

from posefeed.datasets.table import PoseTable
from posefeed.pipelines.errors import CacheTooLarge  # noqa: F401  (re-exported)
from posefeed.pipelines.slab import resolve_headroom

#: keep this fraction of the available memory free for everything else
HEADROOM = 0.8


def cache_bytes(table: PoseTable, channels: int = 3) -> int:
    """Bytes of all unique decoded frames: sum of ``w * h * channels`` over ``table.images``
    (3 = RGB, 4 = RGBA)."""
    sizes = table.image_sizes
    first = ~table.frame[("image", "")].duplicated().to_numpy()
    wh = sizes[first]
    return int((wh[:, 0] * wh[:, 1] * channels).sum())


def available_host_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo, else free physical pages (``os.sysconf``)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def available_device_bytes(device_id: int = 0) -> int:
    """Free CUDA memory on ``device_id`` (torch)."""
    free, _ = torch.cuda.mem_get_info(device_id)
    return int(free)


def check_fits(table: PoseTable, where: str, device_id: int = 0, channels: int = 3,
               headroom: float | int | None = None) -> int:
    """Raise `CacheTooLarge` with the numbers when the cache would not fit; return its size.
    ``headroom`` (``cache_headroom``): memory kept free, a fraction of the available memory or
    bytes; ``None``: `HEADROOM` of the available memory is usable."""
    need = cache_bytes(table, channels)
    have = available_host_bytes() if where == "host" else available_device_bytes(device_id)
    if headroom is None:
        if need > HEADROOM * have:
            raise CacheTooLarge(
                f"cache={where!r} needs {need / 2**30:.2f} GiB for {len(table.images)} decoded "
                f"frames but only {have / 2**30:.2f} GiB is available ({HEADROOM:.0%} usable); "
                f"use cache=None (decode every epoch) or a smaller table")
        return need
    keep = resolve_headroom(headroom, have, where)
    if need > have - keep:
        raise CacheTooLarge(
            f"cache={where!r} needs {need} bytes ({need / 2**30:.2f} GiB) for "
            f"{len(table.images)} decoded frames; {have} bytes are available and "
            f"cache_headroom keeps {keep} free, so {max(have - keep, 0)} are usable; use "
            f"cache=None (decode every epoch), a smaller cache_headroom or a smaller table")
    return need


def decode_all(paths: list[str], where: str, device_id: int | None, num_threads: int,
               batch_size: int = 32, skip: set[int] | None = None,
               failures: dict[int, str] | None = None, channels: int = 3,
               slab=None) -> list:
    """Decode ``paths`` once: a list of HWC uint8 RGB frames (NumPy on "host", torch CUDA
    tensors on "device"; ``channels=4``: RGBA host frames, alpha 255; with ``slab``, a
    `posefeed.pipelines.slab.FrameSlab`, each frame is written into it and the list holds
    its views); ``None`` for indices
    in ``skip`` (known bad files) and for files the decoder rejects, whose reasons go into
    ``failures`` (index -> message). A batch that fails is decoded again one file per
    pipeline to find the file(s) behind the error."""
    if channels not in (3, 4) or (channels == 4 and where != "host"):
        raise ValueError(f"channels must be 3, or 4 for a host cache; got {channels} for {where!r}")
    skip = skip or set()
    todo = [i for i in range(len(paths)) if i not in skip]
    frames: list = [None] * len(paths)
    failures = {} if failures is None else failures
    chunks = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
    done = 0
    while done < len(chunks):
        try:
            done = _decode_chunks(paths, chunks, done, frames, where, device_id, num_threads,
                                  channels, slab)
        except _ChunkFailed as f:  # find the file(s) behind the error, one pipeline each
            for i in chunks[f.chunk]:
                try:
                    _decode_chunks(paths, [[i]], 0, frames, where, device_id, 1, channels, slab)
                except _ChunkFailed as e:
                    frames[i] = None
                    failures[i] = _first_line(e.__cause__)
            done = f.chunk + 1
    return frames


class _ChunkFailed(Exception):
    def __init__(self, chunk: int):
        super().__init__(chunk)
        self.chunk = chunk


def _first_line(e: Exception) -> str:
    """The decoder's own message from a DALI error (its last non-empty line)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"the decoder failed: {lines[-1] if lines else type(e).__name__}"


def _decode_chunks(paths: list[str], chunks: list[list[int]], first: int, frames: list,
                   where: str, device_id: int | None, num_threads: int, channels: int = 3,
                   slab=None) -> int:
    """Decode ``chunks[first:]`` with one DALI pipeline into ``frames``; raise `_ChunkFailed`
    naming the chunk whose output failed. The pipeline is shut down before returning."""
    gpu = where == "device"
    state = {"next": first}

    def source():
        if state["next"] >= len(chunks):
            raise StopIteration
        ids = chunks[state["next"]]
        state["next"] += 1
        return [np.fromfile(paths[i], dtype=np.uint8) for i in ids]

    @pipeline_def(batch_size=max(len(c) for c in chunks[first:]), num_threads=num_threads,
                  device_id=device_id if gpu else None, prefetch_queue_depth=1)
    def decode_pipeline():
        data = fn.external_source(source=source, batch=True)
        # EXIF orientation applied, as every size and check assumes (docs/design.md)
        return fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                 adjust_orientation=True)

    pipe = decode_pipeline()
    done = first
    try:
        pipe.build()
        while True:
            try:
                (out,) = pipe.run()
            except StopIteration:
                return done
            except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError
                raise _ChunkFailed(done) from e
            for j, i in enumerate(chunks[done]):
                if slab is not None:
                    slab.put(i, _as_torch(out[j]) if gpu else np.asarray(out.at(j)))
                    frames[i] = slab[i]
                else:
                    frames[i] = _cuda_copy(out[j]) if gpu else _host_frame(out.at(j), channels)
            if slab is not None and gpu:     # the copies into the slab read DALI's buffers
                torch.cuda.current_stream().synchronize()
            done += 1
    finally:
        shutdown_pipeline(pipe)


def _host_frame(rgb, channels: int) -> np.ndarray:
    """An owned HWC uint8 copy of a decoded RGB frame, with an alpha channel of 255 when
    ``channels == 4``."""
    if channels == 3:
        return np.array(rgb)
    import cv2  # noqa: PLC0415 - OpenCV only where it runs (posefeed.pipelines imports without it)

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2RGBA)


def shutdown_pipeline(pipe) -> None:
    """Stop a DALI pipeline's threads now rather than when the garbage collector gets to it."""
    stop = getattr(pipe, "_shutdown", None)
    if stop is not None:
        try:
            stop()
        except Exception:  # noqa: BLE001 - best effort on a pipeline that already failed
            pass


def _cuda_copy(tensor_gpu):
    """An owned torch CUDA copy of a DALI ``TensorGPU`` (DLPack, else the CUDA array
    interface after a device synchronisation)."""
    try:
        return torch.from_dlpack(tensor_gpu).clone()
    except Exception:
        torch.cuda.synchronize()
        return torch.as_tensor(tensor_gpu, device="cuda").clone()


def _as_torch(tensor_gpu):
    """A torch view of a DALI ``TensorGPU`` (DLPack, else the CUDA array interface after a
    device synchronisation)."""
    try:
        return torch.from_dlpack(tensor_gpu)
    except Exception:
        torch.cuda.synchronize()
        return torch.as_tensor(tensor_gpu, device="cuda")
