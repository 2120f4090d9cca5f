"""DeepLabCut 3.x heatmap + locref targets computed on the model outputs' device (torch tensors).

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
takes one float64 ``exp`` per cell): equal to within a few float32 ulps (< 1e-6 absolute).
It is written only in a window of ``R = sigma sqrt(2 ln(1 / GAUSS_EPS))`` px around each
keypoint (``GAUSS_EPS = 1e-6``; 63x63 cells at stride 2) into a map that is 0 elsewhere,
where DeepLabCut's values are below ``GAUSS_EPS`` (the bound is argued at ``GAUSS_EPS`` and
its worst case tested): 10x inside the 1e-5 parity. Every other output is bit-identical.
Masks, plateaus and plateau locrefs are selected from a window of ``ceil((2t+1)/stride) + 2``
cells around each keypoint (the disk cannot reach further); the Gaussian locref is written
whole, once. Kept buffers rewrite only what changed (see ``reuse_buffers``): on the CPU the
cost is the bytes written, ~50 MB per call at 2 x 37 @ 241x321 (the Gaussian locref 46 MB).

Two implementations, the same outputs: on CPU tensors, when numba imports (``kernel="auto"``;
DeepLabCut 3 depends on numba), one call of a compiled kernel
(``posefeed.targets.kernels_dlc_cpu``) writes every output into the kept tensors' memory, the
same windows, cells and rules (the Gaussian heatmap as the float64 product of the per-axis
exponentials, rounded once: measured at 2 x 37 @ 121x161, every one of the 45,811 cells
>= 1e-6 bit-identical to DeepLabCut's, against 67 % for the torch version's float32 product,
at most 2 ulps off; every other output bit-identical to the torch version's) with the Gaussian locref streamed by non-temporal stores; on CUDA
tensors, with ``kernel="numpy"`` or without numba, the whole-batch torch operations below
(~76 per call), which the tests compare the kernel with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from posefeed.targets import kernels_dlc_cpu
from posefeed.targets._numba import use_kernel

MODES = ("gaussian", "plateau")
HEATMAP_MODES = ("keypoint", "individual")
# The Gaussian heatmap is written only in a window around each keypoint: every cell left out
# is more than R = sigma * sqrt(2 ln(1 / GAUSS_EPS)) px from the keypoint along x or along y,
# so DeepLabCut's value there, exp(-(dx^2 + dy^2) / (2 sigma^2)) < exp(-R^2 / (2 sigma^2)),
# is below GAUSS_EPS, and posefeed's 0 is within GAUSS_EPS of it: 10x inside the 1e-5 parity
# tolerance (R = 5.26 sigma = 59.6 px at DeepLabCut's default pos_dist_thresh 17).
GAUSS_EPS = 1.0e-6
#: the keypoint columns read: x, y and the last one, the visibility (DeepLabCut's
#: ``keypoint[..., :2]`` and ``keypoint[-1]``)
XYV = [0, 1, -1]


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


def window_starts(pos: torch.Tensor, radius: float, stride: float,
                  upper: torch.Tensor) -> torch.Tensor:
    """First cell of the window covering every grid centre within ``radius`` px of ``pos``
    (float64 px, no NaN; ``(..., 2)`` for ``(x, y)``), clamped into ``[0, upper]`` (``upper
    = size - span`` per axis, broadcast against ``pos``); int64.

    Why it covers them: centre ``j`` is ``trunc(j*s + s/2)`` (s the stride), in ``(j*s + s/2
    - 1, j*s + s/2]``. A centre ``>= pos - r`` has ``j >= a = (pos - r)/s - 1/2``; a centre
    ``<= pos + r`` has ``j < a + L``, ``L = (2r + 1)/s``. So the cells are in ``[ceil(a),
    ceil(a) + ceil(L) - 1]``; the window ``[ceil(a) - 1, ceil(a) - 1 + span)`` with ``span =
    ceil(L) + 2`` (``window_span``) holds them with a cell to spare on each side (for float
    rounding of ``a``), and clamping it into the map keeps what is inside the map."""
    a1 = pos * (1.0 / stride) - (radius / stride + 1.5)  # a - 1 (ceil(a) - 1 == ceil(a - 1))
    return a1.ceil_().clamp_(min=upper.new_zeros(()), max=upper).long()


def window_span(radius: float, stride: float, size: int) -> int:
    """Cells per axis of ``window_starts``'s window, at most the map's ``size``."""
    return min(int(math.ceil((2 * radius + 1) / stride)) + 2, size)


def _runs(flat: torch.Tensor, span: int) -> torch.Tensor:
    """``flat`` seen as its ``(numel - span + 1, span)`` runs: row ``i`` is ``flat[i:i +
    span]`` (rows overlap in memory; only rows that do not overlap each other are indexed
    together below; an empty or too short ``flat`` has no runs)."""
    return flat.as_strided((max(flat.numel() - span + 1, 0), span), (1, 1))


def _cells(starts: torch.Tensor, span: int) -> torch.Tensor:
    return (starts[:, None] + torch.arange(span, device=starts.device)).view(-1)


# Window rows are written as whole runs of ``span`` cells: ``index_copy_`` / ``index_fill_``
# on the runs view move ``span`` contiguous cells per index, 2-4x faster on the CPU than
# ``put_`` / ``index_fill_`` with one index per cell (measured, torch 2.13: 71k cells 80 us vs
# 180 us). torch does not promise in-place indexing on a self-overlapping view; should a
# version refuse it (RuntimeError), the cell-by-cell form does the same writes.
def write_runs(flat: torch.Tensor, starts: torch.Tensor, values: torch.Tensor) -> None:
    """``flat[s:s + span] = values[i]`` for each ``s = starts[i]`` (runs must not overlap)."""
    if starts.numel() == 0:       # (an empty batch or map: nothing to write)
        return
    try:
        _runs(flat, values.shape[1]).index_copy_(0, starts, values)
    except RuntimeError:
        flat.put_(_cells(starts, values.shape[1]), values.reshape(-1))


def fill_runs(flat: torch.Tensor, starts: torch.Tensor, span: int, value: float) -> None:
    """``flat[s:s + span] = value`` for each ``s`` in ``starts``."""
    if starts.numel() == 0:
        return
    try:
        _runs(flat, span).index_fill_(0, starts, value)
    except RuntimeError:
        flat.index_fill_(0, _cells(starts, span), value)


def read_runs(flat: torch.Tensor, starts: torch.Tensor, span: int) -> torch.Tensor:
    """``(len(starts), span)``: ``flat[s:s + span]`` for each ``s`` in ``starts``."""
    return _runs(flat, span).index_select(0, starts)


@dataclass
class _Window:
    """A window of ``rows x cols`` cells (``window_starts``) in an ``(H, W)`` map."""

    rows: int
    cols: int
    upper: torch.Tensor           # (2,) float64 [W - cols, H - rows]: the last starts
    ar_rows: torch.Tensor         # (rows,) int64 0..rows-1
    ar_cols: torch.Tensor         # (cols,) int64
    row_offsets: torch.Tensor     # (rows,) int64: flat offset of window row i (i * W)
    cells: torch.Tensor           # (rows, cols) int64: flat offsets of the window's cells

    @classmethod
    def build(cls, radius: float, stride: float, h: int, w: int, device: torch.device) -> "_Window":
        rows, cols = window_span(radius, stride, h), window_span(radius, stride, w)
        ar_r, ar_c = torch.arange(rows, device=device), torch.arange(cols, device=device)
        return cls(rows, cols, torch.tensor([w - cols, h - rows], dtype=torch.float64, device=device),
                   ar_r, ar_c, ar_r * w, ar_r[:, None] * w + ar_c)


@dataclass
class _Geometry:
    """What one ``(H, W, stride, device)`` needs every call (cached): the grid centres and
    the Gaussian and disk windows."""

    gx: torch.Tensor              # (W,) float64 px
    gy: torch.Tensor              # (H,) float64 px
    gxy: torch.Tensor             # (W + H,) both, for one lookup of (x, y) windows
    axis_off: torch.Tensor        # (2,) int64 [0, W]: where gy starts in gxy
    gauss: _Window
    disk: _Window
    gx_np: np.ndarray | None = None  # gx, gy as NumPy (CPU), for the compiled kernel
    gy_np: np.ndarray | None = None


@dataclass
class _Disk:
    """Cells inside the disks of one member's keypoints (plateau mode)."""

    lr_cells: torch.Tensor                  # flat locref cells, channel 2g (2g+1: + H*W)
    hm_cells: torch.Tensor                  # flat heatmap cells
    lx: torch.Tensor                        # float32 locref values there
    ly: torch.Tensor


