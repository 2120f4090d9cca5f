"""DeepLabCut 3.x heatmap + locref targets computed in torch, on the model outputs' device.

The logic behind ``PosefeedHeatmapGaussianGenerator`` / ``PosefeedHeatmapPlateauGenerator``
(``posefeed.integrations.deeplabcut``); this module imports no DeepLabCut, so it is tested
without it. It reproduces DeepLabCut 3.0.2's ``HeatmapGenerator.forward`` (``models/
target_generators/heatmap_targets.py``: a Python loop over batch x heatmap x member over the
full map in NumPy, then ``torch.tensor(..., device=...)``) with whole-batch torch operations:
no NumPy round trip, no Python loop over samples or keypoints (only over the members of a
heatmap: the individuals in keypoint mode, the keypoints in individual mode).

DeepLabCut's rules, reproduced exactly (shapes: ``B`` batch, ``C = num_heatmaps``, ``(H, W)``
the ``outputs["heatmap"]`` map; coordinates in input-image pixels, DeepLabCut's convention):

* grid: cell ``(i, j)`` has centre ``gx = trunc(j*stride + stride/2)``, ``gy = trunc(i*stride
  + stride/2)`` (DeepLabCut writes the float into an integer ``np.mgrid``);
* ``labels[label_keypoint_key]``: ``(B, N, K, 3)`` or ``(B, K, 3)`` ``(x, y, v)``. Keypoint
  mode: heatmap ``c`` is keypoint ``c`` and its members are the ``N`` individuals; individual
  mode: heatmap ``c`` is individual ``c`` (rows placed by ``labels["individual_ids"]``,
  unplaced ones are all ``-1``) and its members are its ``K`` keypoints;
* per member, in member order: ``gradient_masking and v == 0`` sets the heatmap's weight map
  to ``background_weight``; else ``v == -1`` sets it to 0; else ``v > 0`` draws. The last
  member that sets a weight wins; weights are 1 otherwise;
* Gaussian: ``heatmap = max_members exp(-d^2 / (2 sigma^2))``, ``sigma = 2 t / 3``,
  ``t = pos_dist_thresh`` (px), ``d^2 = (gy - y)^2 + (gx - x)^2``. Plateau: 1 where ``d^2 <=
  t^2``;
* locref: channel ``2c`` is ``(x - gx) / locref_std``, ``2c+1`` is ``(y - gy) / locref_std``
  (float64 arithmetic, stored as float32). Gaussian: every drawn member rewrites the whole
  map (the last drawn member wins everywhere); plateau: only its disk (last member wins on
  overlaps, 0 outside every disk). The locref weight (``int64``, both channels) is 1 on the
  union of the disks: Gaussian tests ``sqrt(d^2)^2 <= t^2`` (``np.linalg.norm(...) ** 2``),
  plateau ``d^2 <= t^2``, both in float64, as DeepLabCut does.

Output (DeepLabCut's names, shapes and dtypes): ``{"heatmap": {"target": (B, C, H, W)
float32, "weights": (B, C, H, W) float32}, "locref": {"target": (B, 2C, H, W) float32,
"weights": (B, 2C, H, W) int64}}`` (no ``"locref"`` without ``generate_locref``).

Values: the Gaussian map is the outer product of per-axis float32 exponentials (DeepLabCut
takes one float64 ``exp`` per cell): equal to within a few float32 ulps (< 1e-6 absolute);
every other output is bit-identical. Masks, plateaus and plateau locrefs are scattered from
a window of ``ceil((2t+1)/stride) + 4`` cells around each keypoint (the disk cannot reach
further), the dense maps are written once each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

MODES = ("gaussian", "plateau")
HEATMAP_MODES = ("keypoint", "individual")
_BIG = 1.0e7  # px: coordinates are clipped to this before window arithmetic (never drawn there)


def heatmap_mode_name(mode: Any) -> str:
    """``"keypoint"`` / ``"individual"`` from a string in any case or DeepLabCut's
    ``HeatmapGenerator.Mode`` enum."""
    value = getattr(mode, "value", mode)
    if isinstance(value, str) and value.lower() in HEATMAP_MODES:
        return value.lower()
    raise ValueError(f"heatmap_mode must be 'keypoint' or 'individual'; got {mode!r}")


def dlc_grid(size: int, stride: float, device: torch.device) -> torch.Tensor:
    """DeepLabCut's grid centres ``trunc(i*stride + stride/2)`` for ``i < size``, float64 px."""
    return (torch.arange(size, dtype=torch.float64, device=device) * float(stride)
            + float(stride) / 2).trunc()


