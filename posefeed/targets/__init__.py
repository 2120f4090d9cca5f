"""Keypoint target codecs: one vectorised implementation for NumPy (CPU) and CuPy (GPU).

Build a codec by name with `build_codec` (the names are the keys of `CODECS`; to add a codec,
see `posefeed.targets.registry`). `array_module` / `cupy_or_none` pick NumPy or CuPy for
code outside the codecs too.
"""
from posefeed.targets._backend import array_module, cupy_or_none
from posefeed.targets._heatmap_base import GaussianHeatmapBase, GaussianMode
from posefeed.targets.base import BufferedEncoder, Codec
from posefeed.targets.dekr import DEKR
from posefeed.targets.dlc_heatmap import DLCHeatmap, DLCMode
from posefeed.targets.gaussian_heatmap import GaussianHeatmap
from posefeed.targets.paf import PartAffinityField
from posefeed.targets.registry import CODECS, build_codec
from posefeed.targets.simcc import SimCC
from posefeed.targets.udp_heatmap import UDPHeatmap

__all__ = ["BufferedEncoder", "CODECS", "Codec", "DEKR", "DLCHeatmap", "DLCMode",
           "GaussianHeatmap", "GaussianHeatmapBase", "GaussianMode", "PartAffinityField", "SimCC",
           "UDPHeatmap", "array_module", "build_codec", "cupy_or_none"]
