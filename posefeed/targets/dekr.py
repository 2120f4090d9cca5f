"""DeepLabCut 3.x DEKR targets (``DEKRGenerator``: keypoint + centre heatmaps, offsets to
the centre), vectorised: no Python loop over batch, animal, keypoint or pixel."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from posefeed.targets._common import Array, as_keypoints, size_pair, split_keypoints
from posefeed.targets.base import Codec

_BIG = 1.0e7  # px; coordinates are clipped here before integer casts (never drawn there)


def add_centers(xp: Any, x: Array, y: Array, v: Array) -> tuple[Array, Array, Array]:
    """DeepLabCut's ``add_center_keypoints``: ``x, y, v (B, N, K)`` -> ``(B, N, K + 1)``
    with the centre appended: the mean of the keypoints with ``v > 0`` (float64 mean,
    rounded to float32), ``v = 2``; ``(0, 0, 0)`` for an instance with none."""
    vis = v > 0
    cnt = vis.sum(axis=-1)
    safe = xp.maximum(cnt, 1)
    cx = (xp.where(vis, x, 0).astype(xp.float64).sum(axis=-1) / safe).astype(xp.float32)
    cy = (xp.where(vis, y, 0).astype(xp.float64).sum(axis=-1) / safe).astype(xp.float32)
    has = cnt > 0
    cx = xp.where(has, cx, xp.float32(0))
    cy = xp.where(has, cy, xp.float32(0))
    cv = xp.where(has, xp.float32(2), xp.float32(0))
    cat = lambda a, c: xp.concatenate([a, c[..., None].astype(xp.float32)], axis=-1)  # noqa: E731
    return cat(x, cx), cat(y, cy), cat(v, cv)


def keypoint_areas(xp: Any, x: Array, y: Array, v: Array) -> Array:
    """The area used when none is given: the tight box of the keypoints with ``v > 0``,
    each side at least 1 px (DeepLabCut's ``max(1, w) * max(1, h)``), 0 for an instance
    with none. ``(B, N, K)`` -> ``(B, N)`` float32, input pixels squared."""
    vis = v > 0
    inf = xp.float32(np.inf)
    x0 = xp.where(vis, x, inf).min(axis=-1)
    x1 = xp.where(vis, x, -inf).max(axis=-1)
    y0 = xp.where(vis, y, inf).min(axis=-1)
    y1 = xp.where(vis, y, -inf).max(axis=-1)
    has = vis.any(axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):  # absurd coordinates: inf, refused later
        w = xp.maximum(xp.where(has, x1 - x0, 0), 1)
        h = xp.maximum(xp.where(has, y1 - y0, 0), 1)
        return xp.where(has, w * h, 0).astype(xp.float32)


class DEKR(Codec):
    r"""DeepLabCut 3.x ``DEKRGenerator`` targets (Geng et al., CVPR 2021, as DeepLabCut
    builds them).

    Keypoints are mapped onto the ``(W, H)`` output as :math:`x_s = (x - s/2) / s` (float32;
    ``s`` = ``stride``); the instance centre (the mean of its keypoints with ``v > 0``,
    appended as keypoint ``K``) is the ``K+1``-th heatmap. With :math:`t`
    (``pos_dist_thresh``, input pixels): :math:`\sigma = t / (2s)` for the keypoints,
    :math:`\sigma_c = t / s` for the centre, offset radius :math:`r = t / s` (cells).

    * ``heatmap (B, K+1, H, W)``: for every drawn keypoint (``v > 0`` and
      :math:`0 \le x_s < W`, :math:`0 \le y_s < H`), :math:`\exp(-((i - x_s)^2 +
      (j - y_s)^2) / (2\sigma^2))` on its window ``[floor(x_s - 3σ - 1),
      ceil(x_s + 3σ + 2))`` (both axes; 0 outside), max over instances.
    * ``heatmap_weight``: 1 on the windows of drawn keypoints, ``bg_weight`` elsewhere;
      ``v == -1`` sets the whole map to 0, which a *later* instance's window sets back to
      1 (DeepLabCut's order).
    * ``offset (B, 2K, H, W)``: on the square ``[int(c_s - r), int(c_s + r))`` around the
      centre ``c_s = (int(c) - s/2) / s`` (clipped to the map), channels ``2k, 2k+1`` are
      :math:`(i - x_s, j - y_s)` of keypoint ``k`` (drawn), ``offset_weight`` is
      :math:`1/\sqrt{\text{area}}` there (1/input px).
    * Conflicts (instances' squares overlapping): DeepLabCut visits instance by instance,
      keypoint by keypoint, and skips a cell whose offset is already set when the area last
      written at that cell (by any keypoint) is smaller than the instance's; so the
      smaller instance keeps its offsets, ties go to the later one, and an instance that
      brings a keypoint nobody set yet writes that one and every later keypoint of its own.
      This is reproduced exactly in closed form (per cell: segmented running minima of the
      areas' ranks and cumulative keypoint sets). One sentinel detail is not: DeepLabCut
      tests "already set" as ``offset != 0``, so an offset of exactly ``(0, 0)`` (a
      keypoint exactly on a cell) counts as unset for later instances; here it counts as
      set.

    Areas: ``encode(keypoints, area=...)`` takes ``(B, N)`` areas in input pixels squared
    (DeepLabCut: ``max(1, box_w) * max(1, box_h)`` of the instance's box). Without them the
    tight box of the instance's visible keypoints is used (:func:`keypoint_areas`). An
    instance that writes offsets needs a finite area > 0 (``ValueError`` naming it;
    DeepLabCut would write ``1/sqrt(0) = inf`` weights).

    Arithmetic follows DeepLabCut under NumPy 2 (float32 keypoint maths, float64 window
    bounds of the centre); DLC's scalar ``**2`` (libm ``powf``) is the correctly rounded
    square here (values differ by < 1e-6).

    Cost (NumPy): the windows and squares only (a fixed-size window per keypoint, masked);
    the max over instances is a scatter repeated where a larger value lost (at most N
    rounds), the offsets' last-writer rules are one integer sort and cumulative sums; fresh maps are zeroed memory plus those cells, the heatmap weight one fill per
    map. :meth:`encoder` (kept buffers; the DALI adapter uses it on the CPU) clears only
    the previous call's cells and refills only the weight maps whose base value changed.

    Args:
        num_joints: ``K``, keypoints per instance (without the centre).
        stride: input pixels per output cell.
        heatmap_size: output ``(W, H)`` in cells.
        pos_dist_thresh: :math:`t`, input pixels (DeepLabCut default 17).
        bg_weight: heatmap weight away from every keypoint window (DeepLabCut default 0.1).
        centers_given: the keypoints already end with the centre (``K + 1`` of them, as
            DeepLabCut's generator receives them); else it is computed.
        use_kernel: on CuPy input use the fused CUDA kernel
            (``posefeed.targets.kernels_multi``; ``False``: the vectorised CuPy path).
    """

    name = "dekr"

    def __init__(self, num_joints: int, stride: float, heatmap_size: tuple[int, int],
                 pos_dist_thresh: float = 17, bg_weight: float = 0.1, centers_given: bool = False,
                 use_kernel: bool = True) -> None:
        self.num_joints = int(num_joints)
        if self.num_joints < 1:
            raise ValueError(f"num_joints must be >= 1; got {num_joints!r}")
        self.stride = float(stride)
        if self.stride <= 0:
            raise ValueError(f"stride must be positive; got {stride!r}")
        self.heatmap_size = size_pair(heatmap_size, "heatmap_size")
        self.pos_dist_thresh = float(pos_dist_thresh)
        self.bg_weight = float(bg_weight)
        self.centers_given = bool(centers_given)
        self.use_kernel = bool(use_kernel)
        scale = 1.0 / self.stride
        self.sigma = (self.pos_dist_thresh / 2) * scale
        self.center_sigma = self.pos_dist_thresh * scale
        self.radius = self.pos_dist_thresh * scale

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("heatmap", "heatmap_weight", "offset", "offset_weight")

    def __repr__(self) -> str:
        return (f"DEKR(num_joints={self.num_joints}, stride={self.stride}, heatmap_size={self.heatmap_size}, "
                f"pos_dist_thresh={self.pos_dist_thresh}, bg_weight={self.bg_weight})")

    def output_shapes(self, batch_size: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
        w, h = self.heatmap_size
        b, k = int(batch_size), self.num_joints
        return {"heatmap": (b, k + 1, h, w), "heatmap_weight": (b, k + 1, h, w),
                "offset": (b, 2 * k, h, w), "offset_weight": (b, 2 * k, h, w)}

    # ------------------------------------------------------------------ encode
    def encode(self, keypoints: Array, out: Mapping[str, Array] | None = None,
               area: Array | None = None) -> dict[str, Array]:
        """``keypoints (B, N, K, 3)`` (``K + 1`` with ``centers_given``) in input pixels,
        optional ``area (B, N)`` (input px²) -> ``heatmap``, ``heatmap_weight``
        ``(B, K+1, H, W)``, ``offset``, ``offset_weight`` ``(B, 2K, H, W)``, float32 (same
        array module). ``out``: arrays to write into (every element is written)."""
        return self._encode(keypoints, out, area, None)

    def _encode_reusing(self, keypoints: Array, out: dict[str, Array], memo: dict,
                        area: Array | None = None) -> dict[str, Array]:
        return self._encode(keypoints, out, area, memo)

    def _encode(self, keypoints: Array, out: Mapping[str, Array] | None, area: Array | None,
                memo: dict | None) -> dict[str, Array]:
        # memo (BufferedEncoder): the cells the previous call wrote into ``out`` and the
        # weight maps' base values; empty = unknown contents (everything is rewritten)
        prev = {}
        if memo is not None:
            prev = dict(memo)
            memo.clear()  # stays empty if anything below raises
        xp, kp = as_keypoints(keypoints)
        b, n, k_in = kp.shape[:3]
        k = self.num_joints
        want = k + 1 if self.centers_given else k
        if k_in != want:
            raise ValueError(f"DEKR(num_joints={k}{', centers_given' if self.centers_given else ''}) "
                             f"needs {want} keypoints per instance; got {k_in}")
        _, x, y, v = split_keypoints(kp)
        if area is None:
            ar = keypoint_areas(xp, x[..., :k], y[..., :k], v[..., :k])
        else:
            ar = xp.asarray(area, dtype=xp.float32)
            n_given = int(xp.asarray(keypoints).shape[1])
            if tuple(ar.shape) != (b, n_given):
                raise ValueError(f"area must be (B, N) = {(b, n_given)} like the keypoints; got {tuple(ar.shape)}")
            if n_given == 0:
                ar = xp.zeros((b, n), dtype=xp.float32)
        if not self.centers_given:
            x, y, v = add_centers(xp, x, y, v)
        self._check_area(xp, x, y, v, ar)
        if self.use_kernel and xp.__name__ == "cupy":
            from posefeed.targets import kernels_multi  # noqa: PLC0415 - CuPy path only

            dst = None if out is None else self._check_out(xp, out, b, k)
            return kernels_multi.dekr_targets(self, x, y, v, ar, out=dst)  # writes every element
        if out is None:
            shapes = self.output_shapes(b, k)
            dst = {name: xp.zeros(shapes[name], dtype=xp.float32) for name in self.output_names}
            prev = {"fresh": True}
        else:
            dst = self._check_out(xp, out, b, k)
        new: dict[str, Any] = {}
        self._heatmaps(xp, x, y, v, dst, prev, new)
        self._offsets(xp, x, y, v, ar, dst, prev, new)
        if memo is not None:
            memo.update(new)
        return dst

    def _scaled(self, xp: Any, x: Array, y: Array) -> tuple[Array, Array]:
        s = xp.float32(self.stride)
        half = xp.float32(self.stride / 2)
        return ((x - half) / s).astype(xp.float32), ((y - half) / s).astype(xp.float32)

    def _heatmaps(self, xp: Any, x: Array, y: Array, v: Array, dst: dict, prev: dict, new: dict) -> None:
        b, n, k1 = x.shape
        w, h = self.heatmap_size
        hw_ = h * w
        xs, ys = self._scaled(xp, x, y)
        drawn = (v > 0) & ~((xs < 0) | (ys < 0) | (xs >= w) | (ys >= h))
        hm, wt = dst["heatmap"], dst["heatmap_weight"]
        hmf, wtf = hm.reshape(-1), wt.reshape(-1)
        if "hm" in prev:
            hmf[prev["hm"]] = 0.0
        elif "fresh" not in prev:
            hm.fill(0.0)
        # weight: 0 on maps with a v == -1 instance, else bg; then 1 on the windows of the
        # instances drawn after the last v == -1 one
        ign = v == -1
        last_ign = xp.where(ign, xp.arange(n)[None, :, None], -1).max(axis=1)  # (B, K+1)
        base = xp.where(last_ign >= 0, xp.float32(0), xp.float32(self.bg_weight)).astype(xp.float32)
        if "base" in prev:  # maps whose base changed are refilled, the others' 1s reset
            ones = prev["ones"]
            if bool((base == base.reshape(-1)[0]).all()):  # one value (no v = -1): no gather
                wtf[ones] = base.reshape(-1)[0]
            else:
                wtf[ones] = base.reshape(-1)[ones // hw_]
            cb, ck = xp.nonzero(prev["base"] != base)
            if cb.size:
                wt[cb, ck] = base[cb, ck][:, None, None]
        else:
            xp.copyto(wt, base[:, :, None, None])
        new["base"] = base
        late = drawn & (xp.arange(n)[None, :, None] > last_ign[:, None, :])
        parts = []
        for sel, sigma in ((slice(0, k1 - 1), self.sigma), (slice(k1 - 1, k1), self.center_sigma)):
            parts.append(self._windows(xp, xs[..., sel], ys[..., sel], drawn[..., sel], late[..., sel],
                                       sigma, sel.start, k1))
        key = xp.concatenate([p[0] for p in parts])
        val = xp.concatenate([p[1] for p in parts])
        ones = xp.concatenate([p[2] for p in parts])
        wtf[ones] = 1.0
        new["ones"] = ones
        # max over instances: write everything, then rewrite the cells where a larger value
        # lost (duplicate indices keep an arbitrary one); each round raises every such
        # cell, so at most N rounds (usually one or two)
        hmf[key] = val
        k_, v_ = key, val
        while k_.size:
            lost = xp.flatnonzero(v_ > hmf[k_])
            k_, v_ = k_[lost], v_[lost]
            hmf[k_] = v_
        new["hm"] = key

    def _windows(self, xp: Any, xs: Array, ys: Array, drawn: Array, late: Array, sigma: float,
                 k0: int, k1: int) -> tuple[Array, Array, Array]:
        """The window cells of every drawn keypoint of one kind (``sigma``): flat indices into
        ``(B, K+1, H, W)`` and float32 values of a block per keypoint (0 outside its window),
        and the indices whose weight becomes 1."""
        w, h = self.heatmap_size
        f32 = xp.float32
        r3 = f32(3 * sigma)
        two_s2 = f32(2 * sigma ** 2)
        span = int(math.ceil(6 * sigma + 3)) + 2  # ceil(x + 3σ + 2) - floor(x - 3σ - 1) <= this
        ul_x = xp.floor(((xs - r3) - f32(1)).astype(f32))
        ul_y = xp.floor(((ys - r3) - f32(1)).astype(f32))
        br_x = xp.ceil(((xs + r3) + f32(2)).astype(f32))
        br_y = xp.ceil(((ys + r3) + f32(2)).astype(f32))
        idx = xp.flatnonzero(drawn.reshape(-1))  # drawn (b, n, k) of this kind
        if idx.size == 0:
            z = xp.zeros(0, dtype=xp.int64)
            return z, xp.zeros(0, dtype=f32), xp.zeros(0, dtype=bool)
        kk = drawn.shape[-1]
        n = drawn.shape[1]
        bi, ki = idx // (n * kk), idx % kk
        # a fixed-size block per keypoint, moved inside the map; cells outside DLC's
        # (clipped) window [ul, br) get 0 and no weight
        sx, sy = min(span, w), min(span, h)
        cc = xp.maximum(ul_x.reshape(-1)[idx], 0).astype(xp.int64)
        aa = xp.maximum(ul_y.reshape(-1)[idx], 0).astype(xp.int64)
        dd = xp.minimum(br_x.reshape(-1)[idx], w).astype(xp.int64)
        bb = xp.minimum(br_y.reshape(-1)[idx], h).astype(xp.int64)
        c0 = xp.minimum(cc, w - sx)
        r0 = xp.minimum(aa, h - sy)
        cols = c0[:, None] + xp.arange(sx)  # (M, sx)
        rows = r0[:, None] + xp.arange(sy)
        cin = (cols >= cc[:, None]) & (cols < dd[:, None])
        rin = (rows >= aa[:, None]) & (rows < bb[:, None])
        dx = cols.astype(f32) - xs.reshape(-1)[idx][:, None]
        dy = rows.astype(f32) - ys.reshape(-1)[idx][:, None]
        dx2 = xp.where(cin, dx * dx, f32(np.inf))  # exp(-inf) = 0 outside the window
        dy2 = xp.where(rin, dy * dy, f32(np.inf))
        val = xp.exp(-(dy2[:, :, None] + dx2[:, None, :]) / two_s2).astype(f32)  # (M, sy, sx)
        hw_ = h * w
        key = ((bi * k1 + k0 + ki) * hw_)[:, None, None] + (rows * w)[:, :, None] + cols[:, None, :]
        inside = (rin & late.reshape(-1)[idx][:, None])[:, :, None] & cin[:, None, :]
        return key.reshape(-1), val.reshape(-1), key[inside]

    def _offsets(self, xp: Any, x: Array, y: Array, v: Array, area: Array, dst: dict, prev: dict,
                 new: dict) -> None:
        b, n, k1 = x.shape
        k = k1 - 1
        w, h = self.heatmap_size
        hw_ = h * w
        off, ow = dst["offset"], dst["offset_weight"]
        if "off" in prev:
            pb = prev["off"]
            for a_ in (off, ow):
                flat = a_.reshape(-1)
                flat[pb] = 0.0
                flat[pb + hw_] = 0.0
        elif "fresh" not in prev:
            off.fill(0.0)
            ow.fill(0.0)
        new["off"] = xp.zeros(0, dtype=xp.int64)
        xs, ys = self._scaled(xp, x, y)
        drawn = ((v > 0) & ~((xs < 0) | (ys < 0) | (xs >= w) | (ys >= h)))[..., :k]  # S_n
        r = self.radius
        sq = self._squares(xp, x, y)
        x0, x1, y0, y1 = sq[..., 0], sq[..., 1], sq[..., 2], sq[..., 3]
        span = int(math.floor(2 * r)) + 2
        inst = xp.flatnonzero((drawn.any(axis=-1) & (x1 > x0) & (y1 > y0)).reshape(-1))  # (b, n)
        if inst.size == 0:
            return
        o = xp.arange(span)
        cols = x0.reshape(-1)[inst][:, None] + o
        rows = y0.reshape(-1)[inst][:, None] + o
        ins = (rows < y1.reshape(-1)[inst][:, None])[:, :, None] & (cols < x1.reshape(-1)[inst][:, None])[:, None, :]
        m, i, j = xp.nonzero(ins)
        p = inst[m]  # flat (b, n) of each entry
        bi, ni = p // n, p % n
        pos = rows[m, i] * w + cols[m, j]
        # visit order per cell: sort entries by (b, cell, n)
        srt = xp.sort((bi * hw_ + pos) * n + ni)
        grp, ni = srt // n, srt % n
        bi = grp // hw_
        p = bi * n + ni
        e = int(srt.size)
        start = xp.ones(e, dtype=bool)
        start[1:] = grp[1:] != grp[:-1]
        S = drawn.reshape(b * n, k)[p]  # (E, K) keypoints each entry brings
        # W: keypoints already set at the cell before this entry (cumulative union per cell)
        cs = xp.cumsum(S.astype(xp.int32), axis=0) - S
        first = xp.flatnonzero(start)
        gid = xp.cumsum(start) - 1
        W = (cs - cs[first][gid]) > 0
        brings = (S & ~W).any(axis=1)
        # A: the area last written at the cell = the running minimum of the areas (ranks)
        # since the last entry that brought a new keypoint
        _, rank = xp.unique(area.reshape(-1), return_inverse=True)
        rank = rank.reshape(-1).astype(xp.int64)
        ra = rank[p]
        seg = xp.cumsum(brings) - 1
        big = int(rank.max()) + 1 if rank.size else 1
        run = xp.minimum.accumulate(ra - seg * big) + seg * big  # A after each entry
        before = xp.empty_like(run)
        before[1:] = run[:-1]
        before[0] = -1
        full = start | (before >= ra)
        kidx = xp.arange(k)
        fnew = xp.argmax(S & ~W, axis=1)
        f = xp.where(full, 0, xp.where(brings, fnew, k))
        T = S & (kidx[None, :] >= f[:, None])  # keypoints this entry writes
        # the last writer of each keypoint per cell
        writer = xp.maximum.accumulate(xp.where(T, xp.arange(e)[:, None], -1), axis=0)
        ends = xp.flatnonzero(xp.concatenate([start[1:], xp.ones(1, dtype=bool)]))
        wl = writer[ends]  # (G, K)
        ok = wl >= first[:, None]
        g, kj = xp.nonzero(ok)
        we = wl[g, kj]
        cell = grp[ends][g] % hw_
        bg, pw = bi[we], p[we]
        colc = (cell % w).astype(xp.float32)
        rowc = (cell // w).astype(xp.float32)
        ox = colc - xs[..., :k].reshape(b * n, k)[pw, kj]
        oy = rowc - ys[..., :k].reshape(b * n, k)[pw, kj]
        wgt = (xp.float32(1) / xp.sqrt(area.reshape(-1)[pw])).astype(xp.float32)
        base = (bg * (2 * k) + 2 * kj) * hw_ + cell
        new["off"] = base
        for a_, vals in ((off, (ox, oy)), (ow, (wgt, wgt))):
            flat = a_.reshape(-1)
            flat[base] = vals[0]
            flat[base + hw_] = vals[1]

    def _check_area(self, xp: Any, x: Array, y: Array, v: Array, area: Array) -> None:
        """Refuse a non-finite or non-positive area for an instance with a keypoint (not the
        centre) on the map (it would weight offsets by ``1/sqrt(area)``)."""
        w, h = self.heatmap_size
        xs, ys = self._scaled(xp, x[..., :-1], y[..., :-1])
        drawn = ((v[..., :-1] > 0) & ~((xs < 0) | (ys < 0) | (xs >= w) | (ys >= h))).any(axis=-1)
        bad = drawn & ~((area > 0) & xp.isfinite(area))
        if bool(bad.any()):
            bi, ni = (int(t[0]) for t in xp.nonzero(bad))
            raise ValueError(f"area[{bi}, {ni}] = {float(area[bi, ni]):g}: an instance with keypoints "
                             "on the map needs a finite area > 0 (input px^2)")

    def _squares(self, xp: Any, x: Array, y: Array) -> Array:
        """Each instance's offset square ``(B, N, 4)`` int64 ``x0, x1, y0, y1`` (cells, end
        exclusive, clipped to the map): DLC truncates the centre (last keypoint) to int px,
        maps it to ``c_s = (c - s/2) / s`` (float64) and truncates ``c_s -+ r``."""
        w, h = self.heatmap_size
        s, r = self.stride, self.radius
        ctx = xp.trunc(xp.clip(x[..., -1].astype(xp.float64), -_BIG, _BIG))
        cty = xp.trunc(xp.clip(y[..., -1].astype(xp.float64), -_BIG, _BIG))
        csx, csy = (ctx - s / 2) / s, (cty - s / 2) / s
        x0 = xp.maximum(xp.trunc(csx - r), 0)
        y0 = xp.maximum(xp.trunc(csy - r), 0)
        x1 = xp.minimum(xp.trunc(csx + r), w)
        y1 = xp.minimum(xp.trunc(csy + r), h)
        return xp.stack([x0, x1, y0, y1], axis=-1).astype(xp.int64)

    # ------------------------------------------------------------------ decode
    def decode(self, *outputs: Any) -> tuple[Any, Any]:
        """Not provided: DEKR's outputs are decoded by the model's predictor (centre peaks,
        offsets, rescoring)."""
        raise NotImplementedError("DEKR has no decode: grouping belongs to the model's predictor")
