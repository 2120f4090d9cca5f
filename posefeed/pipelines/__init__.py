"""The DALI pipeline and the PyTorch-facing loader."""
from posefeed.pipelines.augment import AugmentConfig, config_for_epoch, rtmpose_schedule
from posefeed.pipelines.cache import CacheTooLarge
from posefeed.pipelines.loader import PoseLoader
from posefeed.pipelines.source import BadImageError, PipelineError

__all__ = ["AugmentConfig", "BadImageError", "CacheTooLarge", "PipelineError", "PoseLoader",
           "config_for_epoch",
           "rtmpose_schedule"]
