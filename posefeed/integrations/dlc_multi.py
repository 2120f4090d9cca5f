"""DeepLabCut 3.x's multi-animal target generators' contract (``forward(stride, outputs,
labels)`` -> DeepLabCut's nested output dict) on posefeed's ``PartAffinityField`` and ``DEKR``
codecs; imports no DeepLabCut (the registered classes are in
``posefeed.integrations.deeplabcut.generators``).

The codecs run on NumPy (CPU) with the labels copied off the device, as DeepLabCut's own
generators do; the targets are returned on the outputs' device, float32, as DeepLabCut's.

``reuse_buffers`` (default, as ``posefeed.integrations.dlc_heatmap``'s generators): the
targets are kept arrays (``codec.encoder()``: one set per batch shape, the ``max_kept``
most recent), rewritten by the next call of that shape -- only the previous call's cells
are cleared (the PAF and offset maps are sparse; the DEKR heatmap weight is refilled only
where its value changed). On the CPU the returned tensors share that memory
(``torch.from_numpy``, no copy); on another device they are copied there. This saves
DeepLabCut's allocation and page faults of the full maps every call (84 MB of PAF at batch 8,
20 limbs, 256x256; 155 MB of DEKR outputs at 13 maps of 256x256). Safe in DeepLabCut's
training step, which uses the targets only until ``backward()`` (its losses read them, never
write them); keep a ``.clone()`` to hold targets across calls, and do not write into them.
``reuse_buffers=False``: new arrays every call.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from posefeed.targets.base import BufferedEncoder, Codec
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


class _Codecs:
    """One codec (and, with ``reuse_buffers``, one ``BufferedEncoder``) per ``(stride, map
    size)`` this generator is called with, the ``max_kept`` most recent."""

    def __init__(self, make, reuse_buffers: bool, max_kept: int) -> None:
        self.make = make
        self.reuse_buffers = bool(reuse_buffers)
        self.max_kept = max(int(max_kept), 1)
        self._codecs: OrderedDict[tuple, tuple[Codec, BufferedEncoder]] = OrderedDict()

    def get(self, stride: float, size: tuple[int, int]) -> tuple[Codec, BufferedEncoder]:
        key = (float(stride), size)
        if key not in self._codecs:
            codec = self.make(stride, size)
            self._codecs[key] = (codec, codec.encoder(max_shapes=self.max_kept))
            while len(self._codecs) > self.max_kept:
                self._codecs.popitem(last=False)
        self._codecs.move_to_end(key)
        return self._codecs[key]

    def encode(self, stride: float, size: tuple[int, int], kp: np.ndarray, **inputs) -> dict[str, np.ndarray]:
        codec, enc = self.get(stride, size)
        return enc.encode_shared(kp, **inputs) if self.reuse_buffers else codec.encode(kp, **inputs)


class PAFTargets:
    """DeepLabCut's ``PartAffinityFieldGenerator(graph, width)``: ``labels[key] (B, N, K, 3)``
    in input pixels -> ``{"paf": {"target": (B, 2L, H, W)}}`` on ``outputs["paf"]``'s device,
    the map size taken from ``outputs["heatmap"]`` (as DeepLabCut does). ``reuse_buffers``,
    ``max_kept``: see the module docstring; ``kernel``: the codec's (``"auto"``: the compiled
    CPU kernel when numba imports)."""

    def __init__(self, graph: Sequence[Sequence[int]], width: float, label_keypoint_key: str = "keypoints",
                 reuse_buffers: bool = True, max_kept: int = 2, kernel: str = "auto"):
        self.graph = [tuple(int(i) for i in e) for e in graph]
        self.width = float(width)
        self.num_limbs = len(self.graph)
        self.label_keypoint_key = label_keypoint_key
        self._codecs = _Codecs(lambda s, size: PartAffinityField(self.graph, stride=s, heatmap_size=size,
                                                                 width=self.width, kernel=kernel),
                               reuse_buffers, max_kept)

    def codec(self, stride: float, size: tuple[int, int]) -> PartAffinityField:
        return self._codecs.get(stride, size)[0]  # type: ignore[return-value]

    def __call__(self, stride: float, outputs: dict[str, torch.Tensor], labels: dict) -> dict:
        size = _map_size(outputs)
        kp = _labels(labels, self.label_keypoint_key)
        paf = self._codecs.encode(stride, size, kp)["paf"]
        return {"paf": {"target": torch.from_numpy(paf).to(outputs["paf"].device)}}

    def __repr__(self) -> str:
        return f"PAFTargets(num_limbs={self.num_limbs}, width={self.width})"


class DEKRTargets:
    """DeepLabCut's ``DEKRGenerator(num_joints, pos_dist_thresh, bg_weight)``:
    ``labels[key] (B, N, K+1, 3)`` (the centre last, as DeepLabCut's dataset appends it) and
    ``labels["area"] (B, N)`` -> ``{"heatmap": {"target", "weights"}, "offset": {"target",
    "weights"}}`` on the outputs' devices. ``reuse_buffers``, ``max_kept``: see the module
    docstring; ``kernel``: the codec's (as ``PAFTargets``)."""

    def __init__(self, num_joints: int, pos_dist_thresh: float, bg_weight: float = 0.1,
                 label_keypoint_key: str = "keypoints", reuse_buffers: bool = True, max_kept: int = 2,
                 kernel: str = "auto"):
        self.num_joints = int(num_joints)
        self.num_heatmaps = self.num_joints + 1
        self.pos_dist_thresh = pos_dist_thresh
        self.bg_weight = float(bg_weight)
        self.label_keypoint_key = label_keypoint_key
        self._codecs = _Codecs(lambda s, size: DEKR(self.num_joints, stride=s, heatmap_size=size,
                                                    pos_dist_thresh=self.pos_dist_thresh,
                                                    bg_weight=self.bg_weight, centers_given=True,
                                                    kernel=kernel),
                               reuse_buffers, max_kept)

    def codec(self, stride: float, size: tuple[int, int]) -> DEKR:
        return self._codecs.get(stride, size)[0]  # type: ignore[return-value]

    def __call__(self, stride: float, outputs: dict[str, torch.Tensor], labels: dict) -> dict:
        size = _map_size(outputs)
        kp = _labels(labels, self.label_keypoint_key)
        if kp.shape[2] != self.num_joints + 1:
            raise ValueError(f"DEKR targets need {self.num_joints + 1} keypoints per animal (the centre "
                             f"last, DeepLabCut's with_center_keypoints); got {kp.shape[2]}")
        area = _labels(labels, "area")
        out = self._codecs.encode(stride, size, kp, area=area)
        hm_dev, off_dev = outputs["heatmap"].device, outputs["offset"].device
        t = {name: torch.from_numpy(a) for name, a in out.items()}
        return {"heatmap": {"target": t["heatmap"].to(hm_dev), "weights": t["heatmap_weight"].to(hm_dev)},
                "offset": {"target": t["offset"].to(off_dev), "weights": t["offset_weight"].to(off_dev)}}

    def __repr__(self) -> str:
        return (f"DEKRTargets(num_joints={self.num_joints}, pos_dist_thresh={self.pos_dist_thresh}, "
                f"bg_weight={self.bg_weight})")
