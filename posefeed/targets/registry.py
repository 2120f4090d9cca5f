"""Codecs by name: one `CODECS` mapping (as MMPose's ``KEYPOINT_CODECS``) and `build_codec`.

Every place that builds a codec from a name (``posefeed train --codec``, the benchmark's
``codecs`` list, ``posefeed bench --targets``) calls ``build_codec(name, input_size, **kw)``,
so a name means the same codec with the same defaults everywhere.

An entry maps the codec's ``name`` to a factory ``(input_size, heatmap_stride, **kw) ->
Codec``: ``input_size`` is the network input ``(w, h)`` in pixels, ``heatmap_stride`` the
input pixels per output cell for codecs that draw maps (``heatmap_size = (w // s, h // s)``),
and ``kw`` are the codec's own constructor arguments, overriding the entry's defaults.

To add a codec (one file per codec in ``posefeed/targets/``, a ``name`` class attribute):

1. import its class here;
2. add one line to `CODECS` under its ``name``: ``heatmap_codec(MyCodec)`` when its
   constructor takes ``input_size=`` and ``heatmap_size=``, ``input_codec(MyCodec)`` when it
   takes ``input_size=`` only, or a small function of ``(input_size, heatmap_stride, **kw)``
   (see `_dlc`) for anything else; put the recipe's defaults in that function, not in the
   callers;
3. export the class from ``posefeed/targets/__init__.py`` and add it to ``EXPECTED`` in
   ``tests/test_targets_registry.py`` (with any keyword argument its factory needs), which
   checks that the entry builds that class under that name.
"""
from __future__ import annotations

from typing import Any, Callable

from posefeed.targets.base import Codec
from posefeed.targets.dekr import DEKR
from posefeed.targets.dlc_heatmap import DLCHeatmap
from posefeed.targets.gaussian_heatmap import GaussianHeatmap
from posefeed.targets.paf import PartAffinityField
from posefeed.targets.simcc import SimCC
from posefeed.targets.udp_heatmap import UDPHeatmap

#: ``(input_size (w, h) px, heatmap_stride px/cell, **constructor kwargs) -> Codec``
CodecFactory = Callable[..., Codec]


def heatmap_size_for(input_size: tuple[int, int], heatmap_stride: int) -> tuple[int, int]:
    """``(w // s, h // s)`` cells: the output of a backbone + head of stride ``s``."""
    w, h = input_size
    return (int(w) // int(heatmap_stride), int(h) // int(heatmap_stride))


def heatmap_codec(cls: type[Codec]) -> CodecFactory:
    """A factory for a codec built as ``cls(input_size=, heatmap_size=, **kw)``."""
    def build(input_size: tuple[int, int], heatmap_stride: int = 4, **kw: Any) -> Codec:
        return cls(input_size=input_size,  # type: ignore[call-arg]
                   heatmap_size=heatmap_size_for(input_size, heatmap_stride), **kw)
    build.__doc__ = f"{cls.__name__}(input_size, heatmap_size=input_size // heatmap_stride)"
    return build


def input_codec(cls: type[Codec]) -> CodecFactory:
    """A factory for a codec built as ``cls(input_size=, **kw)`` (no map: ``heatmap_stride``
    is ignored)."""
    def build(input_size: tuple[int, int], heatmap_stride: int = 4, **kw: Any) -> Codec:
        del heatmap_stride
        return cls(input_size=input_size, **kw)  # type: ignore[call-arg]
    build.__doc__ = f"{cls.__name__}(input_size)"
    return build


def _dlc(input_size: tuple[int, int], heatmap_stride: int = 4, **kw: Any) -> Codec:
    """`DLCHeatmap` at ``stride = heatmap_stride``. DeepLabCut's ``pos_dist_thresh`` is 17 px
    at its stride 8; the default here keeps that radius in output cells (17 * s / 8 px)."""
    kw.setdefault("pos_dist_thresh", 17.0 * heatmap_stride / 8)
    return DLCHeatmap(float(heatmap_stride), heatmap_size_for(input_size, heatmap_stride), **kw)


def _paf(input_size: tuple[int, int], heatmap_stride: int = 4, *, graph: Any, **kw: Any) -> Codec:
    """`PartAffinityField` at ``stride = heatmap_stride``; ``graph`` (limbs as keypoint-index
    pairs) is required, ``width`` defaults to DeepLabCut's 20 input pixels."""
    return PartAffinityField(graph, float(heatmap_stride), heatmap_size_for(input_size, heatmap_stride), **kw)


def _dekr(input_size: tuple[int, int], heatmap_stride: int = 4, *, num_joints: int, **kw: Any) -> Codec:
    """`DEKR` at ``stride = heatmap_stride``; ``num_joints`` is required, ``pos_dist_thresh``
    (17 input px) and ``bg_weight`` (0.1) default to DeepLabCut's."""
    return DEKR(num_joints, float(heatmap_stride), heatmap_size_for(input_size, heatmap_stride), **kw)


CODECS: dict[str, CodecFactory] = {
    "heatmap": heatmap_codec(GaussianHeatmap),      # MSRA Gaussian, sigma 2 cells
    "udp_heatmap": heatmap_codec(UDPHeatmap),
    "dlc": _dlc,                                    # DeepLabCut heatmap + locref
    "simcc": input_codec(SimCC),                    # RTMPose, sigma (4.9, 5.66), ratio 2
    "paf": _paf,                                    # DeepLabCut part-affinity fields (graph=)
    "dekr": _dekr,                                  # DeepLabCut DEKR (num_joints=)
}


def build_codec(name: str, input_size: tuple[int, int], heatmap_stride: int = 4,
                **kw: Any) -> Codec:
    """The codec registered as ``name`` for a network input of ``input_size`` ``(w, h)``
    pixels, drawing maps at ``heatmap_stride`` input pixels per cell; ``kw`` go to the
    codec's constructor. Raises ``ValueError`` naming the registered codecs."""
    factory = CODECS.get(name)
    if factory is None:
        raise ValueError(f"unknown codec {name!r} (registered: {', '.join(sorted(CODECS))})")
    return factory(tuple(input_size), heatmap_stride, **kw)
