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

`AugmentConfig.deeplabcut_default` reproduces DeepLabCut 3.0.2's default bottom-up recipe
(``pose_estimation_pytorch/config/base/aug_default.yaml`` as ``build_transforms`` builds it):
albumentations ``Affine`` (p=0.5, rotation +-30 deg, zoom 0.5-1.25, uniform, about the frame
centre), DeepLabCut's ``KeypointAwareCrop`` 448x448 (max_shift 0.1, "hybrid"), ``MotionBlur``
p=0.5 (kernels 3, 5, 7) and ``GaussNoise`` p=0.5 (variance uniform in 0..12.75**2, per
channel); the options are named after what they reproduce (``crop_sampling``,
``affine_distribution``, ``motion_blur_*``, ``noise_*``) and are off by default.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

Schedule = list[tuple[int, "AugmentConfig"]]

#: DeepLabCut's ``KeypointAwareCrop`` centre methods (``crop_sampling.method``)
CROP_SAMPLING = ("uniform", "keypoints", "density", "hybrid")
#: how rotation, scale and shift are drawn (see `AugmentConfig`)
AFFINE_DISTRIBUTIONS = ("truncnorm", "uniform")
#: the largest blur / motion-blur kernel the pipelines take (kernels are zero-padded to it)
MAX_KERNEL = 7


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
        affine_distribution: how ``z`` is drawn: "truncnorm" (MMPose: standard normal
            truncated to [-1, 1]) or "uniform" (albumentations ``Affine``: the rotation
            uniform in +-``rotate_factor``, the shift uniform in +-``shift_factor``, and the
            zoom ``1 / scale`` uniform over ``[1 / scale_range[1], 1 / scale_range[0]]``).
        affine_prob: None, or one probability for scale, rotation and shift together (one
            draw per sample, as albumentations ``Affine(p=...)``), in place of ``scale_prob``,
            ``rotate_prob`` and ``shift_prob``.
        crop_size: frame mode only; ``(w, h)`` image pixels of a keypoint-aware crop (centred
            on a random labelled keypoint, moved by up to ``crop_shift`` of the crop size,
            kept inside the frame); ``None`` fits the whole frame.
        crop_sampling: frame mode with ``crop_size``: None (the crop above, rotated and scaled
            about its centre) or one of DeepLabCut 3.0.2's ``KeypointAwareCrop`` methods
            (`CROP_SAMPLING`), with DeepLabCut's geometry: rotation and zoom about the frame
            centre first (albumentations ``Affine``, same frame size), then ``PadIfNeeded``
            (black, centred) to at least the crop size, then a ``crop_size`` window whose
            start is ``int((padded - crop + 1) * u)`` per axis, ``u`` in [0, 1): "uniform" draws
            ``u``; "keypoints" picks a keypoint uniformly, "density" with weight 1 + its
            number of neighbours within ``0.1 * min(padded w, h)``, and ``u = (keypoint +
            crop_shift * U[0, 1) * crop) / padded`` clipped below 1 (``crop_shift`` capped at
            0.4, as DeepLabCut does); "hybrid" is "uniform" or "density" with p=0.5 each. As
            in DeepLabCut, the candidates are every keypoint of the instances with at least
            one labelled keypoint, unlabelled ones included (at (0, 0), where DeepLabCut
            stores them, moved by the flip and the affine); none: "uniform". A keypoint stays
            visible when ``0 <= x < w`` and ``0 <= y < h`` in the window (DeepLabCut's rule;
            posefeed's elsewhere is ``[-0.5, w - 0.5)``).
        box_padding: topdown only; the crop box is the instance box times this, about its
            centre (MMPose ``GetBBoxCenterScale``: 1.25; DeepLabCut's top-down crop: 1.0,
            its margin already in the box).
        box_keep_aspect: topdown only; grow the box to the input's aspect and scale both
            axes alike (MMPose); ``False``: each axis scaled to the input on its own
            (DeepLabCut's ``top_down_crop``, a resize of the box region).
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
        motion_blur_prob, motion_blur_sizes: albumentations ``MotionBlur(blur_limit=7,
            allow_shifted=True)``: an odd kernel size ``k`` from ``motion_blur_sizes``, a line
            between two points drawn uniformly in the ``k x k`` grid (a vertical one of
            distinct ends when both x are equal) and rasterised as ``cv2.line`` does,
            normalised to sum 1, applied with ``cv2.filter2D`` (reflect-101 border). After
            the median blur, before the dropout hole.
        noise_prob, noise_var: albumentations ``GaussNoise(var_limit=noise_var,
            per_channel=True)``: a variance uniform in ``noise_var`` (uint8 units squared)
            per image, independent normal noise per pixel and channel, then
            ``clip(image + noise, 0, 255)`` truncated to uint8. Last, after the dropout hole.
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
    affine_distribution: str = "truncnorm"
    affine_prob: float | None = None
    crop_sampling: str | None = None
    motion_blur_prob: float = 0.0
    motion_blur_sizes: tuple[int, ...] = (3, 5, 7)
    noise_prob: float = 0.0
    noise_var: tuple[float, float] = (0.0, 0.0)
    box_padding: float = 1.25
    box_keep_aspect: bool = True

    def __post_init__(self) -> None:
        if self.affine_distribution not in AFFINE_DISTRIBUTIONS:
            raise ValueError(f"affine_distribution must be one of {AFFINE_DISTRIBUTIONS}, got "
                             f"{self.affine_distribution!r}")
        if self.crop_sampling is not None and self.crop_sampling not in CROP_SAMPLING:
            raise ValueError(f"crop_sampling must be None or one of {CROP_SAMPLING}, got "
                             f"{self.crop_sampling!r}")
        sizes = tuple(self.motion_blur_sizes)
        if not sizes or any(int(k) != k or k < 3 or k % 2 != 1 or k > MAX_KERNEL for k in sizes):
            raise ValueError(f"motion_blur_sizes must be odd kernel sizes in 3..{MAX_KERNEL}, "
                             f"got {sizes}")
        lo, hi = self.noise_var
        if not 0 <= lo <= hi:
            raise ValueError(f"noise_var must be a variance range 0 <= low <= high, got {self.noise_var}")
        if self.affine_distribution == "uniform" and min(self.scale_range) <= 0:
            raise ValueError(f"affine_distribution 'uniform' draws the zoom 1 / scale: scale_range "
                             f"must be positive, got {self.scale_range}")

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

    @classmethod
    def deeplabcut_default(cls, crop_size: tuple[int, int] = (448, 448)) -> "AugmentConfig":
        """DeepLabCut 3.0.2's default bottom-up recipe (``aug_default.yaml``): albumentations
        ``Affine`` p=0.5 (rotation +-30 deg, zoom 0.5-1.25 uniform, no translation),
        ``KeypointAwareCrop`` of ``crop_size`` (max_shift 0.1, "hybrid"), ``MotionBlur`` p=0.5,
        ``GaussNoise`` p=0.5 with variance 0..12.75**2; no flip, no colour jitter, no
        dropout. Frame mode; the loader's input size is ``crop_size``."""
        return cls.none().with_(
            crop_size=tuple(int(v) for v in crop_size), crop_shift=0.1, crop_sampling="hybrid",
            affine_distribution="uniform", affine_prob=0.5, rotate_factor=30.0, rotate_prob=0.5,
            scale_range=(1 / 1.25, 1 / 0.5), scale_prob=0.5, motion_blur_prob=0.5,
            noise_prob=0.5, noise_var=(0.0, 12.75 ** 2))

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
