"""Inference: decode model outputs with the codec, map them back to original image pixels
through the batch's inverse affine, evaluate, and write DeepLabCut-format predictions."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn

from posefeed.targets import cupy_or_none
from posefeed.trainers.metrics import evaluate_keypoints, keypoint_rmse, mean_pose
from posefeed.trainers.trainer import prepare_image


def decode_outputs(codec: Any, outputs: dict[str, Tensor], heatmap_logits: bool = False
                   ) -> tuple[Tensor, Tensor]:
    """Model outputs -> ``keypoints (B, K, 2)`` in input pixels and ``scores (B, K)``, via
    ``codec.decode`` (SimCC: ``x_logits, y_logits``; DLC: ``heatmap, locref``; heatmap:
    ``heatmap``). ``heatmap_logits``: apply a sigmoid first (BCE-trained heatmaps).
    CUDA outputs are decoded with CuPy when it is installed, else moved to the CPU first."""
    if any(v.is_cuda for v in outputs.values()) and cupy_or_none() is None:
        outputs = {k: v.cpu() for k, v in outputs.items()}
    if "x_logits" in outputs:
        return codec.decode(outputs["x_logits"].float(), outputs["y_logits"].float())
    hm = outputs["heatmap"].float()
    if heatmap_logits:
        hm = hm.sigmoid()
    if "locref" in outputs:
        return codec.decode(hm, outputs["locref"].float())
    return codec.decode(hm)


def to_original(keypoints: Tensor, affine: Tensor) -> Tensor:
    """``keypoints (B, ..., 2)`` in input pixels -> original image pixels with
    ``affine (B, 2, 3)``: ``[x, y] = A[:, :2] @ [x_in, y_in] + A[:, 2]``."""
    a = affine.to(keypoints.dtype)
    shape = keypoints.shape
    flat = keypoints.reshape(shape[0], -1, 2)
    out = flat @ a[:, :, :2].transpose(1, 2) + a[:, None, :, 2]
    return out.reshape(shape)


@dataclass
class Predictions:
    """One row per predicted instance: ``keypoints (M, K, 2)`` and ``scores (M, K)`` in
    original image pixels, ``rows (M,)`` PoseTable rows, ``gt (M, K, 3)`` the batch's
    keypoints mapped back to original pixels (used when no table is given)."""

    keypoints: np.ndarray
    scores: np.ndarray
    rows: np.ndarray
    gt: np.ndarray


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[dict[str, Tensor]], codec: Any,
            device: torch.device | str | None = None, heatmap_logits: bool = False
            ) -> Predictions:
    """Run ``model`` over ``loader`` (no augmentation, no shuffling) and decode.

    The built-in heads predict one instance per sample: in frame mode that is instance 0 of
    the frame (single-animal data). Padding samples (``index < 0``) and repeated rows
    (a padded last batch) are dropped. Under ``torch.distributed`` (world size > 1) every
    rank's predictions are gathered, so each rank returns those of the whole set (a
    PoseLoader shards itself across the ranks), in table-row order.
    """
    if device is None:
        device = next(model.parameters()).device
    model.eval()
    kps, scores, rows, gts = [], [], [], []
    for batch in loader:
        image = prepare_image(batch["image"].to(device))
        kp, sc = decode_outputs(codec, model(image), heatmap_logits)
        affine = batch["affine"].to(kp.device)
        kps.append(to_original(kp.float(), affine).cpu().numpy())
        scores.append(sc.float().cpu().numpy())
        gt = batch["keypoints"][:, 0].float()
        gxy = to_original(gt[..., :2].to(affine.device), affine).cpu()
        gts.append(torch.cat([gxy, gt[..., 2:].cpu()], -1).numpy())
        rows.append(batch["index"][:, 0].cpu().numpy())
    parts = [np.concatenate(x) if x else None for x in (kps, scores, rows, gts)]
    gathered = _gather_ranks(parts)
    if gathered is not None:   # rows seen by several ranks (padded shards) count once
        parts = [np.concatenate(got) if (got := [g[i] for g in gathered if g[i] is not None])
                 else None for i in range(4)]
    kp_all, sc_all, r, gt_all = parts
    if r is None:
        raise ValueError("the loader yielded no batch to predict on")
    r = r.astype(np.int64)
    _, first = np.unique(r, return_index=True)
    first = first[r[first] >= 0]
    keep = first[np.argsort(r[first], kind="stable")] if gathered is not None else np.sort(first)
    return Predictions(kp_all[keep], sc_all[keep], r[keep], gt_all[keep])


def _gather_ranks(parts: list) -> list | None:
    """Every rank's ``parts`` (a list of arrays), when ``torch.distributed`` runs with more
    than one process; else None."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, parts)
    return out


