"""Augmentation configs and the RTMPose two-stage (strong -> weak) schedule.

An `AugmentConfig` only holds numbers; the loader samples per-sample parameters from it in
NumPy (`posefeed.pipelines.params`) and feeds them to the DALI graph, so a schedule can switch
configs at an epoch boundary without rebuilding the pipeline. A schedule is a plain list of
``(start_epoch, AugmentConfig)``, sorted by ``start_epoch``, the first starting at 0.

Defaults reproduce RTMPose stage 1 (MMPose ``rtmpose-m_8xb256-420e_coco-256x192``):
``RandomFlip`` p=0.5, ``RandomHalfBody`` (p=0.3, >= 9 visible keypoints, padding 1.5, upper
body preferred with p=0.7), ``RandomBBoxTransform`` (shift 0.16 p=0.3, scale 0.6-1.4,
rotation 80 deg p=0.6, truncated normal in [-1, 1]), ``YOLOXHSVRandomAug`` (hue 5, saturation
30, value 30), albumentations ``Blur`` p=0.1, ``MedianBlur`` p=0.1 and ``CoarseDropout``
(one hole, 0.2-0.4 of the height and width, fill 0, p=1.0).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

Schedule = list[tuple[int, "AugmentConfig"]]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths and probabilities (defaults: RTMPose stage 1).

    Geometry (applied in this order, MMPose semantics):
        flip_prob: horizontal flip; left/right keypoint channels swap with ``table.flip_pairs``.
        half_body_prob: topdown only; replace the box by the upper or lower body box when at
            least ``half_body_min_keypoints`` keypoints are labelled.
        half_body_min_keypoints, half_body_min_upper, half_body_min_lower, half_body_padding,
        half_body_upper_prob: as MMPose ``RandomHalfBody``.
        shift_factor, shift_prob: box centre moves by ``shift_factor * z * box size`` per axis,
            ``z ~ truncated normal(-1, 1)``.
        scale_range, scale_prob: box size times ``mid + half_width * z`` (range as given).
        rotate_factor, rotate_prob: rotation ``rotate_factor * z`` degrees.
        crop_size: frame mode only; ``(w, h)`` image pixels of a keypoint-aware crop (centred
            on a random labelled keypoint, moved by up to ``crop_shift`` of the crop size,
            kept inside the frame); ``None`` fits the whole frame.
    Photometric (on the uint8 crop):
        hue_delta, saturation_delta, value_delta: YOLOX HSV jitter amplitudes in OpenCV units
            (hue: 0..180 scale, i.e. 2 degrees per unit; saturation and value: 0..255). Each
            channel is jittered with probability 0.5, as YOLOX does.
        blur_prob, blur_sizes: box blur with an odd kernel from ``blur_sizes`` (albumentations
            ``Blur(blur_limit=7)``: 3, 5 or 7).
        median_blur_prob, median_blur_sizes: median blur (GPU: ``fn.experimental.median_blur``;
            CPU: OpenCV's ``medianBlur``; only ``cpu_backend="dali"`` applies a box blur of
            the same size, DALI having no CPU median filter).
        dropout_prob, dropout_size: one rectangular hole filled with 0, height and width a
            fraction in ``dropout_size`` of the crop's.
    """

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_padding: float = 1.5
    half_body_upper_prob: float = 0.7
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_range: tuple[float, float] = (0.6, 1.4)
    scale_prob: float = 1.0
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    crop_size: tuple[int, int] | None = None
    crop_shift: float = 0.1
    hue_delta: float = 5.0
    saturation_delta: float = 30.0
    value_delta: float = 30.0
    blur_prob: float = 0.1
    blur_sizes: tuple[int, ...] = (3, 5, 7)
    median_blur_prob: float = 0.1
    median_blur_sizes: tuple[int, ...] = (3, 5, 7)
    dropout_prob: float = 1.0
    dropout_size: tuple[float, float] = (0.2, 0.4)

    @classmethod
    def rtmpose_stage1(cls) -> "AugmentConfig":
        """RTMPose stage 1 (the strong recipe; same as ``AugmentConfig()``)."""
        return cls()

    @classmethod
    def rtmpose_stage2(cls) -> "AugmentConfig":
        """RTMPose stage 2 (last 30 epochs): no shift, scale 0.75-1.25, rotation 60, dropout
        p=0.5."""
        return cls(shift_factor=0.0, scale_range=(0.75, 1.25), rotate_factor=60.0,
                   dropout_prob=0.5)

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation: only the box crop (topdown) or the letterboxed frame (frame mode).
        Use it for evaluation loaders."""
        return cls(flip_prob=0.0, half_body_prob=0.0, shift_factor=0.0, shift_prob=0.0,
                   scale_range=(1.0, 1.0), rotate_factor=0.0, rotate_prob=0.0,
                   hue_delta=0.0, saturation_delta=0.0, value_delta=0.0, blur_prob=0.0,
                   median_blur_prob=0.0, dropout_prob=0.0)

    @classmethod
    def frame_default(cls) -> "AugmentConfig":
        """Default for frame mode (DeepLabCut-like): rotation up to 30 deg with p=0.5, no
        scale/shift, no flip (DeepLabCut does not flip by default), colour jitter, blur,
        no half-body, coarse dropout p=0.5 (DLC's "covering")."""
        return cls(flip_prob=0.0, half_body_prob=0.0, shift_factor=0.0, shift_prob=0.0,
                   scale_range=(1.0, 1.0), rotate_factor=30.0, rotate_prob=0.5,
                   median_blur_prob=0.0, dropout_prob=0.5)

    def with_(self, **changes) -> "AugmentConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


def rtmpose_schedule(total_epochs: int, switch_epoch: int | None = None) -> Schedule:
    """RTMPose's two stages: stage 1 from epoch 0, stage 2 from ``switch_epoch``
    (default ``total_epochs - 30``, at least 0)."""
    if switch_epoch is None:
        switch_epoch = max(int(total_epochs) - 30, 0)
    if switch_epoch <= 0:
        return [(0, AugmentConfig.rtmpose_stage2())]
    return [(0, AugmentConfig.rtmpose_stage1()), (int(switch_epoch), AugmentConfig.rtmpose_stage2())]


def as_schedule(schedule: "Schedule | AugmentConfig | None", default: AugmentConfig) -> Schedule:
    """Normalise ``None`` / a single config / a list of (start_epoch, config) into a sorted
    schedule starting at epoch 0."""
    if schedule is None:
        return [(0, default)]
    if isinstance(schedule, AugmentConfig):
        return [(0, schedule)]
    items: Sequence[tuple[int, AugmentConfig]] = sorted(
        ((int(e), c) for e, c in schedule), key=lambda t: t[0])
    if not items or items[0][0] != 0:
        raise ValueError("a schedule must be a list of (start_epoch, AugmentConfig) starting at 0")
    for _, c in items:
        if not isinstance(c, AugmentConfig):
            raise TypeError(f"schedule entries must be AugmentConfig, got {type(c).__name__}")
    return list(items)


def config_for_epoch(schedule: Schedule, epoch: int) -> AugmentConfig:
    """The config in force at ``epoch`` (the last entry whose start is <= epoch)."""
    current = schedule[0][1]
    for start, cfg in schedule:
        if start <= epoch:
            current = cfg
    return current
