"""Decoded frames in one contiguous slab, and the ring of preallocated batches they are
gathered into (the GPU path's frame caches).

* `FrameSlab`: every frame of the dataset in one ``(num_images, H, W, C)`` uint8 tensor,
  zero-padded at the bottom / right to the largest frame (``H``, ``W``): one allocation
  (no per-frame blocks in torch's small pools), and a batch is one ``index_select``. The
  crop matrices read frame pixels from the top-left corner, so the padding reads as the
  black border the warp fills outside a frame anyway (the same values, also under bilinear
  interpolation at the edge). Device slabs live in GPU memory, host slabs in pinned memory
  (their copy to the GPU is a DMA at PCIe speed, not a staged pageable copy).
* `BatchRing`: ``depth`` preallocated contiguous ``(B, H, W, C)`` batches; ``gather(ids)``
  writes the next one with one ``index_select(out=...)`` and returns it for DALI's
  ``external_source(no_copy=True)``. DALI may read a fed buffer until the outputs of that
  iteration are consumed, ``prefetch_queue_depth`` iterations later (``no_copy`` in
  ``nvidia/dali/external_source.py``), so a slot is written again only after the loader
  reported that batch consumed (`consumed`): on the GPU the gather's stream first waits for
  the event recorded on the consumer's stream at that point (no host wait). A ring too
  shallow for the feed's look-ahead raises instead of overwriting a batch in use.

Sizing (`slab_bytes`, `check_slab_fits`): slab + ring bytes against the free memory less an
explicit ``cache_headroom`` (memory kept free for DALI's buffers, CuPy's pool, the model,
activations and the optimizer); a cache that does not fit raises `CacheTooLarge` with the
numbers.
"""
from __future__ import annotations

import contextlib
from collections import deque
from typing import Any, Callable

import numpy as np
import torch

from posefeed.pipelines.errors import CacheTooLarge

GiB = float(2 ** 30)
#: default headroom: fraction of the device's total memory kept free (device cache), of the
#: host's available memory (host cache)
DEVICE_HEADROOM = 0.5
HOST_HEADROOM = 0.2


def slab_shape(sizes_wh: np.ndarray, channels: int) -> tuple[int, int, int, int]:
    """``(num_images, H, W, C)`` of the slab for frames of ``sizes_wh`` ``(n, 2)`` (w, h)."""
    sizes = np.asarray(sizes_wh, dtype=np.int64).reshape(-1, 2)
    if len(sizes) == 0:
        return (0, 1, 1, channels)
    return (len(sizes), int(sizes[:, 1].max()), int(sizes[:, 0].max()), int(channels))


def slab_bytes(sizes_wh: np.ndarray, channels: int, batch_size: int, depth: int) -> dict[str, int]:
    """Bytes of the slab, of the ring (``depth`` batches of ``batch_size`` padded frames), their
    total, and the padding (slab bytes beyond the frames' own ``w * h * C``)."""
    n, h, w, c = slab_shape(sizes_wh, channels)
    frame = h * w * c
    sizes = np.asarray(sizes_wh, dtype=np.int64).reshape(-1, 2)
    own = int((sizes[:, 0] * sizes[:, 1]).sum()) * c
    slab, ring = n * frame, int(depth) * int(batch_size) * frame
    return {"slab": slab, "ring": ring, "total": slab + ring, "padding": slab - own}


def resolve_headroom(headroom: float | int | None, total: int, where: str) -> int:
    """``cache_headroom`` in bytes: ``None`` -> the default fraction of ``total``; a float in
    [0, 1) -> that fraction of ``total``; an int >= 1 -> bytes."""
    if headroom is None:
        headroom = DEVICE_HEADROOM if where == "device" else HOST_HEADROOM
    if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or headroom < 0:
        raise ValueError(f"cache_headroom must be a fraction in [0, 1) or bytes >= 1; "
                         f"got {headroom!r}")
    if isinstance(headroom, float) and headroom < 1:
        return int(headroom * total)
    return int(headroom)


def check_slab_fits(sizes_wh: np.ndarray, channels: int, batch_size: int, depth: int,
                    where: str, free: int, total: int,
                    headroom: float | int | None = None) -> dict[str, int]:
    """The sizes (`slab_bytes` plus ``free``, ``memory`` = ``total``, ``headroom``) when slab + ring fit in
    ``free - headroom`` bytes; else `CacheTooLarge` naming every number."""
    need = slab_bytes(sizes_wh, channels, batch_size, depth)
    keep = resolve_headroom(headroom, total, where)
    info = {**need, "free": int(free), "memory": int(total), "headroom": keep}
    if need["total"] > free - keep:
        n, h, w, c = slab_shape(sizes_wh, channels)
        raise CacheTooLarge(
            f"cache={where!r} needs {need['total'] / GiB:.2f} GiB: a slab of {n} frames "
            f"padded to {w}x{h}x{c} ({need['slab'] / GiB:.2f} GiB, of which "
            f"{need['padding'] / GiB:.2f} GiB padding) and a ring of {depth} batches of "
            f"{batch_size} ({need['ring'] / GiB:.2f} GiB); {free / GiB:.2f} GiB is free of "
            f"{total / GiB:.2f} GiB and cache_headroom keeps {keep / GiB:.2f} GiB free, so "
            f"{max(free - keep, 0) / GiB:.2f} GiB is usable. Use cache='host' or cache=None, "
            f"a smaller cache_headroom, or a smaller table")
    return info


