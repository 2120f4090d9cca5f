"""The codec interface shared by every target generator, and its DALI adapter."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

from posefeed.targets._backend import array_module

Array = Any  # numpy.ndarray or cupy.ndarray


class Codec(ABC):
    """A keypoint target codec: ``encode`` keypoints into training targets, ``decode``
    model outputs back into keypoints.

    Conventions: sizes are ``(width, height)``; arrays are ``(..., H, W)``; keypoints are
    ``(B, N, K, 3)`` float32 ``(x, y, v)`` in network-input pixels (origin at the centre of
    the top-left pixel), ``v`` as COCO (0 missing, 1 occluded, 2 visible; DLC's -1 = ignore).
    """

    #: short name, used to prefix outputs when two codecs in one loader share an output name
    name: str = "codec"

    @property
    @abstractmethod
    def output_names(self) -> tuple[str, ...]:
        """Keys of the dict ``encode`` returns, in a fixed order."""

    @abstractmethod
    def encode(self, keypoints: Array) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` -> dict of float32 target arrays (same array module)."""

    @abstractmethod
    def decode(self, *outputs: Any) -> tuple[Any, Any]:
        """Model outputs -> ``keypoints (B, K, 2)`` in input pixels and ``scores (B, K)``."""

    def dali_function(self) -> Callable[[list[Array]], tuple[list[Array], ...]]:
        """A callable for ``fn.python_function(kpts, batch_processing=True,
        num_outputs=len(codec.output_names), device=...)``.

        DALI passes one ``(N_i, K, 3)`` array per sample (NumPy on CPU, CuPy on GPU); samples
        are padded to the batch's largest ``N`` with ``v = 0`` rows (which draw nothing),
        encoded in one call, and split back into per-sample outputs.
        """
        names = self.output_names

        def run(samples: list[Array]) -> tuple[list[Array], ...]:
            xp = array_module(samples[0])
            n_max = max(max(int(s.shape[0]) for s in samples), 1)
            k = int(samples[0].shape[1])
            batch = xp.zeros((len(samples), n_max, k, 3), dtype=xp.float32)
            for i, s in enumerate(samples):
                if s.shape[0]:
                    batch[i, : s.shape[0]] = s
            out = self.encode(batch)
            return tuple([xp.ascontiguousarray(out[name][i]) for i in range(len(samples))]
                         for name in names)

        return run
