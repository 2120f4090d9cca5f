"""Keypoint losses that read their targets and weights from a PoseLoader batch dict.

- `KeypointMSELoss`: MMPose's heatmap MSE with ``use_target_weight`` (1.x form:
  ``mean((pred - target)^2 * w)`` over batch, keypoints and pixels).
- `WeightedBCELoss`: DeepLabCut 3.x's heatmap loss (BCE with logits, weighted mean).
- `MaskedHuberLoss`: DeepLabCut's locref loss (Huber, averaged over the pixels whose
  locref weight is non-zero).
- `KLDiscretLoss`: RTMPose's SimCC loss (KL between ``softmax(label * 10)`` and
  ``log_softmax(logits * 10)``, mean over bins, weighted, summed over instances, / K).
- `PoseLoss`: picks and combines the above from the model's output names.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _expand_weight(weight: Tensor | None, like: Tensor) -> Tensor:
    """Broadcast a keypoint weight ``(B, K)`` or a per-pixel weight ``(B, K, H, W)`` to
    ``like``'s shape; ``None`` means all ones."""
    if weight is None:
        return torch.ones_like(like)
    w = weight.to(like.dtype)
    while w.dim() < like.dim():
        w = w.unsqueeze(-1)
    return w.expand_as(like)


def keypoint_weight(batch: dict[str, Tensor], *names: str) -> Tensor | None:
    """The first of ``names`` present in the batch (codec output names, possibly prefixed
    ``codec/name``)."""
    for name in names:
        if name in batch:
            return batch[name]
        for key in batch:
            if key.endswith("/" + name):
                return batch[key]
    return None


class KeypointMSELoss(nn.Module):
    """Heatmap MSE, MMPose ``KeypointMSELoss(use_target_weight=True)``.

    ``loss = loss_weight * mean((pred - target)^2 * w)`` where ``w`` is the keypoint weight
    ``(B, K)`` broadcast over the map (or a per-pixel weight ``(B, K, H, W)``).
    """

    def __init__(self, use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        w = _expand_weight(weight if self.use_target_weight else None, pred)
        err = (pred.float() - target.float()) ** 2
        return self.loss_weight * (err * w).mean()


class WeightedBCELoss(nn.Module):
    """DeepLabCut's heatmap loss: BCE with logits, ``sum(bce * w) / count(w > 0)``."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        w = _expand_weight(weight, logits)
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        return self.loss_weight * (bce * w).sum() / (w > 0).sum().clamp(min=1)


class MaskedHuberLoss(nn.Module):
    """DeepLabCut's locref loss: Huber (``delta``) on the ``(B, 2K, H, W)`` offsets,
    ``sum(huber * mask) / count(mask > 0)`` (0 when nothing is masked in)."""

    def __init__(self, delta: float = 1.0, loss_weight: float = 0.05) -> None:
        super().__init__()
        self.delta = delta
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        m = _expand_weight(mask, pred)
        hub = F.huber_loss(pred.float(), target.float(), reduction="none", delta=self.delta)
        return self.loss_weight * (hub * m).sum() / (m > 0).sum().clamp(min=1)


class KLDiscretLoss(nn.Module):
    """RTMPose's SimCC loss (MMPose ``KLDiscretLoss(beta=10, label_softmax=True,
    use_target_weight=True)``).

    For each axis: ``p = softmax(label * label_beta)``, ``log q = log_softmax(logits * beta)``,
    ``kl = mean_bins(p * (log p - log q))`` per (instance, keypoint); the loss is
    ``sum(kl_x * w) + sum(kl_y * w)`` over instances and keypoints, divided by K
    (so, like MMPose, it grows with the batch size).
    """

    def __init__(self, beta: float = 10.0, label_softmax: bool = True, label_beta: float = 10.0,
                 use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.beta = beta
        self.label_softmax = label_softmax
        self.label_beta = label_beta
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def _kl(self, logits: Tensor, labels: Tensor) -> Tensor:
        log_q = F.log_softmax(logits.float() * self.beta, dim=-1)
        p = F.softmax(labels.float() * self.label_beta, dim=-1) if self.label_softmax \
            else labels.float()
        return F.kl_div(log_q, p, reduction="none").mean(dim=-1)  # (B, K)

    def forward(self, x_logits: Tensor, y_logits: Tensor, x_labels: Tensor, y_labels: Tensor,
                weight: Tensor | None = None) -> Tensor:
        k = x_logits.shape[1]
        kl = self._kl(x_logits, x_labels) + self._kl(y_logits, y_labels)
        if self.use_target_weight and weight is not None:
            kl = kl * weight.to(kl.dtype).reshape(kl.shape)
        return self.loss_weight * kl.sum() / k


@dataclass
class LossConfig:
    """Which heatmap loss, and the loss weights (DLC's defaults for the locref)."""

    heatmap: str = "mse"          # "mse" (MMPose) or "bce" (DeepLabCut)
    heatmap_weight: float = 1.0
    locref_weight: float = 0.05
    locref_huber_delta: float = 1.0
    simcc_beta: float = 10.0


class PoseLoss(nn.Module):
    """Total loss from the model outputs and the batch targets.

    Model outputs (dict): ``heatmap`` [+ ``locref``] or ``x_logits`` + ``y_logits``.
    Batch keys read: ``heatmap`` + ``heatmap_weight`` | ``keypoint_weight``, ``locref`` +
    ``locref_weight``; ``x_labels``, ``y_labels``, ``keypoint_weight``.
    Returns ``(total, {part: value})`` with the parts detached.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        c = self.config
        if c.heatmap == "mse":
            self.heatmap_loss: nn.Module = KeypointMSELoss(loss_weight=c.heatmap_weight)
        elif c.heatmap == "bce":
            self.heatmap_loss = WeightedBCELoss(loss_weight=c.heatmap_weight)
        else:
            raise ValueError(f"unknown heatmap loss {c.heatmap!r} (use 'mse' or 'bce')")
        self.locref_loss = MaskedHuberLoss(c.locref_huber_delta, c.locref_weight)
        self.simcc_loss = KLDiscretLoss(beta=c.simcc_beta)

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
                ) -> tuple[Tensor, dict[str, Tensor]]:
        parts: dict[str, Tensor] = {}
        if "x_logits" in outputs:
            parts["simcc"] = self.simcc_loss(
                outputs["x_logits"], outputs["y_logits"],
                keypoint_weight(batch, "x_labels"), keypoint_weight(batch, "y_labels"),
                keypoint_weight(batch, "keypoint_weight"))
        if "heatmap" in outputs:
            weight = keypoint_weight(batch, "heatmap_weight", "keypoint_weight")
            parts["heatmap"] = self.heatmap_loss(outputs["heatmap"],
                                                 keypoint_weight(batch, "heatmap"), weight)
        if "locref" in outputs:
            parts["locref"] = self.locref_loss(outputs["locref"], keypoint_weight(batch, "locref"),
                                               keypoint_weight(batch, "locref_weight"))
        if not parts:
            raise KeyError(f"no known outputs among {sorted(outputs)}")
        total = sum(parts.values())
        return total, {k: v.detach() for k, v in parts.items()}
