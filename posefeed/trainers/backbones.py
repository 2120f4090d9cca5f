"""Small built-in backbones. Any ``nn.Module`` mapping ``image (B, 3, H, W)`` to one feature
map ``(B, C, H / s, W / s)`` plugs into the heads; give it ``out_channels`` and ``stride``
attributes (or pass them to the head) so the head can be sized.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                act: bool = True) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + SiLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a shortcut (1x1 conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_act(cin, cout, 3, stride),
                                  conv_bn_act(cout, cout, 3, 1, act=False))
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else conv_bn_act(cin, cout, 1, stride, act=False))
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.short(x))


class CSPStage(nn.Module):
    """CSP stage: downsample, then split the channels; one half goes through ``depth``
    basic blocks, the other is carried across, and a 1x1 conv merges them."""

    def __init__(self, cin: int, cout: int, depth: int, stride: int = 2) -> None:
        super().__init__()
        half = cout // 2
        self.down = conv_bn_act(cin, cout, 3, stride)
        self.main = nn.Sequential(conv_bn_act(cout, half, 1),
                                  *[BasicBlock(half, half) for _ in range(depth)])
        self.cross = conv_bn_act(cout, half, 1)
        self.merge = conv_bn_act(2 * half, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        return self.merge(torch.cat([self.main(x), self.cross(x)], dim=1))


class ConvNet(nn.Module):
    """A compact ResNet-like (``block="basic"``) or CSP-like (``block="csp"``) network.

    A stride-2 stem, then one stage per further factor of 2 up to ``stride`` (4, 8, 16 or
    32). ``widths[i]`` / ``depths[i]`` size stage i (the stem uses ``widths[0] // 2``).
    The defaults (stride 16) have about 1.2 M parameters.

    Input ``(B, 3, H, W)``; output ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(self, stride: int = 16, widths: Sequence[int] = (32, 64, 128, 192),
                 depths: Sequence[int] = (1, 2, 2, 1), block: str = "basic",
                 in_channels: int = 3) -> None:
        super().__init__()
        n_stages = int(round(math.log2(stride))) - 1
        if 2 ** (n_stages + 1) != stride or not 1 <= n_stages <= 4:
            raise ValueError(f"stride must be 4, 8, 16 or 32, got {stride}")
        if len(widths) < n_stages or len(depths) < n_stages:
            raise ValueError(f"need {n_stages} widths and depths for stride {stride}")
        stem = max(widths[0] // 2, 8)
        self.stem = nn.Sequential(conv_bn_act(in_channels, stem, 3, 2), conv_bn_act(stem, stem))
        stages: list[nn.Module] = []
        cin = stem
        for i in range(n_stages):
            if block == "basic":
                blocks = [BasicBlock(cin, widths[i], 2)]
                blocks += [BasicBlock(widths[i], widths[i]) for _ in range(depths[i] - 1)]
                stages.append(nn.Sequential(*blocks))
            elif block == "csp":
                stages.append(CSPStage(cin, widths[i], depths[i]))
            else:
                raise ValueError(f"unknown block {block!r} (use 'basic' or 'csp')")
            cin = widths[i]
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))
