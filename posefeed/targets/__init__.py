"""Keypoint target codecs: one vectorised implementation for NumPy (CPU) and CuPy (GPU)."""
from posefeed.targets.base import Codec

__all__ = ["Codec"]
