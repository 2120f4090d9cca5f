"""`TorchFrameLoader`: a small pure-PyTorch whole-frame loader with the PoseLoader batch
contract, for CPU runs, tests and machines without DALI.

Frames are decoded once (PIL) and cached, downscaled to about the network input scale.
Each sample is the whole frame fitted into ``input_size`` (aspect kept, centred,
black border), with an optional random rotation / scale / shift / flip (left-right pairs
swapped) and brightness / contrast jitter, warped with ``affine_grid`` + ``grid_sample``.
The order and the augmentation are a function of ``(seed, epoch)`` only, so a run resumed
at an epoch boundary sees the same samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from posefeed.trainers.trainer import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class FrameAugment:
    """Random whole-frame augmentation (ranges are symmetric around no change)."""

    rotation: float = 30.0        # degrees, uniform in [-r, r]
    scale: tuple[float, float] = (0.8, 1.25)
    shift: float = 0.1            # fraction of the input size, uniform in [-s, s]
    flip: float = 0.5             # probability (only when the table has flip pairs)
    brightness: float = 0.2       # fraction of 255, uniform in [-b, b]
    contrast: float = 0.2         # factor uniform in [1 - c, 1 + c]


def _mat(a: np.ndarray) -> np.ndarray:
    """``(..., 2, 3)`` -> ``(..., 3, 3)``."""
    out = np.zeros(a.shape[:-2] + (3, 3))
    out[..., :2, :] = a
    out[..., 2, 2] = 1.0
    return out


class TorchFrameLoader:
    """Iterable of batch dicts (PoseLoader's contract, frame mode, CPU tensors).

    Args:
        table: a PoseTable; one sample per image, all its instances (``N`` = the largest
            instance count, padding rows have ``v = 0`` and ``index = -1``).
        codecs: codec or list of codecs whose ``encode`` outputs are added to each batch.
        input_size: network input ``(w, h)``.
        augment: a `FrameAugment`, or None for none (evaluation).
    """

    def __init__(self, table: Any, codecs: Any, input_size: tuple[int, int] = (320, 240),
                 batch_size: int = 8, augment: FrameAugment | None = None, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        self.table = table
        self.codecs = list(codecs) if isinstance(codecs, (list, tuple)) else [codecs]
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = int(batch_size)
        self.augment = augment
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        groups = table.frames()
        self.images = table.images
        self.n_inst = max(len(g) for g in groups)
        kp_all = table.keypoints
        k = table.num_keypoints
        self.keypoints = np.zeros((len(groups), self.n_inst, k, 3), np.float32)
        self.rows = np.full((len(groups), self.n_inst), -1, np.int64)
        for i, g in enumerate(groups):
            self.keypoints[i, :len(g)] = np.nan_to_num(kp_all[g])
            self.rows[i, :len(g)] = g
        self.sizes = table.image_sizes[[g[0] for g in groups]].astype(np.float64)
        perm = np.arange(k)
        for a, b in table.flip_pairs:
            perm[a], perm[b] = b, a
        self.flip_perm = perm
        self._cache: list[torch.Tensor] | None = None

    # -- sampler state ---------------------------------------------------------------------
    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])

    # -- data ------------------------------------------------------------------------------
    def _frames(self) -> list[torch.Tensor]:
        """Decoded frames, uint8 ``(3, h, w)``, downscaled to the input scale (once)."""
        if self._cache is None:
            cache = []
            for im, (w, h) in zip(self.images, self.sizes):
                s = min(1.0, 1.25 * min(self.input_size[0] / w, self.input_size[1] / h))
                with Image.open(self.table.image_path(im)) as pil:
                    pil = pil.convert("RGB")
                    if s < 1.0:
                        pil = pil.resize((max(1, round(w * s)), max(1, round(h * s))),
                                         Image.BILINEAR, reducing_gap=2.0)
                    cache.append(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
            self._cache = cache
        return self._cache

    def _affines(self, idx: np.ndarray, rng: np.random.Generator | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Forward ``(B, 3, 3)`` original -> input matrices and the flip flags."""
        b = len(idx)
        w_in, h_in = self.input_size
        size = self.sizes[idx]
        base = np.minimum(w_in / size[:, 0], h_in / size[:, 1])
        rot = np.zeros(b)
        scale = np.ones(b)
        shift = np.zeros((b, 2))
        flip = np.zeros(b, bool)
        a = self.augment
        if a is not None and rng is not None:
            rot = np.deg2rad(rng.uniform(-a.rotation, a.rotation, b))
            scale = np.exp(rng.uniform(np.log(a.scale[0]), np.log(a.scale[1]), b))
            shift = rng.uniform(-a.shift, a.shift, (b, 2)) * np.array([w_in, h_in])
            if len(self.table.flip_pairs):
                flip = rng.random(b) < a.flip
        s = base * scale
        c, si = np.cos(rot) * s, np.sin(rot) * s
        fx = np.where(flip, -1.0, 1.0)
        centre = (size - 1) / 2
        out_c = np.array([(w_in - 1) / 2, (h_in - 1) / 2]) + shift
        m = np.zeros((b, 2, 3))
        # x' = R S F (x - centre) + out_c
        m[:, 0, 0], m[:, 0, 1] = c * fx, -si
        m[:, 1, 0], m[:, 1, 1] = si * fx, c
        m[:, :, 2] = out_c - np.einsum("bij,bj->bi", m[:, :, :2], centre)
        return _mat(m), flip

    def _batch(self, idx: np.ndarray, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        frames = self._frames()
        w_in, h_in = self.input_size
        fwd, flip = self._affines(idx, rng)
        inv = np.linalg.inv(fwd)                                  # input px -> original px
        images = []
        for j, i in enumerate(idx):
            src = frames[i]
            hs, ws = src.shape[1:]
            w0, h0 = self.sizes[i]
            # original px -> cache px (pixel centres): x_c = (x + 0.5) * ws / w0 - 0.5
            to_cache = np.array([[ws / w0, 0, 0.5 * ws / w0 - 0.5],
                                 [0, hs / h0, 0.5 * hs / h0 - 0.5], [0, 0, 1]])
            norm_src = np.array([[2 / ws, 0, 1 / ws - 1], [0, 2 / hs, 1 / hs - 1], [0, 0, 1]])
            unnorm_out = np.array([[w_in / 2, 0, w_in / 2 - 0.5],
                                   [0, h_in / 2, h_in / 2 - 0.5], [0, 0, 1]])
            theta = norm_src @ to_cache @ inv[j] @ unnorm_out
            grid = F.affine_grid(torch.tensor(theta[None, :2], dtype=torch.float32),
                                 [1, 3, h_in, w_in], align_corners=False)
            images.append(F.grid_sample(src[None].float(), grid, mode="bilinear",
                                        padding_mode="zeros", align_corners=False)[0])
        image = torch.stack(images)
        a = self.augment
        if a is not None and rng is not None:
            b = len(idx)
            gain = torch.tensor(rng.uniform(1 - a.contrast, 1 + a.contrast, b),
                                dtype=torch.float32).view(-1, 1, 1, 1)
            bias = torch.tensor(rng.uniform(-a.brightness, a.brightness, b) * 255,
                                dtype=torch.float32).view(-1, 1, 1, 1)
            mean = image.mean(dim=(1, 2, 3), keepdim=True)
            image = ((image - mean) * gain + mean + bias).clamp(0, 255)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        image = (image - mean) / std

        kp = self.keypoints[idx].copy()                           # (B, N, K, 3)
        kp = np.where(flip[:, None, None, None], kp[:, :, self.flip_perm], kp)
        xy1 = np.concatenate([kp[..., :2], np.ones(kp.shape[:-1] + (1,))], -1)
        xy = np.einsum("bij,bnkj->bnki", fwd[:, :2], xy1)
        inside = ((xy[..., 0] >= -0.5) & (xy[..., 0] <= w_in - 0.5)
                  & (xy[..., 1] >= -0.5) & (xy[..., 1] <= h_in - 0.5))
        v = np.where(inside, kp[..., 2], 0.0)
        kp_in = np.concatenate([xy, v[..., None]], -1).astype(np.float32)
        batch = {"image": image.contiguous(), "keypoints": torch.from_numpy(kp_in),
                 "index": torch.from_numpy(self.rows[idx]),
                 "affine": torch.from_numpy(inv[:, :2].astype(np.float32))}
        for codec in self.codecs:
            for name, arr in codec.encode(kp_in).items():
                key = name if name not in batch else f"{codec.name}/{name}"
                batch[key] = torch.from_numpy(np.ascontiguousarray(arr))
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.images)
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(n)
                 if self.shuffle else np.arange(n))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            rng = np.random.default_rng([self.seed, self.epoch, start, 1])
            yield self._batch(idx, rng if self.augment is not None else None)
