"""DeepLabCut 3.x's multi-animal target generators' contract (``forward(stride, outputs,
labels)`` -> DeepLabCut's nested output dict) on posefeed's ``PartAffinityField`` and ``DEKR``
codecs; imports no DeepLabCut (the registered classes are in
``posefeed.integrations.deeplabcut.generators``).

The codecs run on NumPy (CPU) with the labels copied off the device, as DeepLabCut's own
generators do; the targets are returned on the outputs' device, float32, as DeepLabCut's.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from posefeed.targets.dekr import DEKR
from posefeed.targets.paf import PartAffinityField


def _labels(labels: dict, key: str) -> np.ndarray:
    kp = labels[key]
    kp = kp.detach().cpu().numpy() if isinstance(kp, torch.Tensor) else np.asarray(kp)
    return np.ascontiguousarray(kp, dtype=np.float32)


def _map_size(outputs: dict[str, torch.Tensor]) -> tuple[int, int]:
    """``(W, H)`` of the model's heatmap output (DeepLabCut sizes every target from it)."""
    _, _, h, w = outputs["heatmap"].shape
    return int(w), int(h)


class PAFTargets:
    """DeepLabCut's ``PartAffinityFieldGenerator(graph, width)``: ``labels[key] (B, N, K, 3)``
    in input pixels -> ``{"paf": {"target": (B, 2L, H, W)}}`` on ``outputs["paf"]``'s device,
    the map size taken from ``outputs["heatmap"]`` (as DeepLabCut does)."""

    def __init__(self, graph: Sequence[Sequence[int]], width: float, label_keypoint_key: str = "keypoints"):
        self.graph = [tuple(int(i) for i in e) for e in graph]
        self.width = float(width)
        self.num_limbs = len(self.graph)
        self.label_keypoint_key = label_keypoint_key
        self._codecs: dict[tuple, PartAffinityField] = {}

    def codec(self, stride: float, size: tuple[int, int]) -> PartAffinityField:
        key = (float(stride), size)
        if key not in self._codecs:
            self._codecs[key] = PartAffinityField(self.graph, stride=stride, heatmap_size=size,
                                                  width=self.width)
        return self._codecs[key]

    def __call__(self, stride: float, outputs: dict[str, torch.Tensor], labels: dict) -> dict:
        size = _map_size(outputs)
        kp = _labels(labels, self.label_keypoint_key)
        paf = self.codec(stride, size).encode(kp)["paf"]
        return {"paf": {"target": torch.from_numpy(paf).to(outputs["paf"].device)}}

    def __repr__(self) -> str:
        return f"PAFTargets(num_limbs={self.num_limbs}, width={self.width})"


class DEKRTargets:
    """DeepLabCut's ``DEKRGenerator(num_joints, pos_dist_thresh, bg_weight)``:
    ``labels[key] (B, N, K+1, 3)`` (the centre last, as DeepLabCut's dataset appends it) and
    ``labels["area"] (B, N)`` -> ``{"heatmap": {"target", "weights"}, "offset": {"target",
    "weights"}}`` on the outputs' devices."""

    def __init__(self, num_joints: int, pos_dist_thresh: float, bg_weight: float = 0.1,
                 label_keypoint_key: str = "keypoints"):
        self.num_joints = int(num_joints)
        self.num_heatmaps = self.num_joints + 1
        self.pos_dist_thresh = pos_dist_thresh
        self.bg_weight = float(bg_weight)
        self.label_keypoint_key = label_keypoint_key
        self._codecs: dict[tuple, DEKR] = {}

    def codec(self, stride: float, size: tuple[int, int]) -> DEKR:
        key = (float(stride), size)
        if key not in self._codecs:
            self._codecs[key] = DEKR(self.num_joints, stride=stride, heatmap_size=size,
                                     pos_dist_thresh=self.pos_dist_thresh, bg_weight=self.bg_weight,
                                     centers_given=True)
        return self._codecs[key]

    def __call__(self, stride: float, outputs: dict[str, torch.Tensor], labels: dict) -> dict:
        size = _map_size(outputs)
        kp = _labels(labels, self.label_keypoint_key)
        if kp.shape[2] != self.num_joints + 1:
            raise ValueError(f"DEKR targets need {self.num_joints + 1} keypoints per animal (the centre "
                             f"last, DeepLabCut's with_center_keypoints); got {kp.shape[2]}")
        area = _labels(labels, "area")
        out = self.codec(stride, size).encode(kp, area=area)
        hm_dev, off_dev = outputs["heatmap"].device, outputs["offset"].device
        t = {name: torch.from_numpy(a) for name, a in out.items()}
        return {"heatmap": {"target": t["heatmap"].to(hm_dev), "weights": t["heatmap_weight"].to(hm_dev)},
                "offset": {"target": t["offset"].to(off_dev), "weights": t["offset_weight"].to(off_dev)}}

    def __repr__(self) -> str:
        return (f"DEKRTargets(num_joints={self.num_joints}, pos_dist_thresh={self.pos_dist_thresh}, "
                f"bg_weight={self.bg_weight})")
