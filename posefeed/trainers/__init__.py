"""Thin PyTorch trainers, models, losses and metrics.

Models take ``image (B, 3, H, W)`` and return a dict (``heatmap`` [+ ``locref``] or
``x_logits`` + ``y_logits``); `PoseLoss` reads the matching targets from a PoseLoader batch;
`Trainer` runs the RTMPose recipe (AdamW, warm-up + flat + cosine, EMA, clipping, bf16 on
GPU, stability guard, atomic checkpoints) over any iterable of batch dicts.
``posefeed.trainers.lightning`` (optional, needs Lightning) is not imported here.
"""
from posefeed.trainers.backbones import ConvNet
from posefeed.trainers.checkpoint import CheckpointManager, atomic_save, load_checkpoint
from posefeed.trainers.heads import HeatmapHead, SimCCHead
from posefeed.trainers.losses import (KeypointMSELoss, KLDiscretLoss, LossConfig, MaskedHuberLoss,
                                      PoseLoss, WeightedBCELoss)
from posefeed.trainers.metrics import evaluate_keypoints, keypoint_rmse, oks, oks_ap, pck
from posefeed.trainers.models import ModelConfig, PoseModel, build_model
from posefeed.trainers.predict import (decode_outputs, evaluate, predict, to_original,
                                       write_dlc_predictions)
from posefeed.trainers.schedule import ExpMomentumEMA, WarmupFlatCosine, build_optimizer
from posefeed.trainers.trainer import GuardConfig, Trainer, TrainConfig

__all__ = [
    "CheckpointManager", "ConvNet", "ExpMomentumEMA", "GuardConfig", "HeatmapHead",
    "KLDiscretLoss", "KeypointMSELoss", "LossConfig", "MaskedHuberLoss", "ModelConfig",
    "PoseLoss", "PoseModel", "SimCCHead", "TrainConfig", "Trainer", "WarmupFlatCosine",
    "WeightedBCELoss", "atomic_save", "build_model", "build_optimizer", "decode_outputs",
    "evaluate", "evaluate_keypoints", "keypoint_rmse", "load_checkpoint", "oks", "oks_ap", "pck",
    "predict", "to_original", "write_dlc_predictions",
]
