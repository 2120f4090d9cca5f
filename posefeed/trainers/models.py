"""A pose model = any feature-map backbone + a head, and a builder for the built-in ones."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from posefeed.trainers.backbones import ConvNet
from posefeed.trainers.heads import HeatmapHead, SimCCHead


class PoseModel(nn.Module):
    """``image (B, 3, H, W)`` -> the head's output dict (``heatmap`` [+ ``locref``], or
    ``x_logits`` + ``y_logits``)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return self.head(self.backbone(image))


@dataclass
class ModelConfig:
    """Built-in model sizes. ``heatmap_stride`` must match the codec's heatmap
    (input size / heatmap size); the head adds ``log2(stride / heatmap_stride)`` deconvs."""

    stride: int = 16                     # backbone output stride (4, 8, 16, 32)
    widths: tuple[int, ...] = (32, 64, 128, 192)
    depths: tuple[int, ...] = (1, 2, 2, 1)
    block: str = "basic"                 # "basic" (ResNet-like) or "csp"
    heatmap_stride: int = 4
    head_channels: int = 128
    simcc_split_ratio: float = 2.0
    simcc_hidden: int = 256
    simcc_gau: bool = True


def build_model(kind: str, num_keypoints: int, input_size: tuple[int, int],
                config: ModelConfig | None = None, backbone: nn.Module | None = None
                ) -> PoseModel:
    """Model for codec ``kind``: "heatmap" (Gaussian/UDP), "dlc" (heatmap + locref) or
    "simcc". ``input_size`` is ``(width, height)``. A user ``backbone`` needs
    ``out_channels`` and ``stride`` attributes."""
    c = config or ModelConfig()
    if backbone is None:
        backbone = ConvNet(c.stride, c.widths, c.depths, c.block)
    stride, channels = int(backbone.stride), int(backbone.out_channels)
    if kind in ("heatmap", "dlc"):
        n = int(round(math.log2(stride / c.heatmap_stride)))
        if n < 0 or 2 ** n * c.heatmap_stride != stride:
            raise ValueError(f"backbone stride {stride} is not heatmap_stride "
                             f"{c.heatmap_stride} times a power of 2")
        head: nn.Module = HeatmapHead(channels, num_keypoints, n, c.head_channels,
                                      locref=(kind == "dlc"))
    elif kind == "simcc":
        feat = (math.ceil(input_size[0] / stride), math.ceil(input_size[1] / stride))
        head = SimCCHead(channels, num_keypoints, input_size, feat, c.simcc_split_ratio,
                         hidden=c.simcc_hidden, gau=c.simcc_gau)
    else:
        raise ValueError(f"unknown model kind {kind!r} (use 'heatmap', 'dlc' or 'simcc')")
    return PoseModel(backbone, head)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
