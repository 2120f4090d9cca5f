"""posefeed's target generators as DeepLabCut 3 ``TARGET_GENERATORS`` (thin layers).

Each class takes DeepLabCut's constructor arguments and keeps its ``forward(stride, outputs,
labels)`` contract; the work is done by a posefeed generator that imports no DeepLabCut
(``posefeed.integrations.dlc_heatmap``, tested without it). To add a generator (PAF, DEKR):
write its logic in a DeepLabCut-free module under ``posefeed/integrations/``, add a thin class
here, list it in ``GENERATORS`` and its DeepLabCut counterpart in
``posefeed.integrations.dlc_config.DROP_INS`` (what ``use_generators`` switches); ``register()``
does the rest.
"""
from __future__ import annotations

from typing import Any

import torch
from deeplabcut.pose_estimation_pytorch.models.target_generators.base import (
    TARGET_GENERATORS,
    BaseGenerator,
)

from posefeed.integrations.dlc_config import DROP_INS
from posefeed.integrations.dlc_heatmap import DLCHeatmapTargets
from posefeed.integrations.dlc_multi import DEKRTargets, PAFTargets


class _PosefeedHeatmapGenerator(BaseGenerator):
    """DeepLabCut's ``HeatmapGenerator`` arguments, posefeed's torch targets
    (``DLCHeatmapTargets``: same names, shapes, dtypes and values, computed on the outputs'
    device). Extra arguments (see ``DLCHeatmapTargets``): ``reuse_buffers`` (default True)
    and ``kernel`` (default ``"auto"``: on CPU tensors the compiled numba kernel, numba being
    one of DeepLabCut's own dependencies; ``"numpy"``: the torch version)."""

    mode = "gaussian"

    def __init__(self, num_heatmaps: int, pos_dist_thresh: int, heatmap_mode: Any = "KEYPOINT",
                 gradient_masking: bool = False, background_weight: float = 0.1,
                 generate_locref: bool = True, locref_std: float = 7.2801,
                 reuse_buffers: bool = True, kernel: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets = DLCHeatmapTargets(
            num_heatmaps, pos_dist_thresh, mode=self.mode, heatmap_mode=heatmap_mode,
            gradient_masking=gradient_masking, background_weight=background_weight,
            generate_locref=generate_locref, locref_std=locref_std,
            label_keypoint_key=self.label_keypoint_key, reuse_buffers=reuse_buffers,
            kernel=kernel)
        # DeepLabCut's attribute names, for code that reads them
        self.num_heatmaps = self.targets.num_heatmaps
        self.dist_thresh = self.targets.dist_thresh
        self.std = self.targets.std
        self.generate_locref = self.targets.generate_locref
        self.locref_scale = self.targets.locref_scale
        self.gradient_masking = self.targets.gradient_masking
        self.background_weight = self.targets.background_weight

    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict) -> dict[str, dict[str, torch.Tensor]]:
        return self.targets(stride, outputs, labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.targets!r})"


class PosefeedHeatmapGaussianGenerator(_PosefeedHeatmapGenerator):
    """Drop-in for DeepLabCut's ``HeatmapGaussianGenerator``."""

    mode = "gaussian"


class PosefeedHeatmapPlateauGenerator(_PosefeedHeatmapGenerator):
    """Drop-in for DeepLabCut's ``HeatmapPlateauGenerator``."""

    mode = "plateau"


class PosefeedPartAffinityFieldGenerator(BaseGenerator):
    """Drop-in for DeepLabCut's ``PartAffinityFieldGenerator(graph, width)`` (posefeed's
    ``PartAffinityField`` codec; same output dict, values and dtype). ``kernel``: the codec's
    CPU implementation ("auto": compiled when numba imports, "numba", "numpy")."""

    def __init__(self, graph: list, width: float, kernel: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets = PAFTargets(graph, width, label_keypoint_key=self.label_keypoint_key, kernel=kernel)
        self.graph, self.width, self.num_limbs = graph, width, self.targets.num_limbs

    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict) -> dict[str, dict[str, torch.Tensor]]:
        return self.targets(stride, outputs, labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.targets!r})"


class PosefeedDEKRGenerator(BaseGenerator):
    """Drop-in for DeepLabCut's ``DEKRGenerator(num_joints, pos_dist_thresh, bg_weight)``
    (posefeed's ``DEKR`` codec with the centres DeepLabCut's dataset appends). ``kernel``: as
    for ``PosefeedPartAffinityFieldGenerator``."""

    def __init__(self, num_joints: int, pos_dist_thresh: int, bg_weight: float = 0.1,
                 kernel: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets = DEKRTargets(num_joints, pos_dist_thresh, bg_weight,
                                   label_keypoint_key=self.label_keypoint_key, kernel=kernel)
        self.num_joints, self.num_heatmaps = self.targets.num_joints, self.targets.num_heatmaps
        self.pos_dist_thresh, self.bg_weight = pos_dist_thresh, bg_weight

    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict) -> dict[str, dict[str, torch.Tensor]]:
        return self.targets(stride, outputs, labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.targets!r})"


# DeepLabCut generator type -> posefeed's drop-in class (names as in DROP_INS)
GENERATORS: dict[str, type[BaseGenerator]] = {
    "HeatmapGaussianGenerator": PosefeedHeatmapGaussianGenerator,
    "HeatmapPlateauGenerator": PosefeedHeatmapPlateauGenerator,
    "PartAffinityFieldGenerator": PosefeedPartAffinityFieldGenerator,
    "DEKRGenerator": PosefeedDEKRGenerator,
}
assert {k: v.__name__ for k, v in GENERATORS.items()} == DROP_INS, "GENERATORS and DROP_INS disagree"


def register() -> None:
    """Register every class of ``GENERATORS`` in DeepLabCut's ``TARGET_GENERATORS`` under
    its class name (idempotent: importing twice or reloading replaces the entry)."""
    for cls in GENERATORS.values():
        TARGET_GENERATORS.register_module(module=cls, force=True)