class FrameSlab:
    """The frames of a dataset in one zero-padded ``(num_images, H, W, C)`` uint8 tensor.

    ``put(i, frame)`` stores frame ``i`` (``(h, w, C)`` uint8, array or tensor); ``valid``
    marks the frames stored (bad files stay zero and invalid)."""

    def __init__(self, sizes_wh: np.ndarray, channels: int = 3, device: Any = "cpu",
                 pin_memory: bool = False):
        self.shape = slab_shape(sizes_wh, channels)
        self.sizes = np.asarray(sizes_wh, dtype=np.int64).reshape(-1, 2)
        self.device = torch.device(device)
        self.data = torch.zeros(self.shape, dtype=torch.uint8, device=self.device,
                                pin_memory=bool(pin_memory) and self.device.type == "cpu")
        self.valid = np.zeros(self.shape[0], dtype=bool)

    def __len__(self) -> int:
        return self.shape[0]

    def put(self, i: int, frame) -> None:
        t = frame if isinstance(frame, torch.Tensor) else torch.from_numpy(np.asarray(frame))
        h, w = int(t.shape[0]), int(t.shape[1])
        if (w, h) != tuple(int(v) for v in self.sizes[i]) or t.shape[2] != self.shape[3]:
            raise ValueError(f"frame {i} is {w}x{h}x{t.shape[2]}, the slab expects "
                             f"{self.sizes[i][0]}x{self.sizes[i][1]}x{self.shape[3]}")
        self.data[i, :h, :w].copy_(t, non_blocking=True)
        self.valid[i] = True

    def __getitem__(self, i: int):
        """Frame ``i`` unpadded (a view), or ``None`` when it was never stored."""
        if not self.valid[i]:
            return None
        w, h = (int(v) for v in self.sizes[i])
        return self.data[i, :h, :w]


class BatchRing:
    """``depth`` preallocated batches gathered from a `FrameSlab` (see the module docstring).

    ``stream``: the CUDA stream the gathers run on (``None`` on the CPU);
    ``make_event``: records an event on the consumer's stream (``None``: no device ordering
    needed, as on the CPU, where ``index_select`` has finished when it returns)."""

    def __init__(self, slab: FrameSlab, batch_size: int, depth: int,
                 stream: Any = None, make_event: Callable[[], Any] | None = None):
        if depth < 2:
            raise ValueError(f"a ring needs at least 2 batches, got depth={depth}")
        self.slab = slab
        self.depth = int(depth)
        self.batch_size = int(batch_size)
        _, h, w, c = slab.shape
        pin = slab.data.is_pinned() if slab.device.type == "cpu" else False
        self.slots = [torch.empty((self.batch_size, h, w, c), dtype=torch.uint8,
                                  device=slab.device, pin_memory=pin) for _ in range(self.depth)]
        self.stream = stream
        self.make_event = make_event
        self._fed = 0                 # batches gathered so far
        self._consumed = 0            # batches the loader reported consumed
        self._events: deque = deque()  # consumption events not yet waited for, oldest first

    def reset(self) -> None:
        """Start over (a new pipeline: nothing of the old one reads the ring any more)."""
        self._fed = self._consumed = 0
        self._events.clear()

    def gather(self, image_ids: np.ndarray):
        """The next slot filled with the frames ``image_ids`` (``(B,)``; a short last batch
        uses the slot's first rows), as a contiguous ``(B, H, W, C)`` tensor."""
        if self._fed - self._consumed >= self.depth:
            raise RuntimeError(
                f"frame ring overrun: {self._fed - self._consumed} batches fed and not yet "
                f"consumed, ring depth {self.depth}; DALI may still read every slot")
        n = len(image_ids)
        slot = self.slots[self._fed % self.depth]
        if n != self.batch_size:
            slot = slot[:n]
        if self._fed >= self.depth and self._events:
            # the batch that last used this slot has been consumed: wait for it on the device
            ev = self._events.popleft()
            if ev is not None and self.stream is not None:
                self.stream.wait_event(ev)     # device slab: ordered on the gather stream
            elif ev is not None:
                ev.synchronize()               # host slab: DALI's copy to the GPU is done
                                               # long before (depth batches ago)
        ids = torch.from_numpy(np.ascontiguousarray(image_ids, dtype=np.int64))
        with _on_stream(self.stream):
            if self.slab.device.type == "cuda":
                ids = ids.pin_memory().to(self.slab.device, non_blocking=True)
            elif self.slab.device.type != "cpu":
                ids = ids.to(self.slab.device)
            torch.index_select(self.slab.data, 0, ids, out=slot)
        self._fed += 1
        return slot

    def consumed(self) -> None:
        """The loader got the outputs of the oldest batch not yet reported: its slot may be
        written again once the consumer's stream has passed this point."""
        self._consumed += 1
        self._events.append(self.make_event() if self.make_event is not None else None)


def _on_stream(stream):
    """``torch.cuda.stream(stream)`` for a CUDA stream, else nothing (CPU slabs)."""
    if isinstance(stream, torch.cuda.Stream):
        return torch.cuda.stream(stream)
    return contextlib.nullcontext()