def evaluate(model: nn.Module, loader: Iterable[dict[str, Tensor]], codec: Any, table: Any = None,
             pcutoff: float = 0.6, sigmas: np.ndarray | None = None,
             heatmap_logits: bool = False) -> tuple[dict[str, float], Predictions]:
    """Predict and score against the table's ground truth (original pixels; boxes from the
    table) or, without a table, the batches' keypoints mapped back (boxes around them)."""
    pred = predict(model, loader, codec, heatmap_logits=heatmap_logits)
    if table is not None:
        gt = table.keypoints[pred.rows]
        boxes = table.bboxes[pred.rows]
    else:
        gt = pred.gt
        boxes = _boxes_around(gt)
    return evaluate_keypoints(pred.keypoints, pred.scores, gt, boxes, pcutoff, sigmas), pred


def _boxes_around(gt: np.ndarray) -> np.ndarray:
    lab = gt[..., 2] > 0
    x = np.where(lab, gt[..., 0], np.nan)
    y = np.where(lab, gt[..., 1], np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x0, x1, y0, y1 = np.nanmin(x, 1), np.nanmax(x, 1), np.nanmin(y, 1), np.nanmax(y, 1)
    return np.nan_to_num(np.stack([x0, y0, x1 - x0, y1 - y0], 1))


def mean_pose_rmse(train_keypoints: np.ndarray, test_keypoints: np.ndarray) -> float:
    """RMSE (mean Euclidean distance, pixels) of the mean-pose baseline: every test
    instance is predicted as the training set's mean keypoint positions."""
    mp = mean_pose(train_keypoints)
    pred = np.broadcast_to(mp, (len(test_keypoints),) + mp.shape)
    return keypoint_rmse(np.nan_to_num(pred), test_keypoints)


def dlc_predictions_frame(images: list[str], bodyparts: list[str], keypoints: np.ndarray,
                          scores: np.ndarray, scorer: str = "posefeed",
                          individuals: list[str] | None = None) -> pd.DataFrame:
    """DeepLabCut's prediction layout: columns ``(scorer, bodyparts, coords)`` with coords
    ``x, y, likelihood`` (plus an ``individuals`` level when given), index = image paths.

    ``keypoints (M, K, 2)``, ``scores (M, K)``; with ``individuals`` (length M), rows of the
    same image are merged into one row, one column block per individual."""
    k = len(bodyparts)
    vals = np.concatenate([keypoints, scores[..., None]], -1).reshape(len(keypoints), k * 3)
    coords = ("x", "y", "likelihood")
    if individuals is None:
        cols = pd.MultiIndex.from_tuples([(scorer, bp, c) for bp in bodyparts for c in coords],
                                         names=["scorer", "bodyparts", "coords"])
        return pd.DataFrame(vals, index=pd.Index(images, dtype=object), columns=cols)
    inds = list(dict.fromkeys(individuals))
    uniq = list(dict.fromkeys(images))
    cols = pd.MultiIndex.from_tuples(
        [(scorer, i, bp, c) for i in inds for bp in bodyparts for c in coords],
        names=["scorer", "individuals", "bodyparts", "coords"])
    data = np.full((len(uniq), len(cols)), np.nan)
    row_of = {im: r for r, im in enumerate(uniq)}
    for m, (im, ind) in enumerate(zip(images, individuals)):
        j = inds.index(ind) * k * 3
        data[row_of[im], j:j + k * 3] = vals[m]
    return pd.DataFrame(data, index=pd.Index(uniq, dtype=object), columns=cols)


def write_dlc_predictions(path: str | Path, table: Any, pred: Predictions,
                          scorer: str = "posefeed") -> tuple[Path, Path]:
    """Write ``<path>.h5`` (key ``df_with_missing``) and ``<path>.csv`` in DeepLabCut's
    prediction format for the table rows in ``pred``. Multi-animal layout when an image has
    several predicted rows. Returns the two paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    all_images, all_inds = table.frame[("image", "")].tolist(), table.individuals
    images = [all_images[r] for r in pred.rows]
    inds = [all_inds[r] for r in pred.rows] if len(set(images)) < len(images) else None
    df = dlc_predictions_frame(images, list(table.bodyparts), pred.keypoints, pred.scores,
                               scorer, inds)
    h5, csv = path.with_suffix(".h5"), path.with_suffix(".csv")
    df.to_hdf(h5, key="df_with_missing", mode="w")
    df.to_csv(csv)
    return h5, csv
