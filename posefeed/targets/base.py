"""The codec interface shared by every target generator, its buffer-reusing encoder and its
DALI adapter."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, Callable, Mapping

import numpy as np

from posefeed.targets._backend import array_module

Array = Any  # numpy.ndarray or cupy.ndarray


class Codec(ABC):
    """A keypoint target codec: ``encode`` keypoints into training targets, ``decode``
    model outputs back into keypoints.

    Conventions: sizes are ``(width, height)``; arrays are ``(..., H, W)``; keypoints are
    ``(B, N, K, 3)`` float32 ``(x, y, v)`` in network-input pixels (origin at the centre of
    the top-left pixel), ``v`` as COCO (0 missing, 1 occluded, 2 visible; DLC's -1 = ignore).

    ``encode(keypoints)`` returns fresh arrays. ``encode(keypoints, out=buffers)`` writes
    every element of the caller's arrays instead (shapes from :meth:`output_shapes`,
    float32, C-contiguous, same array module) and returns them: on the CPU, writing into
    warm memory avoids the page faults that dominate the cost of fresh large outputs.
    :meth:`encoder` keeps such buffers per batch shape for a repeated caller.
    """

    #: short name, used to prefix outputs when two codecs in one loader share an output name
    name: str = "codec"
    #: what ``encode`` reads from the batch: the keypoints, and ``"area"`` for a codec whose
    #: ``encode`` takes ``area=(B, N)`` (instance areas, input pixels squared; NaN unknown):
    #: a `PoseLoader` then runs it after the graph and passes the batch's ``area``
    inputs: tuple[str, ...] = ("keypoints",)

    @property
    @abstractmethod
    def output_names(self) -> tuple[str, ...]:
        """Keys of the dict ``encode`` returns, in a fixed order."""

    def output_shapes(self, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]] | None:
        """Shape of each output (float32) for ``batch_size`` samples of ``num_keypoints``;
        ``None`` (this default) for a codec whose ``encode`` does not take ``out=`` (then
        :class:`BufferedEncoder` and the DALI adapter call plain ``encode``)."""
        return None

    @abstractmethod
    def encode(self, keypoints: Array, out: Mapping[str, Array] | None = None) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` -> dict of float32 target arrays (same array module);
        with ``out`` (codecs that implement :meth:`output_shapes`), written into (and
        returned as) those arrays."""

    @abstractmethod
    def decode(self, *outputs: Any) -> tuple[Any, Any]:
        """Model outputs -> ``keypoints (B, K, 2)`` in input pixels and ``scores (B, K)``."""

    def _encode_reusing(self, keypoints: Array, out: dict[str, Array], memo: dict,
                        **inputs: Any) -> dict[str, Array]:
        """Encode into ``out``, which holds exactly what the previous call with the same
        ``memo`` wrote (``memo`` empty: unknown contents). Codecs whose outputs are sparse
        override this to rewrite only what changed and record what they wrote in ``memo``;
        the default writes everything."""
        return self.encode(keypoints, out=out, **inputs)

    def _check_out(self, xp: Any, out: Mapping[str, Array], b: int, k: int) -> dict[str, Array]:
        """Validate caller buffers for ``encode(out=...)``; returns them as a dict."""
        shapes = self.output_shapes(b, k)
        res = {}
        for name in self.output_names:
            if name not in out:
                raise ValueError(f"out is missing {name!r} (needs {list(self.output_names)})")
            a = out[name]
            if array_module(a) is not xp:
                raise TypeError(f"out[{name!r}] must be a {xp.__name__} array like the keypoints")
            if tuple(a.shape) != shapes[name] or a.dtype != xp.float32 or not a.flags.c_contiguous:
                raise ValueError(f"out[{name!r}] must be a C-contiguous float32 array of shape "
                                 f"{shapes[name]}; got {a.dtype} {tuple(a.shape)}")
            if getattr(a.flags, "writeable", True) is False:
                raise ValueError(f"out[{name!r}] is read-only")
            res[name] = a
        return res

    def encoder(self, max_shapes: int = 4) -> "BufferedEncoder":
        """A callable ``keypoints -> dict`` that writes into buffers it keeps per batch shape
        (see :class:`BufferedEncoder`)."""
        return BufferedEncoder(self, max_shapes=max_shapes)

    def dali_function(self, reuse_buffers: bool = True) -> Callable[[list[Array]], tuple[list[Array], ...]]:
        """A callable for ``fn.python_function(kpts, batch_processing=True,
        num_outputs=len(codec.output_names), device=...)``.

        DALI passes one ``(N_i, K, 3)`` array per sample (NumPy on CPU, CuPy on GPU); samples
        of one shape (as the loader's source feeds them) are stacked, others padded to the
        batch's largest ``N`` with ``v = 0`` rows (which draw nothing); encoded in one call,
        and split back into per-sample outputs (views: DALI's batch python_function takes one
        array per sample). The GPU loader does not use this adapter: its codecs run after the
        graph on the dense batch (`posefeed.pipelines.target_stage.DenseTargets`).

        With ``reuse_buffers`` (default) CPU batches are encoded into buffers kept by the
        callable (:class:`BufferedEncoder`): DALI copies a python_function's outputs into its
        own buffers within that operator call (checked for both executors, with prefetching,
        in ``tests/test_targets_dali.py``), so the next batch may overwrite them. CuPy batches always get fresh arrays from CuPy's
        memory pool (no page faults on the GPU, and DALI's asynchronous copy of the previous
        batch may still be reading).
        """
        names = self.output_names
        enc = BufferedEncoder(self) if reuse_buffers else None

        def run(samples: list[Array]) -> tuple[list[Array], ...]:
            xp = array_module(samples[0])
            first = tuple(samples[0].shape)
            if first[0] and all(tuple(s.shape) == first for s in samples):
                # the loader's source pads every sample to the batch's instance count: one
                # stack instead of a write per sample
                batch = xp.stack(samples).astype(xp.float32, copy=False)
            else:
                n_max = max(max(int(s.shape[0]) for s in samples), 1)
                k = int(samples[0].shape[1])
                batch = xp.zeros((len(samples), n_max, k, 3), dtype=xp.float32)
                for i, s in enumerate(samples):
                    if s.shape[0]:
                        batch[i, : s.shape[0]] = s
            if enc is not None and xp is np:
                out = enc.encode_shared(batch)
            else:
                out = self.encode(batch)
            return tuple([xp.ascontiguousarray(out[name][i]) for i in range(len(samples))]
                         for name in names)

        run.encoder = enc  # type: ignore[attr-defined]  # for tests / introspection
        return run


