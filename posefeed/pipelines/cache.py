"""Decoded-frame cache: decode every unique image once (with DALI, the same decoder as the
uncached graph) and keep the RGB frames in host or device memory, so later epochs skip
decoding. The memory needed is estimated first and a cache that does not fit is refused.
"""
from __future__ import annotations

import os

import numpy as np

from posefeed.datasets.table import PoseTable

#: keep this fraction of the available memory free for everything else
HEADROOM = 0.8


class CacheTooLarge(MemoryError):
    """The decoded frames do not fit in the requested memory."""


def cache_bytes(table: PoseTable) -> int:
    """Bytes of all unique decoded RGB frames: sum of ``w * h * 3`` over ``table.images``."""
    sizes = table.image_sizes
    first = ~table.frame[("image", "")].duplicated().to_numpy()
    wh = sizes[first]
    return int((wh[:, 0] * wh[:, 1] * 3).sum())


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
    import torch  # noqa: PLC0415

    free, _ = torch.cuda.mem_get_info(device_id)
    return int(free)


def check_fits(table: PoseTable, where: str, device_id: int = 0) -> int:
    """Raise `CacheTooLarge` with the numbers when the cache would not fit; return its size."""
    need = cache_bytes(table)
    have = available_host_bytes() if where == "host" else available_device_bytes(device_id)
    if need > HEADROOM * have:
        raise CacheTooLarge(
            f"cache={where!r} needs {need / 2**30:.2f} GiB for {len(table.images)} decoded "
            f"frames but only {have / 2**30:.2f} GiB is available ({HEADROOM:.0%} usable); "
            f"use cache=None (decode every epoch) or a smaller table")
    return need


def decode_all(paths: list[str], where: str, device_id: int | None, num_threads: int,
               batch_size: int = 32, skip: set[int] | None = None) -> list:
    """Decode ``paths`` once: a list of HWC uint8 RGB frames (NumPy on "host", torch CUDA
    tensors on "device"); ``None`` for indices in ``skip`` (known bad files)."""
    import nvidia.dali.fn as fn  # noqa: PLC0415
    import nvidia.dali.types as types  # noqa: PLC0415
    from nvidia.dali import pipeline_def  # noqa: PLC0415

    skip = skip or set()
    todo = [i for i in range(len(paths)) if i not in skip]
    frames: list = [None] * len(paths)
    if not todo:
        return frames
    gpu = where == "device"
    state = {"next": 0}

    def source():
        start = state["next"]
        if start >= len(todo):
            raise StopIteration
        ids = todo[start:start + batch_size]
        state["next"] = start + len(ids)
        return [np.fromfile(paths[i], dtype=np.uint8) for i in ids]

    @pipeline_def(batch_size=batch_size, num_threads=num_threads,
                  device_id=device_id if gpu else None, prefetch_queue_depth=1)
    def decode_pipeline():
        data = fn.external_source(source=source, batch=True)
        return fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB)

    pipe = decode_pipeline()
    pipe.build()
    done = 0
    while True:
        try:
            (out,) = pipe.run()
        except StopIteration:
            break
        if gpu:
            for j in range(len(out)):
                frames[todo[done + j]] = _cuda_copy(out[j])
        else:
            for j in range(len(out)):
                frames[todo[done + j]] = np.array(out.at(j))
        done += len(out)
    del pipe
    return frames


def _cuda_copy(tensor_gpu):
    """An owned torch CUDA copy of a DALI ``TensorGPU`` (DLPack, else the CUDA array
    interface after a device synchronisation)."""
    import torch  # noqa: PLC0415

    try:
        return torch.from_dlpack(tensor_gpu).clone()
    except Exception:
        torch.cuda.synchronize()
        return torch.as_tensor(tensor_gpu, device="cuda").clone()
