"""`DenseTargets`: the codecs run on the graph's dense keypoint batch, right after the DALI
graph, each output one dense ``(B, ...)`` torch tensor written once.

Why not inside the graph: DALI 2.4's ``python_function(batch_processing=True)`` hands the
function one array per sample and takes back one array per sample
(``function_wrapper_batch`` in ``nvidia/dali/ops/_operators/python_function.py``; a single
dense array is refused with ``TypeError: 'PyCapsule' object is not iterable``), and on the
GPU it then issues one ``cudaMemcpyAsync`` per sample and output (``CopyOutputData`` ->
``CopyDlTensor`` in ``dali/operators/python_function/dltensor_function.cc``), all under the
GIL and DALI's operator lock. Here, with no Python loop over samples:

* GPU: the keypoints (a zero-copy view of DALI's output, ready on torch's current stream)
  go to the codec as a CuPy array through DLPack; the outputs are allocated as torch tensors
  (torch's caching allocator, on torch's current stream) and the codec's fused kernel writes
  every element of them once, on that stream (CuPy ``ExternalStream``). No host wait.
* CPU: each codec encodes into buffers it keeps (`BufferedEncoder`: sparse outputs update
  only the cells that changed) and the batch gets one copy of them in fresh memory, which
  the caller owns.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from posefeed.targets.base import Codec


class DenseTargets:
    """``targets(keypoints, area=None) -> {name: tensor}`` for the codecs, named as ``names``
    (`graph.output_names`). ``keypoints``: ``(B, N, K, 3)`` float32 torch tensor (CPU or
    CUDA) in input pixels; ``area``: ``(B, N)`` float32 on the same device, input pixels
    squared (NaN: unknown), passed to the codecs whose ``inputs`` name it."""

    def __init__(self, codecs: Sequence[Codec], names: Sequence[str]):
        self.codecs = list(codecs)
        self.names = list(names)
        if len(self.names) != sum(len(c.output_names) for c in self.codecs):
            raise ValueError("one name per codec output is needed")
        self._encoders = [c.encoder() for c in self.codecs]
        self._area = [("area" in getattr(c, "inputs", ())) for c in self.codecs]
        self._cupy: Any = None
        #: per ``(B, K)``: what the GPU path allocates for each codec (`_layout`)
        self._layouts: dict[tuple[int, int], list] = {}

    def __call__(self, keypoints: torch.Tensor, area: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
        if not self.codecs:
            return {}
        if keypoints.ndim == 3:
            keypoints = keypoints[:, None]
        if keypoints.is_cuda:
            return self._cuda(keypoints, area)
        return self._cpu(keypoints, area)

    def _cpu(self, keypoints: torch.Tensor, area: torch.Tensor | None = None
             ) -> dict[str, torch.Tensor]:
        kp = np.ascontiguousarray(keypoints.numpy(), dtype=np.float32)
        extra = {} if area is None else {"area": np.ascontiguousarray(area.numpy(), np.float32)}
        res: dict[str, torch.Tensor] = {}
        names = iter(self.names)
        for codec, enc, takes_area in zip(self.codecs, self._encoders, self._area):
            out = enc(kp, **extra) if takes_area else enc(kp)   # views of the kept buffers
            for o in codec.output_names:
                res[next(names)] = torch.from_numpy(np.array(out[o]))   # the one copy
        return res

    def _cuda(self, keypoints: torch.Tensor, area: torch.Tensor | None = None
              ) -> dict[str, torch.Tensor]:
        if self._cupy is None:
            import cupy  # noqa: PLC0415 - optional GPU extra, CUDA path only

            self._cupy = cupy
        cp = self._cupy
        dev = keypoints.device
        stream = torch.cuda.current_stream(dev)
        b, _, k, _ = keypoints.shape
        layouts = self._layouts.get((b, k))
        if layouts is None:
            layouts = self._layouts[(b, k)] = self._layout(int(b), int(k))
        res: dict[str, torch.Tensor] = {}
        f32 = torch.float32
        with cp.cuda.Device(dev.index), cp.cuda.ExternalStream(stream.cuda_stream, dev.index):
            kp = cp.from_dlpack(keypoints.contiguous())
            extra = {} if area is None else {"area": cp.from_dlpack(area.float().contiguous())}
            for codec, (allocate, entries), takes_area in zip(self.codecs, layouts, self._area):
                kw = extra if takes_area else {}
                if not allocate:                # a codec without out=: its own arrays
                    out = codec.encode(kp, **kw)
                    for key, o, _ in entries:
                        res[key] = torch.from_dlpack(out[o])
                    continue
                out = {}
                for key, o, shape in entries:
                    res[key] = t = torch.empty(shape, dtype=f32, device=dev)
                    out[o] = cp.from_dlpack(t)
                codec.encode(kp, out=out, **kw)
        return res

    def _layout(self, b: int, k: int) -> list:
        """For each codec: ``(allocate, [(batch key, output, shape), ...])``; ``allocate``
        False (shape None) for a codec without ``out=``, which allocates its own outputs."""
        names = iter(self.names)
        layouts: list = []
        for codec in self.codecs:
            shapes = codec.output_shapes(b, k)
            layouts.append((shapes is not None,
                            [(next(names), o, None if shapes is None else tuple(shapes[o]))
                             for o in codec.output_names]))
        return layouts