class BufferedEncoder:
    """Encode repeatedly into buffers kept per ``(array module, device, B, K)`` (at most
    ``max_shapes`` shapes, least recently used dropped).

    ``enc(keypoints)`` returns the codec's outputs as **read-only views of the kept buffers**
    (NumPy): they are overwritten by the next call with the same batch shape, so copy what
    must outlive it (``torch.tensor(a)``, ``a.copy()``). Every call produces exactly what
    ``codec.encode(keypoints)`` would. Because the encoder knows what it wrote last time,
    sparse outputs (DeepLabCut's locref mask, its weight maps, plateau maps) are updated by
    clearing the previous cells and writing the new ones instead of rewriting whole maps.
    """

    def __init__(self, codec: Codec, max_shapes: int = 4) -> None:
        self.codec = codec
        self.max_shapes = max(1, int(max_shapes))
        self._sets: OrderedDict[tuple, tuple[dict[str, Array], dict]] = OrderedDict()

    def buffers(self, keypoints: Array) -> dict[str, Array] | None:
        """The (writable) buffers the next call with a batch shaped like ``keypoints`` uses
        (``None`` when the codec has no ``output_shapes``)."""
        entry = self._get(array_module(keypoints), keypoints)
        return None if entry is None else entry[0]

    def _get(self, xp: Any, kp: Array) -> tuple[dict[str, Array], dict] | None:
        b, k = int(kp.shape[0]), int(kp.shape[2])
        dev = getattr(getattr(kp, "device", None), "id", None) if xp is not np else None
        key = (xp.__name__, dev, b, k)
        entry = self._sets.get(key)
        if entry is None:
            shapes = self.codec.output_shapes(b, k)
            if shapes is None:
                return None
            bufs = {name: xp.empty(shapes[name], dtype=xp.float32) for name in self.codec.output_names}
            entry = (bufs, {})
            self._sets[key] = entry
            while len(self._sets) > self.max_shapes:
                self._sets.popitem(last=False)
        self._sets.move_to_end(key)
        return entry

    def encode_shared(self, keypoints: Array, **inputs: Any) -> dict[str, Array]:
        """Like ``__call__`` but returns the writable buffers themselves. Whoever writes into
        them must call :meth:`forget` (else the next call may leave stale cells). ``inputs``:
        the codec's further ``encode`` inputs (DEKR's ``area``), passed on when given."""
        xp = array_module(keypoints)
        kp = xp.asarray(keypoints, dtype=xp.float32)
        if kp.ndim != 4 or kp.shape[-1] != 3:
            raise ValueError(f"keypoints must be (B, N, K, 3) (x, y, v); got shape {tuple(kp.shape)}")
        entry = self._get(xp, kp)
        if entry is None:  # the codec does not write into buffers
            return self.codec.encode(kp, **inputs)
        bufs, memo = entry
        return self.codec._encode_reusing(kp, bufs, memo, **inputs)

    def forget(self) -> None:
        """Forget what was written (the next call rewrites every element)."""
        for _, memo in self._sets.values():
            memo.clear()

    def __call__(self, keypoints: Array, **inputs: Any) -> dict[str, Array]:
        out = self.encode_shared(keypoints, **inputs)
        res = {}
        for name, a in out.items():
            if isinstance(a, np.ndarray):
                a = a.view()
                a.flags.writeable = False
            res[name] = a
        return res