@dataclass
class _Outputs:
    """One call's output tensors and what was written into them (for kept buffers)."""

    heatmap: torch.Tensor
    weights: torch.Tensor
    wmap: torch.Tensor                      # (B, C) the value of each weight map
    base: torch.Tensor                      # (B, G, 1) int64 flat offset of map (b, g)
    locref: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    hm_cells: torch.Tensor | None = None    # flat heatmap cells set to 1 (plateau)
    hm_windows: torch.Tensor | None = None  # flat starts of the Gaussian window rows written
    hm_span: int = 0                        # their length (cells)
    hm_dense: bool = False                  # the whole Gaussian heatmap was written
    lr_cells: torch.Tensor | None = None    # flat locref cells written, both channels (plateau)
    mask_runs: torch.Tensor | None = None   # flat starts of the mask's disk-window rows (Gaussian;
    mask_span: int = 0                      # channel 2c, 2c+1 is + H*W) and their length
    lr_row: torch.Tensor | None = None      # (B, G, 2, 1, W) float32: [x locref row, 0]
    lr_col: torch.Tensor | None = None      # (B, G, 2, H, 1) float32: [0, y locref column]
    # the compiled CPU kernel's state (kernels_dlc_cpu): NumPy views of the four outputs, the
    # weight values (B, C) float32, the rectangles written (B, G, M, 4) int64 and the live
    # Gaussian locref maps (B, G) uint8
    arrays: tuple | None = None
    wmap_np: np.ndarray | None = None
    hm_rects: np.ndarray | None = None
    disk_rects: np.ndarray | None = None
    lr_live: np.ndarray | None = None


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
            most recent shapes), rewriting only what changed: the Gaussian locref, the
            weight maps whose value changed, the previous and new Gaussian windows and
            disk cells. It saves the page
            faults of ~184 MB of new memory per call at 2 x 37 @ 241x321 (DeepLabCut's
            generator allocates them anew each call). Safe in DeepLabCut's training step,
            which uses the targets only until ``backward()`` (and autograd refuses a
            backward through targets rewritten in between); keep a ``.clone()`` if you
            keep targets across calls. ``False``: new tensors every call.
        max_kept: output shapes kept with ``reuse_buffers`` (training + evaluation: 2).
        kernel: ``"auto"``: on CPU tensors, the compiled kernel
            (``posefeed.targets.kernels_dlc_cpu``: one call writes every output) when numba
            imports, else the torch version; ``"numba"``: the kernel (ImportError without
            numba); ``"numpy"``: the torch version (the array version; CUDA always runs it).
    """

    def __init__(self, num_heatmaps: int, pos_dist_thresh: float, mode: str = "gaussian",
                 heatmap_mode: Any = "keypoint", gradient_masking: bool = False,
                 background_weight: float = 0.1, generate_locref: bool = True,
                 locref_std: float = 7.2801, label_keypoint_key: str = "keypoints",
                 reuse_buffers: bool = True, max_kept: int = 2, kernel: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'gaussian' or 'plateau'; got {mode!r}")
        if int(num_heatmaps) < 1:
            raise ValueError(f"num_heatmaps must be >= 1; got {num_heatmaps!r}")
        if not (math.isfinite(float(pos_dist_thresh)) and float(pos_dist_thresh) > 0):
            raise ValueError(f"pos_dist_thresh must be a finite number > 0 (input px); "
                             f"got {pos_dist_thresh!r}")
        self.num_heatmaps = int(num_heatmaps)
        self.mode = mode
        self.dist_thresh = float(pos_dist_thresh)
        self.dist_thresh_sq = self.dist_thresh ** 2
        self.std = 2 * self.dist_thresh / 3
        self.gauss_radius = self.std * math.sqrt(2 * math.log(1 / GAUSS_EPS))  # px
        self.heatmap_mode = heatmap_mode_name(heatmap_mode)
        self.gradient_masking = bool(gradient_masking)
        self.background_weight = float(background_weight)
        self.generate_locref = bool(generate_locref)
        self.locref_std = float(locref_std)
        self.locref_scale = 1.0 / self.locref_std
        self.label_keypoint_key = label_keypoint_key
        self.reuse_buffers = bool(reuse_buffers)
        self.max_kept = max(int(max_kept), 1)
        self.kernel = kernel
        self._compiled = use_kernel(kernel)
        # stand-ins for the locref arrays when generate_locref is off (the kernel's types)
        self._no_locref = (np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, 1, 1, 1), np.int64))
        self._kept: dict[tuple, _Outputs] = {}
        self._geoms: dict[tuple, _Geometry] = {}

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
            if out["locref"]["target"].device != dev:
                out["locref"] = {k: v.to(dev) for k, v in out["locref"].items()}
        return out

    # ------------------------------------------------------------------ the targets
    def _groups(self, keypoints: Any, individual_ids: Any, batch_size: int | None,
                device: torch.device) -> torch.Tensor:
        """``(B, G, M, 3)`` float64: heatmap groups ``G`` and their members ``M``."""
        kp = torch.as_tensor(keypoints).to(device=device, dtype=torch.float64)
        kp = kp.reshape(_members_shape(tuple(kp.shape), batch_size))[..., XYV]
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
        if n == 0:  # no individuals: no slots (all maps empty, as DeepLabCut's)
            return kp
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
        if self._compiled and device.type == "cpu":
            return self._encode_compiled(keypoints, stride, size, individual_ids, batch_size)
        g_kp = self._groups(keypoints, individual_ids, batch_size, device).contiguous()
        b, g, m, _ = g_kp.shape
        c = self.num_heatmaps
        h, w, stride, geo = self._checked_geometry(g, size, stride, device)
        x, y, v = g_kp.unbind(-1)  # (B, G, M) float64
        pos = g_kp[..., :2]  # (B, G, M, 2) (x, y)
        pos_c = torch.nan_to_num(pos)  # for window arithmetic only (NaN is never inside)
        vis = v > 0
        buf, fresh = self._outputs(b, g, h, w, device)
        gaussian = self.mode == "gaussian"
        if fresh and gaussian and g < c and self.generate_locref:  # maps >= G never drawn
            buf.locref.view(b, c, 2, h, w)[:, g:].zero_()

        # weights: one value per map, set by the last member that sets one
        wmap = self._weight_values(v, b, g)
        if fresh:
            buf.weights.copy_(wmap[:, :, None, None].expand(b, c, h, w))
        elif not torch.equal(wmap, buf.wmap):  # only the maps whose weight changed
            bi, ci = torch.nonzero(wmap != buf.wmap, as_tuple=True)
            buf.weights[bi, ci] = wmap[bi, ci][:, None, None]
        buf.wmap = wmap
        hw = h * w

        if gaussian:
            self._gaussian(buf, pos, pos_c, vis, geo, stride)
            if self.generate_locref:
                self._gaussian_mask(buf, pos, pos_c, vis, geo, stride)
        else:  # plateau: heatmap, mask and locref on the cells inside the disks
            disks = self._disks(pos, pos_c, vis, geo, stride, buf.base) if m else []
            flat = buf.heatmap.view(-1)
            if buf.hm_cells is not None:
                flat[buf.hm_cells] = 0.0
            for d in disks:
                flat[d.hm_cells] = 1.0
            buf.hm_cells = torch.cat([d.hm_cells for d in disks]) if disks else None
            if self.generate_locref:
                mflat, lflat = buf.mask.view(-1), buf.locref.view(-1)
                if buf.lr_cells is not None:
                    mflat[buf.lr_cells] = 0
                    lflat[buf.lr_cells] = 0.0
                buf.lr_cells = None
                if disks:
                    one = torch.cat([d.lr_cells for d in disks])
                    buf.lr_cells = torch.cat((one, one + hw))
                    mflat[buf.lr_cells] = 1
                for d in disks:  # member order: later members overwrite
                    lflat[d.lr_cells] = d.lx
                    lflat[d.lr_cells + hw] = d.ly
        out = {"heatmap": {"target": buf.heatmap, "weights": buf.weights}}
        if not self.generate_locref:
            return out
        out["locref"] = {"target": buf.locref, "weights": buf.mask}
        if not gaussian:
            return out

        self._gaussian_locref(buf, x, y, vis, geo)
        return out

    # ------------------------------------------------------------------ compiled CPU kernel
    def _groups_np(self, keypoints: Any, individual_ids: Any,
                   batch_size: int | None) -> np.ndarray:
        """``_groups`` in NumPy for the CPU kernel: ``(B, G, M, 3)`` float64, C-contiguous
        (the same checks and errors)."""
        if isinstance(keypoints, torch.Tensor):
            keypoints = keypoints.detach().cpu().numpy()
        kp = np.asarray(keypoints, dtype=np.float64)
        kp = kp.reshape(_members_shape(kp.shape, batch_size))[..., XYV]
        if self.heatmap_mode == "keypoint":
            return np.ascontiguousarray(kp.transpose(0, 2, 1, 3))  # (B, K, N, 3)
        if isinstance(individual_ids, torch.Tensor):
            individual_ids = individual_ids.detach().cpu().numpy()
        ids = np.asarray(individual_ids).astype(np.int64)
        b, n = kp.shape[:2]
        if ids.shape != (b, n):
            raise ValueError(f"individual_ids must be (B, N) = {(b, n)}; got {tuple(ids.shape)}")
        if (ids >= n).any():
            raise ValueError(f"individual_ids must be < N = {n} (DeepLabCut indexes its "
                             f"(B, N) rows with them); got max {int(ids.max())}")
        # row n of sample b goes to slot ids[b, n] (if >= 0), later rows overwriting earlier
        # ones (DLC's loop); empty slots are all -1
        if n == 0:
            return np.ascontiguousarray(kp)
        rows = np.arange(n)
        src = np.where(ids[:, :, None] == rows[None, None, :], rows[None, :, None], -1).max(axis=1)
        picked = kp[np.arange(b)[:, None], src.clip(min=0)]
        return np.ascontiguousarray(np.where((src >= 0)[:, :, None, None], picked, -1.0))

    def _checked_geometry(self, g: int, size: tuple[int, int], stride: float,
                          device: torch.device) -> tuple[int, int, float, Any]:
        """``(H, W, stride, geometry)`` for ``g`` heatmap groups on a ``size`` map; a clear
        error when the groups outnumber ``num_heatmaps``."""
        if g > self.num_heatmaps:
            what = "keypoints" if self.heatmap_mode == "keypoint" else "individuals"
            raise ValueError(f"{g} heatmap groups ({what}) but num_heatmaps = {self.num_heatmaps}")
        h, w, stride = int(size[0]), int(size[1]), float(stride)
        return h, w, stride, self._geometry(h, w, stride, device)

    def _encode_compiled(self, keypoints: Any, stride: float, size: tuple[int, int],
                         individual_ids: Any, batch_size: int | None
                         ) -> dict[str, dict[str, torch.Tensor]]:
        """``encode`` on the CPU by one call of the compiled kernel
        (``kernels_dlc_cpu.dlc_heatmap_targets``), writing into the output tensors' memory."""
        device = torch.device("cpu")
        g_kp = self._groups_np(keypoints, individual_ids, batch_size)
        b, g, m, _ = g_kp.shape
        c = self.num_heatmaps
        h, w, stride, geo = self._checked_geometry(g, size, stride, device)
        if geo.gx_np is None:
            geo.gx_np, geo.gy_np = geo.gx.numpy(), geo.gy.numpy()
        buf, fresh = self._outputs(b, g, h, w, device)
        gaussian = self.mode == "gaussian"
        if buf.arrays is None:  # new buffers: their NumPy views and the kernel's state
            if fresh and gaussian and g < c and self.generate_locref:  # maps >= G never drawn
                buf.locref.view(b, c, 2, h, w)[:, g:].zero_()
            lr, mk = ((buf.locref.numpy(), buf.mask.numpy()) if self.generate_locref
                      else self._no_locref)
            buf.arrays = (buf.heatmap.numpy(), buf.weights.numpy(), lr, mk)
            buf.wmap_np = np.ones((b, c), np.float32)
            buf.lr_live = np.zeros((b, g), np.uint8)
            buf.hm_rects = buf.disk_rects = np.full((0, 0, 0, 4), -1, np.int64)
        prev_hm, prev_disk = buf.hm_rects, buf.disk_rects
        if prev_hm.shape[:3] == (b, g, m):
            new_hm, new_disk = prev_hm, prev_disk  # the kernel clears before it draws
        else:
            new_hm, new_disk = np.empty((b, g, m, 4), np.int64), np.empty((b, g, m, 4), np.int64)
        hm, wt, lr, mk = buf.arrays
        kernels_dlc_cpu.dlc_heatmap_targets(
            g_kp, geo.gx_np, geo.gy_np, hm, wt, buf.wmap_np, lr, mk,
            prev_hm, prev_disk, new_hm, new_disk, buf.lr_live,
            gaussian, self.gradient_masking, self.background_weight, self.generate_locref,
            self.dist_thresh, self.gauss_radius, self.std, self.locref_scale, stride,
            geo.gauss.rows, geo.gauss.cols, geo.disk.rows, geo.disk.cols, fresh)
        buf.hm_rects, buf.disk_rects = new_hm, new_disk
        out = {"heatmap": {"target": buf.heatmap, "weights": buf.weights}}
        if self.generate_locref:
            out["locref"] = {"target": buf.locref, "weights": buf.mask}
        return out

    def _gaussian_locref(self, buf: "_Outputs", x: torch.Tensor, y: torch.Tensor,
                         vis: torch.Tensor, geo: "_Geometry") -> None:
        """The Gaussian locref ``buf.locref[:, :2G]``: the last drawn member of each map
        writes the whole map of both channels, ``(x - gx, y - gy) / locref_std`` (0 where
        none is drawn)."""
        b, g, m = vis.shape
        h, w = geo.gy.numel(), geo.gx.numel()
        device = vis.device
        scale = self.locref_scale
        lg = buf.locref.view(b, self.num_heatmaps, 2, h, w)[:, :g]
        if not m:
            lg.zero_()
            return
        if m == 1:
            xl, yl, has = x[..., 0], y[..., 0], vis[..., 0]  # (B, G)
        else:
            last = torch.where(vis, torch.arange(m, device=device), -1).amax(dim=-1)
            has = last >= 0
            sel = last.clamp(min=0)[..., None]
            xl = torch.take_along_dim(x, sel, dim=-1)[..., 0]
            yl = torch.take_along_dim(y, sel, dim=-1)[..., 0]
        # channel 0 varies along W only, channel 1 along H only: one broadcast add of a
        # row [lx, 0] (B, G, 2, 1, W) and a column [0, ly] (B, G, 2, H, 1) writes both
        # (v + 0 == v exactly; torch streams it ~10x faster than two broadcast copies).
        # The zero halves are written once (kept with the buffers).
        row, col = buf.lr_row, buf.lr_col
        if row is None:
            row = torch.zeros((b, g, 2, 1, w), dtype=torch.float32, device=device)
            col = torch.zeros((b, g, 2, h, 1), dtype=torch.float32, device=device)
            if self.reuse_buffers:
                buf.lr_row, buf.lr_col = row, col
        row[:, :, 0, 0] = torch.where(has[..., None], (xl[..., None] - geo.gx) * scale, 0.0)
        col[:, :, 1, :, 0] = torch.where(has[..., None], (yl[..., None] - geo.gy) * scale, 0.0)
        torch.add(row, col, out=lg)

    def _weight_values(self, v: torch.Tensor, b: int, g: int) -> torch.Tensor:
        """``(B, C)`` float32: each weight map's value. A member with ``v == -1`` sets 0,
        with ``v == 0`` (``gradient_masking``) ``background_weight``; the last member that
        sets one wins; 1 where none does (maps >= G too)."""
        m = v.shape[-1]
        wmap = torch.ones((b, self.num_heatmaps), dtype=torch.float32, device=v.device)
        if m == 0:
            return wmap
        one = torch.ones((), dtype=torch.float64, device=v.device)
        if m == 1:  # the member sets it or leaves 1
            val = torch.where(v[..., 0] == -1, 0.0, one)
            if self.gradient_masking:
                val = torch.where(v[..., 0] == 0, self.background_weight, val)
            wmap[:, :g] = val
            return wmap
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=v.device)
        setw = torch.where(v == -1, 0.0, nan)
        if self.gradient_masking:
            setw = torch.where(v == 0, self.background_weight, setw)
        last_w = torch.where(~torch.isnan(setw), torch.arange(m, device=v.device), -1).amax(dim=-1)
        wsel = torch.take_along_dim(setw, last_w.clamp(min=0)[..., None], dim=-1)[..., 0]
        wmap[:, :g] = torch.where(last_w >= 0, wsel, one)
        return wmap

    def _offsets(self, pos: torch.Tensor, starts: torch.Tensor, win: "_Window",
                 geo: "_Geometry") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Grid centre minus coordinate over each window, float64: ``dx (B, G, M, cols)``,
        ``dy (B, G, M, rows)`` and, for a square window, both stacked ``(B, G, M, 2, n)``
        (computed in one go; dx and dy are its views)."""
        if win.rows == win.cols:
            d = geo.gxy[(starts + geo.axis_off)[..., None] + win.ar_cols] - pos[..., None]
            return d[..., 0, :], d[..., 1, :], d
        dx = geo.gx[starts[..., 0, None] + win.ar_cols] - pos[..., 0, None]
        dy = geo.gy[starts[..., 1, None] + win.ar_rows] - pos[..., 1, None]
        return dx, dy, None

    def _gaussian(self, buf: "_Outputs", pos: torch.Tensor, pos_c: torch.Tensor,
                  vis: torch.Tensor, geo: "_Geometry", stride: float) -> None:
        """Write the Gaussian heatmaps ``max_members exp(-d^2 / (2 sigma^2))`` into
        ``buf.heatmap[:, :G]`` (maps >= G stay 0): each drawn member's value is the outer
        product of its per-axis exponentials (float32; DeepLabCut's one float64 ``exp``
        per cell agrees to a few float32 ulps), written only in its window of radius
        ``gauss_radius`` (see ``GAUSS_EPS`` for the bound) into a map that is 0 elsewhere:
        kept buffers zero the previous call's windows first. A visible member with a NaN
        coordinate makes DeepLabCut's whole map NaN: then the maps are computed whole, as
        DeepLabCut does."""
        hm = buf.heatmap
        b, g, m = vis.shape
        flat = hm.view(-1)
        if buf.hm_dense:
            hm.zero_()
        elif buf.hm_windows is not None:
            fill_runs(flat, buf.hm_windows, buf.hm_span, 0.0)
        buf.hm_windows, buf.hm_dense = None, False
        if m == 0:
            return
        k2 = -1.0 / (2 * self.std ** 2)
        if bool(torch.isnan(pos).any(dim=-1).logical_and_(vis).any()):
            e = [torch.where(vis[..., None], torch.exp((grid - pos[..., i, None]).square_().mul_(k2)),
                             0.0).float() for i, grid in enumerate((geo.gx, geo.gy))]
            hg = hm[:, :g]
            torch.mul(e[1][:, :, 0, :, None], e[0][:, :, 0, None, :], out=hg)
            for j in range(1, m):
                torch.maximum(hg, e[1][:, :, j, :, None] * e[0][:, :, j, None, :], out=hg)
            buf.hm_dense = True
            return
        win = geo.gauss
        starts = window_starts(pos_c, self.gauss_radius, stride, win.upper)  # (B, G, M, 2)
        dx, dy, d = self._offsets(pos, starts, win, geo)
        vis_ = vis[..., None]
        if d is not None:
            e = torch.where(vis_[..., None], torch.exp(d.square_().mul_(k2)), 0.0).float()
            ex, ey = e[..., 0, :], e[..., 1, :]  # a member not drawn writes 0
        else:
            ex = torch.where(vis_, torch.exp(dx.square_().mul_(k2)), 0.0).float()
            ey = torch.where(vis_, torch.exp(dy.square_().mul_(k2)), 0.0).float()
        vals = ey[..., :, None] * ex[..., None, :]  # (B, G, M, rows, cols)
        w = geo.gx.numel()
        runs = (buf.base + starts[..., 1] * w + starts[..., 0])[..., None] + win.row_offsets
        self._write_members(flat, runs, vals)
        buf.hm_windows, buf.hm_span = runs.reshape(-1), win.cols

    @staticmethod
    def _write_members(flat: torch.Tensor, runs: torch.Tensor, vals: torch.Tensor,
                       also: int = 0) -> None:
        """Write each member's window ``vals (B, G, M, rows, cols)`` at the flat window-row
        starts ``runs (B, G, M, rows)`` of a zeroed region, max over members (their windows
        overlap within a map; one member's windows are in different maps, so one member
        is written at a time); ``also``: write the same again ``also`` cells further."""
        m, cols = vals.shape[2], vals.shape[-1]
        for j in range(m):
            sj = runs[:, :, j].reshape(-1) if m > 1 else runs.reshape(-1)
            vj = vals[:, :, j].reshape(-1, cols) if m > 1 else vals.reshape(-1, cols)
            if j:
                vj = torch.maximum(read_runs(flat, sj, cols), vj)
            write_runs(flat, sj, vj)
            if also:
                write_runs(flat, sj + also, vj)

    def _gaussian_mask(self, buf: "_Outputs", pos: torch.Tensor, pos_c: torch.Tensor,
                       vis: torch.Tensor, geo: "_Geometry", stride: float) -> None:
        """The Gaussian locref mask (int64, 1 on the union of the disks ``sqrt(d^2)^2 <=
        t^2`` of the drawn members, both channels) written as disk-window rows; kept
        buffers zero the previous call's windows first."""
        mflat = buf.mask.view(-1)
        h, w = geo.gy.numel(), geo.gx.numel()
        hw = h * w
        if buf.mask_runs is not None:
            fill_runs(mflat, buf.mask_runs, buf.mask_span, 0)
            fill_runs(mflat, buf.mask_runs + hw, buf.mask_span, 0)
            buf.mask_runs = None
        if vis.shape[-1] == 0:
            return
        win = geo.disk
        starts = window_starts(pos_c, self.dist_thresh, stride, win.upper)
        inside = self._inside(*self._offsets(pos, starts, win, geo), vis).long()
        runs = (2 * buf.base + starts[..., 1] * w + starts[..., 0])[..., None] + win.row_offsets
        self._write_members(mflat, runs, inside, also=hw)
        buf.mask_runs, buf.mask_span = runs.reshape(-1), win.cols

    def _inside(self, dx: torch.Tensor, dy: torch.Tensor, d: torch.Tensor | None,
                vis: torch.Tensor) -> torch.Tensor:
        """``(B, G, M, rows, cols)`` bool: the window cell is inside the disk of a drawn
        member: ``d^2 <= t^2`` (plateau) or ``sqrt(d^2)^2 <= t^2`` (Gaussian:
        ``np.linalg.norm(grid - keypoint, axis=2) ** 2``), float64, as DeepLabCut tests it."""
        if d is not None:
            sq = d * d
            dx2, dy2 = sq[..., 0, :], sq[..., 1, :]
        else:
            dx2, dy2 = dx * dx, dy * dy
        d2 = dy2[..., :, None] + dx2[..., None, :]
        if self.mode == "gaussian":
            d2 = torch.sqrt(d2).square_()
        return (d2 <= self.dist_thresh_sq).logical_and_(vis[..., None, None])

    def _geometry(self, h: int, w: int, stride: float, device: torch.device) -> "_Geometry":
        """The cached ``_Geometry`` of an ``(H, W)`` map at ``stride`` on ``device``."""
        key = (h, w, stride, str(device))
        geo = self._geoms.get(key)
        if geo is None:
            gx, gy = dlc_grid(w, stride, device), dlc_grid(h, stride, device)
            geo = _Geometry(gx=gx, gy=gy, gxy=torch.cat((gx, gy)),
                            axis_off=torch.tensor([0, w], device=device),
                            gauss=_Window.build(self.gauss_radius, stride, h, w, device),
                            disk=_Window.build(self.dist_thresh, stride, h, w, device))
            if len(self._geoms) >= 8:
                self._geoms.pop(next(iter(self._geoms)))
            self._geoms[key] = geo
        return geo

    def _outputs(self, b: int, g: int, h: int, w: int, device: torch.device) -> tuple["_Outputs", bool]:
        """The output tensors for one call: kept ones of this shape (``reuse_buffers``), or
        new ones. ``fresh``: new, with every map at its initial value (weights to be
        written whole, heatmaps, locref masks and plateau locrefs zero)."""
        key = (b, g, h, w, str(device))
        if self.reuse_buffers and key in self._kept:
            self._kept[key] = self._kept.pop(key)  # most recently used last
            return self._kept[key], False
        c = self.num_heatmaps
        gaussian = self.mode == "gaussian"
        base = ((torch.arange(b, device=device)[:, None] * c
                 + torch.arange(g, device=device)) * (h * w))[..., None]
        buf = _Outputs(
            heatmap=torch.zeros((b, c, h, w), dtype=torch.float32, device=device),
            weights=torch.empty((b, c, h, w), dtype=torch.float32, device=device),
            wmap=torch.ones((b, c), dtype=torch.float32, device=device), base=base)
        if self.generate_locref:  # the Gaussian locref is written whole (maps < G)
            buf.locref = (torch.empty if gaussian else torch.zeros)(
                (b, 2 * c, h, w), dtype=torch.float32, device=device)
            buf.mask = torch.zeros((b, 2 * c, h, w), dtype=torch.int64, device=device)
        if self.reuse_buffers:
            self._kept[key] = buf
            while len(self._kept) > self.max_kept:
                self._kept.pop(next(iter(self._kept)))
        return buf, True

    def _disks(self, pos: torch.Tensor, pos_c: torch.Tensor, vis: torch.Tensor,
               geo: "_Geometry", stride: float, base: torch.Tensor) -> list["_Disk"]:
        """Plateau mode: per member ``j``, in order (later members overwrite), the cells
        inside the disks of its drawn keypoints (``_inside``) and the locref values there.
        Only the disk window is tested (the disk cannot reach further). ``pos_c``: the
        coordinates without NaN for the window arithmetic; ``base``: (B, G, 1) flat offset
        of heatmap ``(b, g)``."""
        win = geo.disk
        starts = window_starts(pos_c, self.dist_thresh, stride, win.upper)  # (B, G, M, 2)
        dx, dy, d = self._offsets(pos, starts, win, geo)
        inside = self._inside(dx, dy, d, vis)  # (B, G, M, rows, cols)
        w = geo.gx.numel()
        cells = (starts[..., 1] * w + starts[..., 0])[..., None, None] + win.cells
        lr_base = (2 * base)[..., None]  # (B, G, 1, 1): locref channel 2g of sample b
        scale = self.locref_scale
        lx = (dx * -scale).float()  # (x - gx) / locref_std (bit-equal), (B, G, M, cols)
        ly = (dy * -scale).float()
        out = []
        for j in range(pos.shape[2]):  # members, in DeepLabCut's order
            ins, cj = inside[:, :, j], cells[:, :, j]
            out.append(_Disk(lr_cells=torch.masked_select(cj + lr_base, ins),
                             hm_cells=torch.masked_select(cj + base[..., None], ins),
                             lx=torch.masked_select(lx[:, :, j, None, :], ins),
                             ly=torch.masked_select(ly[:, :, j, :, None], ins)))
        return out


def _members_shape(shape: tuple[int, ...], batch_size: int | None) -> tuple[int, ...]:
    """The ``(B, N, K, C)`` shape that keypoints of ``shape`` ((B, N, K, C) or single-animal
    (B, K, C), C >= 3: x, y and, last, v: the columns `XYV` DeepLabCut reads) are read as;
    a clear error for any other shape or a batch that differs from the outputs'
    ``batch_size``."""
    if len(shape) == 3:  # single animal: (B, K, 3)
        shape = (shape[0], 1, *shape[1:])
    if len(shape) != 4 or shape[-1] < 3:
        raise ValueError(f"keypoints must be (B, N, K, 3) or (B, K, 3) (x, y, v); "
                         f"got shape {tuple(shape)}")
    if batch_size is not None and shape[0] != batch_size:
        raise ValueError(f"keypoints have batch {shape[0]} but the outputs {batch_size}")
    return shape
