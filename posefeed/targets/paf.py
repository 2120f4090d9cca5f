"""DeepLabCut 3.x part-affinity-field targets (``PartAffinityFieldGenerator``), vectorised:
no Python loop over batch, animal, limb or pixel."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from posefeed.targets._common import (Array, as_keypoints, dlc_cell_centres, size_pair,
                                      split_keypoints)
from posefeed.targets.base import Codec

_BIG = 1.0e7  # px; coordinates and interval ends are clipped here before integer casts


class PartAffinityField(Codec):
    r"""DeepLabCut 3.x ``PartAffinityFieldGenerator`` targets.

    Grid: cell ``(i, j)`` of the ``(W, H)`` map has centre ``gx = int(j*stride + stride/2)``,
    ``gy = int(i*stride + stride/2)`` in input pixels (DLC writes the float into an integer
    ``np.mgrid`` array: truncated, as in :class:`~posefeed.targets.DLCHeatmap`).

    For limb ``l = (p, q)`` of ``graph`` and an animal whose keypoints ``p`` and ``q`` both
    have ``v > 0`` and differ (length ``d > 0``), with the unit vector
    :math:`u = (q - p) / d`:

    * along :math:`a = u_x g_x + u_y g_y` must lie in :math:`[\min(u\cdot p, u\cdot q),
      \max(u\cdot p, u\cdot q)]` (the limb's extent, ends included);
    * across :math:`c = ((g_y u_x - g_x u_y) - (p_y u_x - p_x u_y)) / w` must satisfy
      :math:`|c| \le 1` (``w`` = ``width``, input pixels: the band's half-width);
    * inside, channels ``2l`` and ``2l+1`` are :math:`u_x (1 - |c|)` and
      :math:`u_y (1 - |c|)`; outside every band, 0.

    Overlaps: DLC loops animal by animal, so where the same limb of several animals covers
    a cell the **last** animal (highest index) writes it; different limbs have their own
    channels. Zero-length limbs and limbs with an end at ``v <= 0`` draw nothing; NaN
    coordinates never draw.

    Arithmetic follows DLC under NumPy 2 promotion (NEP 50, the NumPy DeepLabCut 3.0.2 runs
    with): ``u``, the limb's extent and :math:`u \cdot p`-style constants are float32
    (``d`` is the float64 square root of a float32 sum of float32 squares), the per-cell
    ``a`` and ``c`` are float64 (integer grid times float32 scalars), the values are
    rounded to float32 once. One difference: DLC squares with the scalar ``vx**2``, which
    NumPy evaluates with the C library's ``powf``; that differs from the correctly rounded
    square (``vx*vx``, used here) by one float32 ulp in about 0.05 % of cases (exact ties),
    which moves ``u`` by at most an ulp (values differ by < 1e-6; a cell centre within
    ~1e-4 px of a limb's end line could fall on the other side).

    Cost (NumPy): only the cells of each band are visited. For every limb the rows its band
    can reach are listed, for each row the band's interval in ``x`` is solved in closed
    form (two slabs) and widened by one cell each side, and only those cells are tested
    with DLC's exact expressions; a ``maximum.at`` picks the last animal per cell. The map
    is zeroed memory plus the band cells (``encode(out=)`` and :meth:`encoder` clear only
    the previous call's cells). CuPy input uses one fused kernel (one thread per cell,
    animals from the last: ``posefeed.targets.kernels_multi``).

    Args:
        graph: limbs as ``(p, q)`` keypoint-index pairs (DLC's ``paf_graph`` / skeleton).
        stride: input pixels per map cell (may be odd or fractional).
        heatmap_size: map ``(W, H)`` in cells.
        width: :math:`w` in input pixels (DLC default 20).
        use_kernel: on CuPy input use the fused CUDA kernel
            (``posefeed.targets.kernels_multi``; ``False``: the vectorised CuPy path).
    """

    name = "paf"

    def __init__(self, graph: Sequence[Sequence[int]], stride: float, heatmap_size: tuple[int, int],
                 width: float = 20.0, use_kernel: bool = True) -> None:
        g = np.asarray([tuple(int(i) for i in e) for e in graph], dtype=np.int64).reshape(-1, 2)
        if g.size and g.min() < 0:
            raise ValueError(f"graph indices must be >= 0; got {graph!r}")
        self.graph = g
        self.num_limbs = int(g.shape[0])
        self.stride = float(stride)
        if self.stride <= 0:
            raise ValueError(f"stride must be positive; got {stride!r}")
        self.heatmap_size = size_pair(heatmap_size, "heatmap_size")
        self.width = float(width)
        if not self.width > 0:
            raise ValueError(f"width must be positive; got {width!r}")
        self.use_kernel = bool(use_kernel)
        self.grid_x, self.grid_y = dlc_cell_centres(self.heatmap_size, self.stride)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("paf",)

    def __repr__(self) -> str:
        return (f"PartAffinityField(num_limbs={self.num_limbs}, stride={self.stride}, "
                f"heatmap_size={self.heatmap_size}, width={self.width})")

    def output_shapes(self, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
        w, h = self.heatmap_size
        return {"paf": (int(batch_size), 2 * self.num_limbs, h, w)}

    # ------------------------------------------------------------------ encode
    def encode(self, keypoints: Array, out: Mapping[str, Array] | None = None) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` in input pixels -> ``paf (B, 2L, H, W)`` float32 (same
        array module), channels ``(x, y)`` per limb in ``graph`` order.

        ``out``: ``{"paf": array}`` to write into (every element is written)."""
        return self._encode(keypoints, out, None)

    def _encode_reusing(self, keypoints: Array, out: dict[str, Array], memo: dict) -> dict[str, Array]:
        return self._encode(keypoints, out, memo)

    def _encode(self, keypoints: Array, out: Mapping[str, Array] | None, memo: dict | None) -> dict[str, Array]:
        xp, kp = as_keypoints(keypoints)
        b, n, k = kp.shape[:3]
        if self.num_limbs and int(self.graph.max()) >= k:
            raise ValueError(f"graph uses keypoint {int(self.graph.max())} but keypoints have K = {k}")
        prev = None
        if memo is not None:
            prev = memo.get("cells")
            memo.clear()  # stays empty if anything below raises: the next call rewrites all
        if self.use_kernel and xp.__name__ == "cupy":
            from posefeed.targets import kernels_multi  # noqa: PLC0415 - CuPy path only

            dst = None if out is None else self._check_out(xp, out, b, k)["paf"]
            return {"paf": kernels_multi.paf_targets(self, kp, out=dst)}  # writes every element
        shape = self.output_shapes(b, k)["paf"]
        if out is None:
            paf = xp.zeros(shape, dtype=xp.float32)
        else:
            paf = self._check_out(xp, out, b, k)["paf"]
            flat = paf.reshape(-1)
            if prev is None:
                paf.fill(0.0)
            elif prev.size:
                flat[prev] = 0.0
                flat[prev + shape[2] * shape[3]] = 0.0
        idx, vx, vy = self.cells(kp)
        flat = paf.reshape(-1)
        flat[idx] = vx
        flat[idx + shape[2] * shape[3]] = vy
        if memo is not None:
            memo["cells"] = idx
        return {"paf": paf}

    def limbs(self, keypoints: Array) -> dict[str, Array]:
        """Per-limb constants, each ``(B, N, L)``: ``ux, uy`` (the float32 unit vector),
        ``lo, hi`` (the limb's extent along ``u``, float32), ``ortho`` (float32
        ``p_y u_x - p_x u_y``), the ends ``x1, y1, x2, y2`` and ``on`` (drawn)."""
        xp, x, y, v = split_keypoints(keypoints)
        g = xp.asarray(self.graph)
        p, q = g[:, 0], g[:, 1]
        x1, y1, x2, y2 = x[..., p], y[..., p], x[..., q], y[..., q]
        vis = (v[..., p] > 0) & (v[..., q] > 0)
        with np.errstate(over="ignore", invalid="ignore"):  # absurd coordinates draw nothing useful
            return self._limbs(xp, x1, y1, x2, y2, vis)

    def _limbs(self, xp: Any, x1: Array, y1: Array, x2: Array, y2: Array, vis: Array) -> dict[str, Array]:
        f32 = xp.float32
        dx = (x2 - x1).astype(f32)
        dy = (y2 - y1).astype(f32)
        d = xp.sqrt((dx * dx + dy * dy).astype(f32).astype(xp.float64))
        on = vis & (d > 0)
        d32 = xp.where(on, d, 1.0).astype(f32)  # np.float32 / float: the float is cast to float32
        ux = (dx / d32).astype(f32)
        uy = (dy / d32).astype(f32)
        a1 = (ux * x1 + uy * y1).astype(f32)
        a2 = (ux * x2 + uy * y2).astype(f32)
        ortho = (y1 * ux - x1 * uy).astype(f32)
        return dict(ux=ux, uy=uy, lo=xp.minimum(a1, a2), hi=xp.maximum(a1, a2), ortho=ortho,
                    x1=x1, y1=y1, x2=x2, y2=y2, on=on)

    def cells(self, keypoints: Array) -> tuple[Array, Array, Array]:
        """The written cells: flat indices into ``paf (B, 2L, H, W)`` of each cell's ``x``
        channel (int64, unique; the ``y`` channel is ``+ H*W``) and the float32 values of
        both channels."""
        xp, kp = as_keypoints(keypoints)
        b, n, _ = kp.shape[:3]
        L = self.num_limbs
        w, h = self.heatmap_size
        s, wd = self.stride, self.width
        f64 = xp.float64
        empty = (xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.float32), xp.zeros(0, dtype=xp.float32))
        if L == 0:
            return empty
        lm = self.limbs(kp)
        e = xp.flatnonzero(lm["on"].reshape(-1))  # drawn limbs, flat (b, n, l), in DLC's order
        if e.size == 0:
            return empty
        ux = lm["ux"].reshape(-1)[e].astype(f64)
        uy = lm["uy"].reshape(-1)[e].astype(f64)
        lo = lm["lo"].reshape(-1)[e].astype(f64)
        hi = lm["hi"].reshape(-1)[e].astype(f64)
        ortho = lm["ortho"].reshape(-1)[e].astype(f64)
        y1 = xp.clip(lm["y1"].reshape(-1)[e].astype(f64), -_BIG, _BIG)
        y2 = xp.clip(lm["y2"].reshape(-1)[e].astype(f64), -_BIG, _BIG)
        gy = xp.asarray(self.grid_y)

        # rows the band can reach: gy in [min(y) - w, max(y) + w]; gy_i lies in
        # (i*s + s/2 - 1, i*s + s/2], one row of margin each side
        r0 = xp.clip(xp.ceil((xp.minimum(y1, y2) - wd - s / 2) / s) - 1, 0, h).astype(xp.int64)
        r1 = xp.clip(xp.floor((xp.maximum(y1, y2) + wd - s / 2 + 1) / s) + 1, -1, h - 1).astype(xp.int64)
        nr = xp.maximum(r1 - r0 + 1, 0)
        pe, row = _expand(xp, r0, nr)  # (limb, row) pairs
        yy = gy[row].astype(f64)
        uxp, uyp = ux[pe], uy[pe]
        # the band's x-interval on this row: lo <= ux x + uy y <= hi and
        # |(y ux - x uy) - ortho| <= w, each an interval in x unless its coefficient is 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ta = (lo[pe] - uyp * yy) / uxp
            tb = (hi[pe] - uyp * yy) / uxp
            c0 = yy * uxp - ortho[pe]
            tc = (c0 - wd) / uyp
            td = (c0 + wd) / uyp
        inf = xp.inf
        xa_lo = xp.where(uxp != 0, xp.minimum(ta, tb), -inf)
        xa_hi = xp.where(uxp != 0, xp.maximum(ta, tb), inf)
        xc_lo = xp.where(uyp != 0, xp.minimum(tc, td), -inf)
        xc_hi = xp.where(uyp != 0, xp.maximum(tc, td), inf)
        xlo = xp.clip(xp.maximum(xa_lo, xc_lo), -2 * s - 2, (w + 2) * s + 2)
        xhi = xp.clip(xp.minimum(xa_hi, xc_hi), -2 * s - 2, (w + 2) * s + 2)
        c_lo = xp.clip(xp.ceil((xlo - s / 2) / s) - 1, 0, w).astype(xp.int64)
        c_hi = xp.clip(xp.floor((xhi - s / 2 + 1) / s) + 1, -1, w - 1).astype(xp.int64)
        nc = xp.maximum(c_hi - c_lo + 1, 0)
        # candidate cells as (chunk, C) blocks: each pair's run of columns cut into chunks of
        # C columns, so the per-pair constants broadcast instead of being gathered per cell
        # C: a power of two near the mean run length (indices split by shifts, not divisions)
        C = 1 << int(min(max(2, math.ceil(math.log2(max(float(nc.mean()), 1.0)))), 5)) if nc.size else 4
        sh = C.bit_length() - 1
        nch = (nc + (C - 1)) >> sh
        cp, ci = _expand(xp, xp.zeros_like(nch), nch)  # (pair, chunk index) of each chunk
        jj = xp.arange(C)
        start = c_lo[cp] + (ci << sh)
        cols = start[:, None] + jj  # (chunks, C)
        valid = jj < (nc[cp] - (ci << sh))[:, None]
        gx = xp.asarray(self.grid_x, dtype=f64)  # DLC's int grid (exact integers)
        xg = gx[xp.minimum(cols, w - 1)]
        uxq, uyq = uxp[cp][:, None], uyp[cp][:, None]
        yq = yy[cp][:, None]
        ee = pe[cp]
        # DLC's tests, term by term (each product of a float32 and an integer is exact;
        # DLC's "* 1.0" is an exact no-op)
        along = uxq * xg + uyq * yq
        across = xp.abs(((yq * uxq - xg * uyq) - ortho[ee][:, None]) / wd)
        inside = valid & (along >= lo[ee][:, None]) & (along <= hi[ee][:, None]) & (across <= 1)
        f = xp.flatnonzero(inside)
        q = f >> sh
        t = 1.0 - across.reshape(-1)[f]
        hw_ = h * w
        le = e[ee]  # flat (b, n, l) of each chunk
        blc = (le // (n * L)) * L + le % L  # its (b, l) map
        ck = (blc * hw_ + row[cp] * w)[q] + cols.reshape(-1)[f]  # (b, l) map and cell
        vx = (uxq[q, 0] * t).astype(xp.float32)
        vy = (uyq[q, 0] * t).astype(xp.float32)
        blk = blc[q]
        if n > 1 and ck.size:
            # the last animal wins: sort (map and cell, entry) keys -- entries are in
            # (b, n, l) order, so the last entry of each (b, l, cell) has the highest n
            m = int(ck.size)
            eb = max(1, (m - 1).bit_length())
            if (b * L * hw_) << eb < 2 ** 62:
                srt = xp.sort((ck << eb) + xp.arange(m))
                sk, order = srt >> eb, srt & ((1 << eb) - 1)
            else:  # pragma: no cover - keys too large to pack
                order = xp.argsort(ck, kind="stable")
                sk = ck[order]
            last = xp.ones(m, dtype=bool)
            last[:-1] = sk[1:] != sk[:-1]
            win = order[last]
            ck, vx, vy, blk = sk[last], vx[win], vy[win], blk[win]
        # channel 2l of sample b: the (b, l) map index times 2
        idx = ck + blk * hw_
        return idx.astype(xp.int64), vx, vy

    # ------------------------------------------------------------------ decode
    def decode(self, *outputs: Any) -> tuple[Any, Any]:
        """Not provided: part-affinity fields are decoded by the model's assembly step
        (DeepLabCut's ``PAFPredictor``), which needs the heatmap peaks as well."""
        raise NotImplementedError("PartAffinityField has no decode: limb assembly belongs to the model's predictor")


def _expand(xp: Any, start: Array, count: Array) -> tuple[Array, Array]:
    """Ragged ranges without a loop: for each ``i`` the values ``start[i] ... start[i] +
    count[i] - 1``; returns ``(owner i, value)`` of every element, in order."""
    count = count.astype(xp.int64)
    total = int(count.sum()) if count.size else 0
    if total == 0:
        z = xp.zeros(0, dtype=xp.int64)
        return z, z
    ends = xp.cumsum(count)
    if xp is np:
        owner = np.repeat(np.arange(count.size, dtype=np.int64), count)
    else:  # CuPy's repeat takes no array of counts
        owner = xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right")
    first = ends - count  # index of each range's first element
    value = xp.arange(total, dtype=xp.int64) - first[owner] + start.astype(xp.int64)[owner]
    return owner, value