@dataclass
class _Outputs:
    """One call's output tensors and what was written into them (for kept buffers)."""

    heatmap: torch.Tensor
    weights: torch.Tensor
    wmap: torch.Tensor                      # (B, C) the value of each weight map
    locref: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    hm_cells: torch.Tensor | None = None    # flat heatmap cells set to 1 (plateau)
    lr_cells: torch.Tensor | None = None    # flat locref cells written (channel 2c; 2c+1 is + H*W)


class DLCHeatmapTargets:
    """DeepLabCut's heatmap (+ locref) target generator, vectorised in torch.

    Args (DeepLabCut's names and defaults):
        num_heatmaps: ``C``, heatmaps per sample (keypoints, or individuals in individual mode).
        pos_dist_thresh: ``t`` in input pixels (DeepLabCut's default config: 17).
        mode: ``"gaussian"`` (``HeatmapGaussianGenerator``) or ``"plateau"``
            (``HeatmapPlateauGenerator``).
        heatmap_mode: ``"keypoint"`` or ``"individual"`` (any case, or DeepLabCut's enum).
        gradient_masking: ``v == 0`` members set the weight map to ``background_weight``.
        background_weight: see ``gradient_masking``.
        generate_locref: also produce the ``"locref"`` targets.
        locref_std: locref scale in input pixels.
        label_keypoint_key: the key of the keypoints in ``labels``.
        reuse_buffers: return kept output tensors (one set per shape, the ``max_kept``
            most recent shapes), rewriting only what changed: the dense maps, the weight
            maps whose value changed, the previous and new disk cells. It saves the page
            faults of ~184 MB of new memory per call at 2 x 37 @ 241x321 (DeepLabCut's
            generator allocates them anew each call). Safe in DeepLabCut's training step,
            which uses the targets only until ``backward()`` (and autograd refuses a
            backward through targets rewritten in between); keep a ``.clone()`` if you
            keep targets across calls. ``False``: new tensors every call.
        max_kept: output shapes kept with ``reuse_buffers`` (training + evaluation: 2).
    """

    def __init__(self, num_heatmaps: int, pos_dist_thresh: float, mode: str = "gaussian",
                 heatmap_mode: Any = "keypoint", gradient_masking: bool = False,
                 background_weight: float = 0.1, generate_locref: bool = True,
                 locref_std: float = 7.2801, label_keypoint_key: str = "keypoints",
                 reuse_buffers: bool = True, max_kept: int = 2) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'gaussian' or 'plateau'; got {mode!r}")
        if int(num_heatmaps) < 1:
            raise ValueError(f"num_heatmaps must be >= 1; got {num_heatmaps!r}")
        self.num_heatmaps = int(num_heatmaps)
        self.mode = mode
        self.dist_thresh = float(pos_dist_thresh)
        self.dist_thresh_sq = self.dist_thresh ** 2
        self.std = 2 * self.dist_thresh / 3
        self.heatmap_mode = heatmap_mode_name(heatmap_mode)
        self.gradient_masking = bool(gradient_masking)
        self.background_weight = float(background_weight)
        self.generate_locref = bool(generate_locref)
        self.locref_std = float(locref_std)
        self.locref_scale = 1.0 / self.locref_std
        self.label_keypoint_key = label_keypoint_key
        self.reuse_buffers = bool(reuse_buffers)
        self.max_kept = max(int(max_kept), 1)
        self._kept: dict[tuple, _Outputs] = {}

    def __repr__(self) -> str:
        return (f"DLCHeatmapTargets(num_heatmaps={self.num_heatmaps}, pos_dist_thresh="
                f"{self.dist_thresh}, mode={self.mode!r}, heatmap_mode={self.heatmap_mode!r}, "
                f"gradient_masking={self.gradient_masking}, background_weight="
                f"{self.background_weight}, generate_locref={self.generate_locref}, "
                f"locref_std={self.locref_std})")

    # ------------------------------------------------------------------ DLC's contract
    def __call__(self, stride: float, outputs: Mapping[str, torch.Tensor],
                 labels: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
        """DeepLabCut's ``forward(stride, outputs, labels)``: sizes and device from
        ``outputs["heatmap"] (B, C, H, W)`` (locref targets go to ``outputs["locref"]``'s
        device); keypoints from ``labels[label_keypoint_key]``."""
        if "heatmap" not in outputs:
            raise KeyError("outputs has no 'heatmap' (the head's heatmap output)")
        hm_out = outputs["heatmap"]
        b, _, h, w = hm_out.shape
        if self.generate_locref and "locref" not in outputs:
            raise KeyError("generate_locref is set but outputs has no 'locref'")
        if self.label_keypoint_key not in labels:
            raise KeyError(f"labels has no {self.label_keypoint_key!r} (label_keypoint_key)")
        ids = labels.get("individual_ids") if self.heatmap_mode == "individual" else None
        if self.heatmap_mode == "individual" and ids is None:
            raise KeyError("heatmap_mode='individual' needs labels['individual_ids']")
        out = self.encode(labels[self.label_keypoint_key], stride, (h, w), hm_out.device,
                          individual_ids=ids, batch_size=b)
        if self.generate_locref:
            dev = outputs["locref"].device
            out["locref"] = {k: v.to(dev) for k, v in out["locref"].items()}
        return out

    # ------------------------------------------------------------------ the targets
    def _groups(self, keypoints: Any, individual_ids: Any, batch_size: int | None,
                device: torch.device) -> torch.Tensor:
        """``(B, G, M, 3)`` float64: heatmap groups ``G`` and their members ``M``."""
        kp = torch.as_tensor(keypoints).to(device=device, dtype=torch.float64)
        if kp.dim() == 3:  # single animal: (B, K, 3)
            kp = kp.reshape(kp.shape[0] if batch_size is None else batch_size, 1, *kp.shape[1:])
        if kp.dim() != 4 or kp.shape[-1] < 3:
            raise ValueError(f"keypoints must be (B, N, K, 3) or (B, K, 3) (x, y, v); "
                             f"got shape {tuple(kp.shape)}")
        kp = kp[..., :3]
        if batch_size is not None and kp.shape[0] != batch_size:
            raise ValueError(f"keypoints have batch {kp.shape[0]} but the outputs {batch_size}")
        if self.heatmap_mode == "keypoint":
            return kp.transpose(1, 2)  # (B, K, N, 3)
        # individual mode: row n of sample b goes to slot individual_ids[b, n] (if >= 0),
        # later rows overwriting earlier ones (DLC's loop); empty slots are all -1
        ids = torch.as_tensor(individual_ids).to(device=device, dtype=torch.int64)
        n = kp.shape[1]
        if ids.shape != kp.shape[:2]:
            raise ValueError(f"individual_ids must be (B, N) = {tuple(kp.shape[:2])}; "
                             f"got {tuple(ids.shape)}")
        if bool((ids >= n).any()):
            raise ValueError(f"individual_ids must be < N = {n} (DeepLabCut indexes its "
                             f"(B, N) rows with them); got max {int(ids.max())}")
        rows = torch.arange(n, device=device)
        hit = ids[:, :, None] == rows[None, None, :]  # (B, row, slot)
        src = torch.where(hit, rows[None, :, None], -1).amax(dim=1)  # (B, slot): last row
        picked = torch.take_along_dim(kp, src.clamp(min=0)[:, :, None, None], dim=1)
        return torch.where((src >= 0)[:, :, None, None], picked, torch.full_like(kp, -1.0))

    def encode(self, keypoints: Any, stride: float, size: tuple[int, int],
               device: torch.device | str = "cpu", individual_ids: Any = None,
               batch_size: int | None = None) -> dict[str, dict[str, torch.Tensor]]:
        """Targets for ``keypoints`` ((B, N, K, 3) or (B, K, 3), input pixels) on an
        ``size = (H, W)`` map of ``stride`` input pixels per cell, on ``device``.

        With ``reuse_buffers`` the returned tensors are this generator's kept buffers,
        rewritten by the next call of the same shape (see the class docstring)."""
        device = torch.device(device)
        g_kp = self._groups(keypoints, individual_ids, batch_size, device)
        b, g, m, _ = g_kp.shape
        c = self.num_heatmaps
        if g > c:
            what = "keypoints" if self.heatmap_mode == "keypoint" else "individuals"
            raise ValueError(f"{g} heatmap groups ({what}) but num_heatmaps = {c}")
        h, w = int(size[0]), int(size[1])
        hw = h * w
        x, y, v = g_kp[..., 0], g_kp[..., 1], g_kp[..., 2]  # (B, G, M) float64
        gx, gy = dlc_grid(w, stride, device), dlc_grid(h, stride, device)
        vis = v > 0
        ar_m = torch.arange(m, device=device)
        buf, fresh = self._outputs(b, g, h, w, device)
        gaussian = self.mode == "gaussian"
        if fresh and gaussian and g < c:  # maps >= G are never drawn
            buf.heatmap[:, g:].zero_()
            if self.generate_locref:
                buf.locref.view(b, c, 2, h, w)[:, g:].zero_()

        # weights: one value per map, set by the last member that sets one (NaN: sets none)
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
        setw = torch.where(v == -1, 0.0, nan)
        if self.gradient_masking:
            setw = torch.where(v == 0, self.background_weight, setw)
        wmap = torch.ones((b, c), dtype=torch.float32, device=device)
        if m:
            last_w = torch.where(~torch.isnan(setw), ar_m, -1).amax(dim=-1)  # (B, G)
            wsel = torch.take_along_dim(setw, last_w.clamp(min=0)[..., None], dim=-1)[..., 0]
            wmap[:, :g] = torch.where(last_w >= 0, wsel, 1.0).float()
        if fresh:
            buf.weights.copy_(wmap[:, :, None, None].expand(b, c, h, w))
        else:  # only the maps whose weight changed
            bi, ci = torch.nonzero(wmap != buf.wmap, as_tuple=True)
            if bi.numel():
                buf.weights[bi, ci] = wmap[bi, ci][:, None, None]
        buf.wmap = wmap

        # cells inside the disks (plateau heatmap, locref mask, plateau locref)
        disks = []
        if (not gaussian or self.generate_locref) and m:
            disks = self._disks(x, y, vis, gx, gy, float(stride))
        hm_cells = [(bi * c + gi) * hw + pos for bi, gi, pos, _ in disks]
        lr_cells = [(bi * (2 * c) + 2 * gi) * hw + pos for bi, gi, pos, _ in disks]

        # heatmap
        if gaussian:
            k2 = 1.0 / (2 * self.std ** 2)
            ex = torch.where(vis[..., None], torch.exp(-(gx - x[..., None]) ** 2 * k2), 0.0).float()
            ey = torch.where(vis[..., None], torch.exp(-(gy - y[..., None]) ** 2 * k2), 0.0).float()
            hg = buf.heatmap[:, :g]  # (B, G, H, W); maps >= G stay 0 (zeroed once)
            if m == 0:
                hg.zero_()
            else:
                torch.mul(ey[:, :, 0, :, None], ex[:, :, 0, None, :], out=hg)
                for j in range(1, m):  # members: the individuals (keypoint mode)
                    torch.maximum(hg, ey[:, :, j, :, None] * ex[:, :, j, None, :], out=hg)
        else:
            flat = buf.heatmap.view(-1)
            if buf.hm_cells is not None:
                flat[buf.hm_cells] = 0.0
            for cells in hm_cells:
                flat[cells] = 1.0
            buf.hm_cells = torch.cat(hm_cells) if hm_cells else None
        out = {"heatmap": {"target": buf.heatmap, "weights": buf.weights}}
        if not self.generate_locref:
            return out

        # locref mask (int64, both channels), then the locref
        mflat = buf.mask.view(-1)
        if buf.lr_cells is not None:
            mflat[buf.lr_cells] = 0
            mflat[buf.lr_cells + hw] = 0
        for cells in lr_cells:
            mflat[cells] = 1
            mflat[cells + hw] = 1
        scale = self.locref_scale
        if gaussian:  # the last drawn member writes the whole map of both channels
            lg = buf.locref.view(b, c, 2, h, w)[:, :g]
            if m:
                last = torch.where(vis, ar_m, -1).amax(dim=-1)[..., None]  # (B, G, 1)
                xl = torch.take_along_dim(x, last.clamp(min=0), dim=-1)
                yl = torch.take_along_dim(y, last.clamp(min=0), dim=-1)
                # channel 0 varies along W only, channel 1 along H only: one broadcast
                # add of a row [lx, 0] (B, G, 2, 1, W) and a column [0, ly] (B, G, 2, H, 1)
                # writes both (v + 0 == v; torch streams it ~10x faster than two
                # broadcast copies)
                row = torch.zeros((b, g, 2, 1, w), dtype=torch.float32, device=device)
                col = torch.zeros((b, g, 2, h, 1), dtype=torch.float32, device=device)
                row[:, :, 0, 0] = torch.where(last >= 0, (xl - gx) * scale, 0.0)
                col[:, :, 1, :, 0] = torch.where(last >= 0, (yl - gy) * scale, 0.0)
                torch.add(row, col, out=lg)
            else:
                lg.zero_()
        else:  # inside each disk, member order: later members overwrite
            lflat = buf.locref.view(-1)
            if buf.lr_cells is not None:
                lflat[buf.lr_cells] = 0.0
                lflat[buf.lr_cells + hw] = 0.0
            for cells, (_, _, _, val) in zip(lr_cells, disks):
                lflat[cells] = val[0]
                lflat[cells + hw] = val[1]
        buf.lr_cells = torch.cat(lr_cells) if lr_cells else None
        out["locref"] = {"target": buf.locref, "weights": buf.mask}
        return out

    def _outputs(self, b: int, g: int, h: int, w: int, device: torch.device) -> tuple["_Outputs", bool]:
        """The output tensors for one call: kept ones of this shape (``reuse_buffers``), or
        new ones. ``fresh``: new, with every map at its initial value (weights to be
        written whole, sparse maps zero)."""
        key = (b, g, h, w, str(device))
        if self.reuse_buffers and key in self._kept:
            self._kept[key] = self._kept.pop(key)  # most recently used last
            return self._kept[key], False
        c = self.num_heatmaps
        dense = torch.empty if not self.reuse_buffers else torch.zeros
        gaussian = self.mode == "gaussian"
        mk = (dense if gaussian else torch.zeros)
        buf = _Outputs(
            heatmap=mk((b, c, h, w), dtype=torch.float32, device=device),
            weights=torch.empty((b, c, h, w), dtype=torch.float32, device=device),
            wmap=torch.ones((b, c), dtype=torch.float32, device=device))
        if self.generate_locref:
            buf.locref = mk((b, 2 * c, h, w), dtype=torch.float32, device=device)
            buf.mask = torch.zeros((b, 2 * c, h, w), dtype=torch.int64, device=device)
        if self.reuse_buffers:
            self._kept[key] = buf
            while len(self._kept) > self.max_kept:
                self._kept.pop(next(iter(self._kept)))
        return buf, True

    def _disks(self, x: torch.Tensor, y: torch.Tensor, vis: torch.Tensor, gx: torch.Tensor,
               gy: torch.Tensor, stride: float) -> list[tuple[Any, ...]]:
        """Per member ``j`` (in order): the cells inside the disk of every drawn keypoint of
        that member, as ``(batch index, group index, cell = row*W + col, locref values)``
        (values: float32 ``(x - gx, y - gy) / locref_std`` in plateau mode, else None).
        Inside: ``d^2 <= t^2`` (plateau) or ``sqrt(d^2)^2 <= t^2`` (Gaussian), float64. Only
        a window of ``ceil((2t+1)/stride) + 4`` cells per axis is tested (``gx > j*stride +
        stride/2 - 1``, so the disk cannot reach further)."""
        w, h = gx.numel(), gy.numel()
        t = self.dist_thresh
        span = int(math.ceil((2 * t + 1) / stride)) + 4
        sw, sh = min(span, w), min(span, h)
        finite = torch.isfinite(x) & torch.isfinite(y)
        xc = torch.where(finite, x, 0.0).clamp(-_BIG, _BIG)
        yc = torch.where(finite, y, 0.0).clamp(-_BIG, _BIG)
        c0 = (torch.floor((xc - t) / stride - 0.5) - 1).clamp(0, w - sw).long()  # (B, G, M)
        r0 = (torch.floor((yc - t) / stride - 0.5) - 1).clamp(0, h - sh).long()
        cols = c0[..., None] + torch.arange(sw, device=x.device)  # (B, G, M, sw)
        rows = r0[..., None] + torch.arange(sh, device=x.device)
        dx = gx[cols] - x[..., None]  # float64
        dy = gy[rows] - y[..., None]
        d2 = (dy * dy)[..., :, None] + (dx * dx)[..., None, :]  # (B, G, M, sh, sw)
        if self.mode == "gaussian":
            d2 = torch.sqrt(d2) ** 2  # np.linalg.norm(grid - keypoint, axis=2) ** 2
        inside = (d2 <= self.dist_thresh_sq) & vis[..., None, None]
        scale = self.locref_scale
        out = []
        for j in range(x.shape[2]):  # members, in DeepLabCut's order
            bi, gi, ii, jj = torch.nonzero(inside[:, :, j], as_tuple=True)
            r = rows[bi, gi, j, ii]
            cc = cols[bi, gi, j, jj]
            val = None
            if self.mode == "plateau":
                val = (((x[bi, gi, j] - gx[cc]) * scale).float(),
                       ((y[bi, gi, j] - gy[r]) * scale).float())
            out.append((bi, gi, r * w + cc, val))
        return out
