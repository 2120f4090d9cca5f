"""Keypoint target codecs: one vectorised implementation for NumPy (CPU) and CuPy (GPU)."""
from posefeed.targets.base import BufferedEncoder, Codec
from posefeed.targets.dekr import DEKR
from posefeed.targets.dlc_heatmap import DLCHeatmap
from posefeed.targets.gaussian_heatmap import GaussianHeatmap
from posefeed.targets.paf import PartAffinityField
from posefeed.targets.simcc import SimCC
from posefeed.targets.udp_heatmap import UDPHeatmap

__all__ = ["BufferedEncoder", "Codec", "DEKR", "DLCHeatmap", "GaussianHeatmap", "PartAffinityField", "SimCC", "UDPHeatmap"]
