"""Prediction heads: a heatmap head (optionally with DeepLabCut locref channels) and an
RTMPose-style SimCC head (optionally with the gated attention unit)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HeatmapHead(nn.Module):
    """``num_deconv`` transposed convs (x2 each, BN, ReLU), then 1x1 convs to ``K`` heatmaps
    and, with ``locref=True``, ``2K`` location-refinement maps (DeepLabCut).

    Input ``(B, C, h, w)``; output ``{"heatmap": (B, K, h*2^n, w*2^n)[, "locref": (B, 2K, ...)]}``.
    """

    def __init__(self, in_channels: int, num_keypoints: int, num_deconv: int = 2,
                 channels: int = 128, locref: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_deconv):
            layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            c = channels
        self.deconv = nn.Sequential(*layers)
        self.heatmap = nn.Conv2d(c, num_keypoints, 1)
        self.locref = nn.Conv2d(c, 2 * num_keypoints, 1) if locref else None

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        x = self.deconv(features)
        out = {"heatmap": self.heatmap(x)}
        if self.locref is not None:
            out["locref"] = self.locref(x)
        return out


class ScaleNorm(nn.Module):
    """``x / ||x|| * sqrt(dim) * g`` over the last axis (one learned scalar ``g``)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class GatedAttentionUnit(nn.Module):
    """RTMPose's RTMCCBlock (a gated attention unit over the K keypoint tokens, self-attention
    with a squared-ReLU kernel) with a learned-scale residual. ``(B, K, D) -> (B, K, D)``."""

    def __init__(self, dim: int, expansion: int = 2, s: int = 128) -> None:
        super().__init__()
        self.e = dim * expansion
        self.s = s
        self.norm = ScaleNorm(dim)
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        nn.init.xavier_uniform_(self.uv.weight)
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.res_scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        uv = F.silu(self.uv(self.norm(x)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=-1)
        qk = base.unsqueeze(2) * self.gamma + self.beta            # (B, K, 2, s)
        q, k = qk.unbind(dim=2)
        kernel = F.relu(q @ k.transpose(1, 2) / math.sqrt(self.s)) ** 2  # (B, K, K)
        return x * self.res_scale + self.o(u * (kernel @ v))


class SimCCHead(nn.Module):
    """RTMPose's SimCC head (RTMCCHead): a large-kernel conv to K maps, flatten, ScaleNorm +
    linear to ``hidden`` per keypoint, optional gated attention unit, then linear layers to
    the ``Wx = round(w * r)`` and ``Wy = round(h * r)`` bins.

    ``feature_size`` is the backbone's ``(w, h)`` feature-map size (input size / stride).
    Input ``(B, C, h, w)``; output ``{"x_logits": (B, K, Wx), "y_logits": (B, K, Wy)}``.
    """

    def __init__(self, in_channels: int, num_keypoints: int, input_size: tuple[int, int],
                 feature_size: tuple[int, int], split_ratio: float = 2.0, kernel_size: int = 7,
                 hidden: int = 256, gau: bool = True) -> None:
        super().__init__()
        self.final = nn.Conv2d(in_channels, num_keypoints, kernel_size, 1, kernel_size // 2)
        flat = int(feature_size[0]) * int(feature_size[1])
        self.mlp = nn.Sequential(ScaleNorm(flat), nn.Linear(flat, hidden, bias=False))
        self.gau = GatedAttentionUnit(hidden) if gau else nn.Identity()
        self.cls_x = nn.Linear(hidden, int(round(input_size[0] * split_ratio)), bias=False)
        self.cls_y = nn.Linear(hidden, int(round(input_size[1] * split_ratio)), bias=False)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        x = self.final(features).flatten(2)   # (B, K, h*w)
        x = self.gau(self.mlp(x))
        return {"x_logits": self.cls_x(x), "y_logits": self.cls_y(x)}
