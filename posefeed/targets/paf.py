"""DeepLabCut 3.x part-affinity-field targets (``PartAffinityFieldGenerator``), vectorised:
no Python loop over batch, animal, limb or pixel."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from posefeed.targets._common import Array, as_keypoints, clean_keypoints, dlc_cell_centres, size_pair
from posefeed.targets._numba import use_kernel as _use_cpu_kernel
from posefeed.targets._rows import fill_runs
from posefeed.targets.base import Codec

_BIG = 1.0e7  # px; coordinates and interval ends are clipped here before integer casts
_SLACK = 2.0 ** -40  # relative margin of the closed-form band ends (see PartAffinityField._cell_parts)


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

    Cost (NumPy): only the cells of each band are visited, and (almost) none is tested. For
    every limb the rows its band can reach are listed; on each row the band is one run of
    columns whose ends are solved in closed form, DLC's tests being applied only to cells
    within ~1e-9 px of an end (the exactness argument is in ``_cell_parts``); the values
    are DLC's float64 expressions per cell, rounded to float32 once. Where the same limb
    of several animals reaches one row, the runs are written in order of their overlap
    depth (one scatter per depth, at most N, usually one or two), so the later animal
    wins. The map is zeroed memory plus the band cells (``encode(out=)`` and
    :meth:`encoder` clear only the previous call's runs). CuPy input uses one fused kernel
    (one thread per cell, animals from the last: ``posefeed.targets.kernels_multi``); with
    ``use_kernel=False`` the same array code runs on CuPy (no ``ufunc.accumulate`` /
    ``repeat`` with array counts, which CuPy lacks).

    Compiled CPU kernel (``kernel="auto"`` when numba imports; ``posefeed.targets.
    kernels_multi_cpu.paf_encode``): on NumPy input one call per batch walks DLC's loop
    (batch, animal, limb) over only the rows of each band and, on each, the columns
    between its solved ends (widened), testing every such cell with DLC's float64
    expressions and overwriting in DLC's order; kept buffers clear the previous call's
    columns per band row. Same outputs as the array version (equal), 5-10x faster.

    Args:
        graph: limbs as ``(p, q)`` keypoint-index pairs (DLC's ``paf_graph`` / skeleton).
        stride: input pixels per map cell (may be odd or fractional).
        heatmap_size: map ``(W, H)`` in cells.
        width: :math:`w` in input pixels (DLC default 20).
        use_kernel: on CuPy input use the fused CUDA kernel
            (``posefeed.targets.kernels_multi``; ``False``: the vectorised CuPy path).
        kernel: on NumPy input, ``"auto"`` (the compiled kernel when numba imports),
            ``"numba"`` (required) or ``"numpy"`` (the vectorised array version).
    """

    name = "paf"

    def __init__(self, graph: Sequence[Sequence[int]], stride: float, heatmap_size: tuple[int, int],
                 width: float = 20.0, use_kernel: bool = True, kernel: str = "auto") -> None:
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
        self.kernel = kernel
        self._cpu_kernel = _use_cpu_kernel(kernel)
        self.grid_x, self.grid_y = dlc_cell_centres(self.heatmap_size, self.stride)
        self._gxf, self._gyf = self.grid_x.astype(np.float64), self.grid_y.astype(np.float64)
        # _first[X]: the first column with gx >= X, X = 0 .. max gx + 1 (gx >= 0, integers)
        self._first = np.searchsorted(self.grid_x, np.arange(int(self.grid_x[-1]) + 2), side="left")

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
        prev = prev_ext = None
        if memo is not None:
            prev, prev_ext = memo.get("cells"), memo.get("ext")
            memo.clear()  # stays empty if anything below raises: the next call rewrites all
        if self.use_kernel and xp.__name__ == "cupy":
            from posefeed.targets import kernels_multi  # noqa: PLC0415 - CuPy path only

            dst = None if out is None else self._check_out(xp, out, b, k)["paf"]
            return {"paf": kernels_multi.paf_targets(self, kp, out=dst)}  # writes every element
        if self._cpu_kernel and xp is np:
            return self._encode_compiled(kp, out, memo, prev_ext)
        shape = self.output_shapes(b, k)["paf"]
        hw_ = shape[2] * shape[3]
        if out is None:
            paf = xp.zeros(shape, dtype=xp.float32)
        else:
            paf = self._check_out(xp, out, b, k)["paf"]
            if prev is None:
                paf.fill(0.0)
            else:  # only the previous call's cells are non-zero
                flat = paf.reshape(-1)
                starts, width = prev
                fill_runs(xp, flat, starts, width, 0.0)
                fill_runs(xp, flat[hw_:], starts, width, 0.0)
        parts = self._cell_parts(xp, kp, runs := [])
        flat = paf.reshape(-1)
        for idx, vx, vy in parts:  # disjoint sets of cells
            flat[idx] = vx
            flat[hw_:][idx] = vy  # channel 2l + 1: the same cell one map further
        if memo is not None:
            memo["cells"] = _chunks(xp, *runs[0], int(paf.size) - hw_) if runs else (xp.zeros(0, dtype=xp.int64), 1)
        return {"paf": paf}

    def _encode_compiled(self, kp: np.ndarray, out: Mapping[str, Array] | None, memo: dict | None,
                         ext: np.ndarray | None) -> dict[str, Array]:
        """The compiled kernel's encode. ``ext``: the previous call's written columns per band
        row (``memo["ext"]``, None: ``out``'s contents unknown); this call's are stored in
        ``memo`` (already emptied) for the next."""
        from posefeed.targets import kernels_multi_cpu  # noqa: PLC0415 - numba compiles on first use

        b, _, k = kp.shape[:3]
        h = self.heatmap_size[1]
        if out is None:
            paf, clear = np.zeros(self.output_shapes(b, k)["paf"], dtype=np.float32), False
        else:
            paf = self._check_out(np, out, b, k)["paf"]
            clear = ext is not None and ext.shape == (b, self.num_limbs, h, 2)
            if not clear:
                paf.fill(0.0)
        if not clear:
            ext = np.empty((b, self.num_limbs, h, 2), dtype=np.int32)
        kernels_multi_cpu.paf_encode_nb(np.ascontiguousarray(kp), self.graph, self._gxf, self._gyf, self.stride,
                                        self.width, paf, ext, clear)
        if memo is not None:
            memo["ext"] = ext
        return {"paf": paf}

    def limbs(self, keypoints: Array) -> dict[str, Array]:
        """Per-limb constants, each ``(B, N, L)``: ``ux, uy`` (the float32 unit vector),
        ``lo, hi`` (the limb's extent along ``u``, float32), ``ortho`` (float32
        ``p_y u_x - p_x u_y``), the ends ``x1, y1, x2, y2`` and ``on`` (drawn)."""
        xp, kp = as_keypoints(keypoints)
        return self._limbs_of(xp, kp)

    def _limbs_of(self, xp: Any, kp: Array) -> dict[str, Array]:
        """:meth:`limbs` of keypoints `as_keypoints` already validated."""
        x, y, v = clean_keypoints(xp, kp)
        g = self.graph if xp is np else xp.asarray(self.graph)
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
        parts = self._cell_parts(xp, kp)
        if len(parts) == 1:
            return parts[0]
        return _last_wins(xp, *(xp.concatenate([p[i] for p in parts]) for i in range(3)))

    def _grids(self, xp: Any) -> tuple[Array, Array]:
        """DLC's grid ``(gx (W,), gy (H,))`` as float64 (exact integers) in ``xp``."""
        if xp is np:
            return self._gxf, self._gyf
        return xp.asarray(self._gxf), xp.asarray(self._gyf)

    def _first_col(self, xp: Any, v: Array) -> Array:
        """The first column whose (integer) gx is >= the integer-valued float ``v`` (``W``
        if none): a table lookup (``np.searchsorted`` on the grid, done once)."""
        t = self._first if xp is np else xp.asarray(self._first)
        return t[xp.clip(v, 0, t.size - 1).astype(xp.int64)]

    def _cell_parts(self, xp: Any, kp: Array, runs: list | None = None) -> list[tuple[Array, Array, Array]]:
        """The cells to write, as parts ``(idx, vx, vy)`` (see :meth:`cells`) to be scattered
        in order: no index repeats within a part; a later part's value wins (DLC's later
        animal). One part per overlap depth (how many animals' same limb cover one row:
        usually one or two parts). ``runs``: if given, ``(first cell, count)`` of every run of
        written cells is appended (what the next call with kept buffers clears)."""
        b, n, _ = kp.shape[:3]
        L = self.num_limbs
        w, h = self.heatmap_size
        s, wd = self.stride, self.width
        f64 = xp.float64
        empty = [(xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.float32), xp.zeros(0, dtype=xp.float32))]
        if L == 0:
            return empty
        lm = self._limbs_of(xp, kp)
        e = xp.flatnonzero(lm["on"].reshape(-1))  # drawn limbs, flat (b, n, l), in DLC's order
        if e.size == 0:
            return empty
        cst = xp.stack([lm[k_] for k_ in ("ux", "uy", "lo", "hi", "ortho", "y1", "y2")]).reshape(7, -1)
        ux, uy, lo, hi, ortho, y1, y2 = xp.take(cst, e, axis=1).astype(f64)  # exact: float32 values
        gxf, gyf = self._grids(xp)
        gmax = float(max(self.grid_x[-1], self.grid_y[-1]))
        # rows the band can reach: a band point is an end + a*u + c*(-uy, ux) with |c| <= w,
        # so gy lies in [min(y) - w|ux|, max(y) + w|ux|] (+ 1e-6 px for DLC's rounding);
        # gy_i lies in (i*s + s/2 - 1, i*s + s/2], one row of margin each side
        reach = wd * xp.abs(ux) + 1e-6
        ya = xp.clip(xp.minimum(y1, y2) - reach, -_BIG, _BIG)
        yb = xp.clip(xp.maximum(y1, y2) + reach, -_BIG, _BIG)
        r0 = xp.clip(xp.ceil((ya - s / 2) / s) - 1, 0, h).astype(xp.int64)
        r1 = xp.clip(xp.floor((yb + (1 - s / 2)) / s) + 1, -1, h - 1).astype(xp.int64)
        nr = xp.maximum(r1 - r0 + 1, 0)
        pe, row = _expand(xp, r0, nr)  # (limb, row) pairs, limb-major
        if pe.size == 0:
            return empty
        # Each row of a band is one run of columns, solved in closed form; only the cells
        # within `delta` of the run's ends are tested. Why that is exact: on a row, DLC's
        # tests at a cell are monotone in its gx. "along" is one rounding of ux*gx + uy*gy
        # (both products exact in float64: a float32 times an integer), "across" roundings
        # of (gy*ux - gx*uy) - ortho and of / w; rounding is monotone, so each test holds on
        # an interval of gx and so does their conjunction. The ends, solved here in float64
        # (gx = (lo - uy*gy) * (1/ux), ...), lie within ~5 eps * S / |u| of the real ends
        # (eps = 2^-53, S = 1 + max grid value + w + |lo| + |hi| + |ortho| bounds the
        # magnitudes), and DLC's rounded tests agree with the real ones except within
        # ~2 eps * S / |u| of them. So with delta = 2^-40 * S / |u| (> 1000x both together)
        # a gx more than delta inside both ends passes DLC's tests, one more than delta
        # outside fails them, and only a gx within delta of an end is tested with DLC's
        # expressions: none, unless an end falls within ~1e-9 px of a grid value (integer
        # keypoints on an axis-aligned limb, a keypoint on the map's edge). A component with
        # |u| < 2^-100 (zero: an axis-aligned limb) is taken as +2^-100: its ends then lie
        # beyond the map on the side DLC's test puts them (the sign of lo - uy*gy etc. is
        # exact), or within delta (> 2^60 px) of 0, where every column is tested.
        tiny = 2.0 ** -100
        uxe = xp.where(xp.abs(ux) < tiny, tiny, ux)
        uye = xp.where(xp.abs(uy) < tiny, tiny, uy)
        S = (1.0 + gmax + wd) + xp.abs(lo) + xp.abs(hi) + xp.abs(ortho)
        pos_x, pos_y = uxe > 0, uye > 0
        wds = xp.where(pos_y, wd, -wd)
        per_limb = xp.stack([
            ux, uy, ortho, lo, hi,
            xp.where(pos_x, lo, hi), xp.where(pos_x, hi, lo), 1.0 / uxe, 1.0 / uye,
            S * _SLACK / xp.abs(uxe), S * _SLACK / xp.abs(uye), wds])
        pair = np.repeat(per_limb, nr, axis=1) if xp is np else xp.take(per_limb, pe, axis=1)
        (uxp, uyp, orp, lop, hip, a0, a1, iax, iay, da, dc, wdp) = pair
        gy = gyf[row]
        uyy = uyp * gy  # exact
        yux = gy * uxp  # exact
        c0 = yux - orp
        # ends of the along and the across tests on the row (gx), then -+ delta
        xa0, xa1 = (a0 - uyy) * iax, (a1 - uyy) * iax
        xc0, xc1 = (c0 - wdp) * iay, (c0 + wdp) * iay
        # (finite: |1/u| <= 2^100) first gx >= lower end - delta, >= upper end - delta, then
        # first gx > lower end + delta, > upper end + delta
        lim = xp.stack([xp.ceil(xp.maximum(xa0 - da, xc0 - dc)), xp.ceil(xp.minimum(xa1 - da, xc1 - dc)),
                        xp.floor(xp.maximum(xa0 + da, xc0 + dc)) + 1, xp.floor(xp.minimum(xa1 + da, xc1 + dc)) + 1])
        ja, jc, jb, jd = self._first_col(xp, lim)
        s1 = xp.maximum(jc, jb)
        # runs of columns (pair, first column, count): the sure [jb, s1), then the tested
        # cells of [ja, jb) and [s1, jd) that pass DLC's tests
        rp = xp.arange(pe.size, dtype=xp.int64)
        rs, rn = jb, s1 - jb
        nt1, nt2 = xp.maximum(jb - ja, 0), xp.maximum(jd - s1, 0)
        if int(nt1.sum() + nt2.sum()):
            tq, tcol = _expand(xp, xp.concatenate([ja, s1]), xp.concatenate([nt1, nt2]))
            tq = tq % pe.size
            xg = gxf[tcol]
            along = uxp[tq] * xg + uyy[tq]
            across = xp.abs(((yux[tq] - xg * uyp[tq]) - orp[tq]) / wd)
            keep = xp.flatnonzero((along >= lop[tq]) & (along <= hip[tq]) & (across <= 1))
            rp = xp.concatenate([rp, tq[keep]])
            rs = xp.concatenate([rs, tcol[keep]])
            rn = xp.concatenate([rn, xp.ones(keep.size, dtype=xp.int64)])
        le = e[pe]  # flat (b, n, l) of each pair
        bl = (le // (n * L)) * L + le % L  # its (b, l)
        key = bl * h + row  # its map row
        base = key * (2 * w) - row * w  # flat index of (b, channel 2l, row, column 0)
        depth = 1
        if n > 1:
            # overlap depth: the rank of each pair among the pairs of its map row (the same
            # limb of the animals before it reaching that row). Pairs are limb-major in
            # DLC's (b, n, l) order, so a stable sort by map row ranks them by animal.
            m = int(pe.size)
            eb = max(1, (m - 1).bit_length())
            srt = xp.sort((key << eb) + rp[:m])
            ks, order = srt >> eb, srt & ((1 << eb) - 1)
            first = xp.ones(m, dtype=bool)
            first[1:] = ks[1:] != ks[:-1]
            start = xp.flatnonzero(first)
            gid = xp.cumsum(first) - 1
            rank = xp.empty(m, dtype=xp.int64)
            rank[order] = xp.arange(m, dtype=xp.int64) - start[gid]
            depth = int(rank.max()) + 1
        fc = xp.stack([uxp, uyp, yux - orp])
        if runs is not None:
            runs.append((xp.take(base, rp) + rs, rn))
        if depth == 1:
            return [self._run_values(xp, rp, rs, rn, base, fc, gxf)]
        # runs by depth: within one depth no cell repeats (one pair per map row); each
        # depth's part is scattered after the one below, so the later animal wins
        rr = rank[rp]
        o = xp.argsort(rr)
        rp, rs, rn = rp[o], rs[o], rn[o]
        idx, vx, vy = self._run_values(xp, rp, rs, rn, base, fc, gxf)
        cuts = xp.cumsum(xp.bincount(rr[o], weights=rn, minlength=depth))  # cells per depth
        bounds = [0] + [int(c) for c in cuts.tolist()]
        return [(idx[a:z], vx[a:z], vy[a:z]) for a, z in zip(bounds[:-1], bounds[1:]) if z > a]

    def _run_values(self, xp: Any, rp: Array, rs: Array, rn: Array, base: Array, fc: Array,
                    gxf: Array) -> tuple[Array, Array, Array]:
        """Cells and values of column runs (pair ``rp``, first column ``rs``, count ``rn``),
        in run order. ``fc``: per pair ``ux, uy, gy*ux - ortho``. DLC's float64 across
        ``((gy*ux - gx*uy) - ortho) / w`` is computed as ``((gy*ux - ortho) - gx*uy) / w``:
        the same value, because both sums are exact (every term is a multiple of the
        smallest ulp among ``ux``, ``uy``, ``ortho`` (float32) and the sums stay below 2^53
        of it: whenever those are 0 or >= 2^-20 in magnitude and the map < 2^13 px, i.e.
        every real limb; otherwise the float32 values may differ by one ulp)."""
        total = int(rn.sum()) if rn.size else 0
        if total == 0:
            return xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.float32), xp.zeros(0, dtype=xp.float32)
        ends = xp.cumsum(rn)
        first = ends - rn
        rep = _repeater(xp, rn, ends, total)
        off = rep(xp.stack([first - rs, xp.take(base, rp) + rs - first]))  # (2, cells)
        cols = xp.arange(total, dtype=xp.int64)
        idx = cols + off[1]
        cols -= off[0]
        ux, uy, c = rep(xp.take(fc, rp, axis=1))  # (3, cells) float64
        a = gxf[cols]
        xp.multiply(a, uy, out=a)  # gx*uy (exact)
        xp.subtract(c, a, out=a)  # (gy*ux - ortho) - gx*uy
        xp.divide(a, self.width, out=a)
        xp.abs(a, out=a)
        xp.subtract(1.0, a, out=a)  # t = 1 - |across|
        vx = xp.empty(total, dtype=xp.float32)
        vy = xp.empty(total, dtype=xp.float32)
        xp.multiply(ux, a, out=vx, casting="unsafe")  # float64 product, rounded once
        xp.multiply(uy, a, out=vy, casting="unsafe")
        return idx, vx, vy

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


def _chunks(xp: Any, start: Array, count: Array, size: int) -> tuple[Array, int]:
    """Runs ``[start, start + count)`` of a flat array of ``size`` as starts of equal
    chunks ``(starts, C)`` covering them (C: a power of two near the mean run, 4 .. 64; the
    last chunk of a run overshoots it, starts are kept <= size - C): for :func:`fill_runs`,
    which clears them (clearing more than the run is harmless where all else is 0)."""
    keep = count > 0
    if not bool(keep.any()):
        return xp.zeros(0, dtype=xp.int64), 1
    start, count = start[keep], count[keep]
    mean = float(count.sum()) / int(count.size)
    c = 1 << min(max(2, int(round(np.log2(max(mean, 1.0))))), 6)
    c = min(c, size)
    owner, j = _expand(xp, xp.zeros_like(count), (count + (c - 1)) // c)
    return xp.minimum(start[owner] + j * c, size - c), c


def _repeater(xp: Any, count: Array, ends: Array, total: int) -> Any:
    """``rep(a)``: ``a[..., i]`` repeated ``count[i]`` times along the last axis (``ends`` =
    ``cumsum(count)``, ``total`` its last value). NumPy: ``np.repeat``; CuPy (whose
    ``repeat`` takes no array of counts): a gather by each element's owner."""
    if xp is np:
        return lambda a: np.repeat(a, count, axis=-1)
    owner = xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right")
    return lambda a: a[..., owner]


def _last_wins(xp: Any, idx: Array, vx: Array, vy: Array) -> tuple[Array, Array, Array]:
    """Keep, of equal ``idx``, the last entry (entries are in DLC's visiting order: a later
    animal's cell comes after an earlier one's)."""
    m = int(idx.size)
    eb = max(1, (m - 1).bit_length())
    if int(idx.max()) < 2 ** (62 - eb):
        srt = xp.sort((idx << eb) + xp.arange(m, dtype=xp.int64))
        sk, order = srt >> eb, srt & ((1 << eb) - 1)
    else:  # pragma: no cover - keys too large to pack
        order = xp.argsort(idx, kind="stable")
        sk = idx[order]
    last = xp.ones(m, dtype=bool)
    last[:-1] = sk[1:] != sk[:-1]
    win = order[last]
    return sk[last], vx[win], vy[win]
