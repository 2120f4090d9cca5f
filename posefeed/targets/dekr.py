"""DeepLabCut 3.x DEKR targets (``DEKRGenerator``: keypoint + centre heatmaps, offsets to
the centre), vectorised: no Python loop over batch, animal, keypoint or pixel."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from posefeed.targets._common import Array, as_keypoints, clean_keypoints, size_pair
from posefeed.targets._numba import use_kernel as _use_cpu_kernel
from posefeed.targets._rows import fill_runs
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
      DeepLabCut tests "already set" as ``offset != 0``, so an offset of exactly ``(0, 0)``
      (a keypoint exactly on a cell) counts as unset and the next instance's write
      replaces it whatever its area. This is reproduced exactly: in closed form (per cell:
      segmented running minima of the areas' ranks and cumulative keypoint sets) where no
      ``(0, 0)`` is written, and by DeepLabCut's sequential rule (vectorised over those
      cells) on the few cells several instances cover where one is.

    Areas: ``encode(keypoints, area=...)`` takes ``(B, N)`` areas in input pixels squared
    (DeepLabCut: ``max(1, box_w) * max(1, box_h)`` of the instance's box). Without them, and
    for an instance whose area is NaN (unknown), the tight box of the instance's visible
    keypoints is used (:func:`keypoint_areas`, each side at least 1 px). In a `PoseLoader`
    (``inputs`` names ``"area"``: the codec runs after the graph) the area is the table's
    (COCO ``area``; DeepLabCut: its ``bbox_margin`` box's ``max(1, w h)``, see
    `posefeed.datasets.dlc.boxes`) times the augmentation's ``|det|`` (batch ``area``); a
    table without areas (NaN) gets the augmented keypoints' box. An
    instance that writes offsets needs a finite area > 0 (``ValueError`` naming it;
    DeepLabCut would write ``1/sqrt(0) = inf`` weights).

    Arithmetic follows DeepLabCut under NumPy 2 (float32 keypoint maths, float64 window
    bounds of the centre); DLC's scalar ``**2`` (libm ``powf``) is the correctly rounded
    square here (values differ by < 1e-6).

    Cost (NumPy): the windows and squares only, one fixed-size block each. Window values
    are separable (one exp per block row and column; within 3e-7 of DLC's formula, see
    ``_windows``); windows no other instance's window on the same map meets are written in
    one scatter, the others by a scatter repeated where a larger value lost (the max over
    instances: at most N rounds, usually one). Offsets: every (instance, drawn keypoint)
    writes its whole square as a block; DLC's visiting rule (a closed form: one integer sort,
    cumulative sums, depth-bounded running minima) then rewrites only the cells that several
    squares cover. Fresh maps are zeroed memory plus those cells, the heatmap weight one fill
    per map; :meth:`encoder` (kept buffers; the DALI adapter and the DeepLabCut drop-in use
    it on the CPU) clears only the previous call's block rows and refills only the weight
    maps whose base value changed. The array code runs on CuPy too (``use_kernel=False``; no
    ``ufunc.accumulate`` but ``add``'s, which CuPy lacks).

    Compiled CPU kernel (``kernel="auto"`` when numba imports; ``posefeed.targets.
    kernels_multi_cpu.dekr_encode``): on NumPy input one call per batch runs DLC's loop
    itself (instance by instance, keypoint by keypoint; the visiting rule as written, with
    one area per cell) over only each window and square, the cleaning, centres and default
    areas included; window values are the same separable product (they differ from the
    array version's only by the ``exp`` implementations, numba's libm ``expf`` and NumPy's
    SIMD one, each within a few ulp of exp: 2.4e-7 apart at most measured, tested <= 5e-7);
    kept buffers clear the previous call's windows and squares.

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
        kernel: on NumPy input, ``"auto"`` (the compiled kernel when numba imports),
            ``"numba"`` (required) or ``"numpy"`` (the vectorised array version).
    """

    name = "dekr"
    inputs = ("keypoints", "area")

    def __init__(self, num_joints: int, stride: float, heatmap_size: tuple[int, int],
                 pos_dist_thresh: float = 17, bg_weight: float = 0.1, centers_given: bool = False,
                 use_kernel: bool = True, kernel: str = "auto") -> None:
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
        self.kernel = kernel
        self._cpu_kernel = _use_cpu_kernel(kernel)
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
        if self._cpu_kernel and xp is np:
            return self._encode_compiled(kp, out, area, memo, prev, int(np.shape(keypoints)[1]))
        x, y, v = clean_keypoints(xp, kp)
        if area is None:
            ar = keypoint_areas(xp, x[..., :k], y[..., :k], v[..., :k])
        else:
            ar = xp.asarray(area, dtype=xp.float32)
            n_given = int(xp.asarray(keypoints).shape[1])
            if tuple(ar.shape) != (b, n_given):
                raise ValueError(f"area must be (B, N) = {(b, n_given)} like the keypoints; got {tuple(ar.shape)}")
            if n_given == 0:
                ar = xp.zeros((b, n), dtype=xp.float32)
            # NaN: this instance's area is not known (no test of "any": no host read on CuPy)
            ar = xp.where(xp.isnan(ar), keypoint_areas(xp, x[..., :k], y[..., :k], v[..., :k]), ar)
        if not self.centers_given:
            x, y, v = add_centers(xp, x, y, v)
        w, h = self.heatmap_size
        xs, ys = self._scaled(xp, x, y)
        drawn = (v > 0) & ~((xs < 0) | (ys < 0) | (xs >= w) | (ys >= h))  # (B, N, K+1)
        self._check_area(xp, drawn, ar)
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
        self._heatmaps(xp, xs, ys, v, drawn, dst, prev, new)
        self._offsets(xp, x, y, xs, ys, drawn, ar, dst, prev, new)
        if memo is not None:
            memo.update(new)
        return dst

    def _encode_compiled(self, kp: np.ndarray, out: Mapping[str, Array] | None, area: Array | None,
                         memo: dict | None, prev: dict, n_given: int) -> dict[str, Array]:
        """The compiled kernel's encode. ``prev``: the previous call's ``memo`` (windows,
        squares, weight bases; empty: ``out``'s contents unknown); this call's are stored in
        ``memo`` (already emptied) for the next."""
        from posefeed.targets import kernels_multi_cpu  # noqa: PLC0415 - numba compiles on first use

        b, n = kp.shape[:2]
        k = self.num_joints
        w, h = self.heatmap_size
        if area is None:
            ar = np.full((b, n), np.nan, dtype=np.float32)  # NaN: the keypoints' box
        else:
            ar = np.ascontiguousarray(area, dtype=np.float32)
            if ar.shape != (b, n_given):
                raise ValueError(f"area must be (B, N) = {(b, n_given)} like the keypoints; got {ar.shape}")
            if n_given == 0:  # the placeholder instance (nothing drawn)
                ar = np.full((b, n), np.nan, dtype=np.float32)
        if out is None:
            shapes = self.output_shapes(b, k)
            dst = {name: (np.empty if name == "heatmap_weight" else np.zeros)(shapes[name], dtype=np.float32)
                   for name in self.output_names}
            state = 0
        else:
            dst = self._check_out(np, out, b, k)
            state = 1 if "win" in prev else 2
        k1 = k + 1
        z = np.zeros(0, dtype=np.int32)
        prev_win = prev["win"] if state == 1 else z.reshape(0, 0, 0, 4)
        prev_sq = prev["sq"] if state == 1 else z.reshape(0, 0, 4)
        prev_base = prev["base"] if state == 1 else np.zeros((0, 0), dtype=np.float32)
        amap = prev.get("amap")
        if amap is None:
            amap = np.empty((b, h, w), dtype=np.float32)
        win = np.empty((b, k1, n, 4), dtype=np.int32)
        sq = np.empty((b, n, 4), dtype=np.int32)
        base = np.empty((b, k1), dtype=np.float32)
        used = np.empty((b, n), dtype=np.float32)
        f = np.float32
        bad = kernels_multi_cpu.dekr_encode_nb(
            np.ascontiguousarray(kp), ar, not self.centers_given, self.stride, f(3 * self.sigma),
            f(2 * self.sigma ** 2), f(3 * self.center_sigma), f(2 * self.center_sigma ** 2), self.radius,
            f(self.bg_weight), dst["heatmap"], dst["heatmap_weight"], dst["offset"], dst["offset_weight"], amap,
            state, prev_win, prev_sq, prev_base, win, sq, base, used)
        if bad >= 0:
            bi, ni = divmod(int(bad), n)
            raise ValueError(f"area[{bi}, {ni}] = {float(used[bi, ni]):g}: an instance with keypoints "
                             "on the map needs a finite area > 0 (input px^2)")
        if memo is not None:
            memo.update(win=win, sq=sq, base=base, amap=amap)
        return dst

    def _scaled(self, xp: Any, x: Array, y: Array) -> tuple[Array, Array]:
        s = xp.float32(self.stride)
        half = xp.float32(self.stride / 2)
        return ((x - half) / s).astype(xp.float32), ((y - half) / s).astype(xp.float32)

    def _heatmaps(self, xp: Any, xs: Array, ys: Array, v: Array, drawn: Array, dst: dict, prev: dict,
                  new: dict) -> None:
        b, n, k1 = xs.shape
        w, h = self.heatmap_size
        hw_ = h * w
        hm, wt = dst["heatmap"], dst["heatmap_weight"]
        hmf, wtf = hm.reshape(-1), wt.reshape(-1)
        if "hm" in prev:  # the previous windows' rows (runs of the blocks' width)
            for starts, width in prev["hm"]:
                fill_runs(xp, hmf, starts, width, 0.0)
        elif "fresh" not in prev:
            hm.fill(0.0)
        # weight: 0 on maps with a v == -1 instance, else bg; then 1 on the windows of the
        # instances drawn after the last v == -1 one
        ign = v == -1
        last_ign = xp.where(ign, xp.arange(n)[None, :, None], -1).max(axis=1)  # (B, K+1)
        base = xp.where(last_ign >= 0, xp.float32(0), xp.float32(self.bg_weight)).astype(xp.float32)
        one_base = not bool((last_ign >= 0).any())  # every map's base is bg (no v == -1)
        if "base" in prev:  # maps whose base changed are refilled, the others' 1s reset
            for starts, width in prev["ones"]:  # runs inside one map row: one base each
                fill_runs(xp, wtf, starts, width,
                          self.bg_weight if one_base else base.reshape(-1)[starts // hw_][:, None])
            cb, ck = xp.nonzero(prev["base"] != base)
            if cb.size:
                wt[cb, ck] = base[cb, ck][:, None, None]
        else:
            xp.copyto(wt, base[:, :, None, None])
        new["base"] = base
        late = drawn & (xp.arange(n)[None, :, None] > last_ign[:, None, :])
        hm_runs, one_runs = [], []
        for sel, sigma in ((slice(0, k1 - 1), self.sigma), (slice(k1 - 1, k1), self.center_sigma)):
            key, val, lt, over = self._windows(xp, xs[..., sel], ys[..., sel], drawn[..., sel],
                                               late[..., sel], sigma, sel.start, k1)
            if key is None:
                continue
            # windows that no other instance's window of the same map meets: one scatter;
            # the others: the max over instances by a scatter repeated where a larger value
            # lost (duplicate indices keep an arbitrary one; each round raises every such
            # cell, so at most N rounds, usually one)
            if bool(over.any()):
                solo, shared = xp.flatnonzero(~over), xp.flatnonzero(over)
                k_s, v_s = key[solo].reshape(-1), val[solo].reshape(-1)
                hmf[k_s] = v_s
                k_, v_ = key[shared].reshape(-1), val[shared].reshape(-1)
                hmf[k_] = v_
                while k_.size:
                    lost = xp.flatnonzero(v_ > hmf[k_])
                    k_, v_ = k_[lost], v_[lost]
                    hmf[k_] = v_
            else:
                k_ = key.reshape(-1)
                hmf[k_] = val.reshape(-1)
            late_key = key if bool(lt.all()) else key[xp.flatnonzero(lt)]
            wtf[late_key.reshape(-1)] = 1.0
            # for the next call: the rows of every block (from their first column; zeroing
            # past a window is harmless, the map is 0 there or the cell is another window's),
            # and the late blocks' rows moved inside their map row (the weight's base is per map)
            sx = int(key.shape[2])
            row0 = key[:, :, 0].reshape(-1)
            hm_runs.append((xp.minimum(row0, hmf.size - sx), sx))
            r0 = late_key[:, :, 0].reshape(-1)
            col = r0 % w
            one_runs.append((r0 - col + xp.minimum(col, w - sx), sx))
        new["hm"] = hm_runs
        new["ones"] = one_runs

    def _windows(self, xp: Any, xs: Array, ys: Array, drawn: Array, late: Array, sigma: float,
                 k0: int, k1: int) -> tuple[Any, Any, Any, Any]:
        """The windows of every drawn keypoint of one kind (``sigma``), one fixed-size block
        each, in (b, k, n) order: flat indices ``key (M, S, S)`` into ``(B, K+1, H, W)`` and
        float32 values ``val (M, S, S)``, ``late (M,)`` (weight 1), ``over (M,)`` (another
        instance's window on the same map meets it); ``None``s if none is drawn.

        A block covers DeepLabCut's window ``[floor(x_s - 3σ - 1), ceil(x_s + 3σ + 2))``
        clipped to the map (both axes; its width is < 6σ + 5 -- ceil and floor add < 1 each --
        so ``S = ceil(6σ + 3) + 1`` cells hold it, one more if ``6σ + 3`` is within 1e-3 of an
        integer (float32 rounding of the ends); at most the map's size); block cells past the
        window repeat its last row / column (the same index and value twice: harmless in a
        scatter).

        Values: ``exp(-dx²/2σ²) * exp(-dy²/2σ²)`` (float32) for DeepLabCut's
        ``exp(-(dx² + dy²)/2σ²)``: one exp per row and column instead of per cell. The two
        differ by rounding only: with ``u = dx²/2σ²``, ``t = dy²/2σ²`` (the squares rounded
        alike), DeepLabCut's exponent is ``(u + t)(1 + δ)``-rounded (|δ| <= 2 ulp = 1.2e-7
        for the sum and the division), so its value is ``e^-(u+t) (1 + (u+t) δ')`` and
        ``(u+t) e^-(u+t) <= 1/e``: at most 1.2e-7 / e = 4.4e-8 absolute; each exp, the
        product and the final rounding add <= 1 ulp (6e-8 relative) each: <= 3e-7 absolute in
        all (tests/test_targets_dekr.py checks the worst case over dense sub-pixel offsets).
        """
        w, h = self.heatmap_size
        f32 = xp.float32
        r3 = f32(3 * sigma)
        two_s2 = f32(2 * sigma ** 2)
        span = int(math.ceil(6 * sigma + 3 + 1e-3)) + 1  # > the window's width (see above)
        b, n, kk = drawn.shape
        tid = xp.flatnonzero(xp.transpose(drawn, (0, 2, 1)).reshape(-1))  # drawn, in (b, k, n) order
        if tid.size == 0:
            return None, None, None, None
        bi, ki, ni = tid // (kk * n), (tid // n) % kk, tid % n
        idx = (bi * n + ni) * kk + ki  # flat (b, n, k)
        xk, yk = xs.reshape(-1)[idx], ys.reshape(-1)[idx]
        # DLC's window, clipped to the map: columns [cc, dd), rows [aa, bb)
        cc = xp.maximum(xp.floor(((xk - r3) - f32(1)).astype(f32)), 0).astype(xp.int64)
        aa = xp.maximum(xp.floor(((yk - r3) - f32(1)).astype(f32)), 0).astype(xp.int64)
        dd = xp.minimum(xp.ceil(((xk + r3) + f32(2)).astype(f32)), w).astype(xp.int64)
        bb = xp.minimum(xp.ceil(((yk + r3) + f32(2)).astype(f32)), h).astype(xp.int64)
        cols = xp.minimum(cc[:, None] + xp.arange(min(span, w)), (dd - 1)[:, None])  # (M, Sx)
        rows = xp.minimum(aa[:, None] + xp.arange(min(span, h)), (bb - 1)[:, None])  # (M, Sy)
        dx = cols.astype(f32) - xk[:, None]
        dy = rows.astype(f32) - yk[:, None]
        gx = xp.exp(-((dx * dx) / two_s2))
        gy = xp.exp(-((dy * dy) / two_s2))
        val = gy[:, :, None] * gx[:, None, :]  # (M, Sy, Sx) float32
        key = (((bi * k1 + k0 + ki) * h)[:, None] + rows) * w  # (M, Sy): each block row's cell 0
        key = key[:, :, None] + cols[:, None, :]
        # windows meeting another instance's on the same map: (b, k, n, n') rectangle tests
        rect = xp.zeros((4, b * kk * n), dtype=xp.int64)  # not drawn: the empty [0, 0)
        rect[:, tid] = xp.stack([cc, dd, aa, bb])
        rc = rect.reshape(4, b * kk, n)
        meet = ((xp.maximum(rc[0][:, :, None], rc[0][:, None, :]) < xp.minimum(rc[1][:, :, None], rc[1][:, None, :]))
                & (xp.maximum(rc[2][:, :, None], rc[2][:, None, :]) < xp.minimum(rc[3][:, :, None], rc[3][:, None, :])))
        over = (meet.sum(axis=2) > 1).reshape(-1)[tid]  # itself and one more
        lt = late.reshape(-1)[idx]
        return key, val, lt, over

    def _offsets(self, xp: Any, x: Array, y: Array, xs: Array, ys: Array, drawn_all: Array, area: Array,
                 dst: dict, prev: dict, new: dict) -> None:
        b, n, k1 = x.shape
        k = k1 - 1
        w, h = self.heatmap_size
        hw_ = h * w
        off, ow = dst["offset"], dst["offset_weight"]
        if "off" in prev:  # the previous blocks' rows, both channels
            starts, width = prev["off"]
            for a_ in (off, ow):
                flat = a_.reshape(-1)
                fill_runs(xp, flat, starts, width, 0.0)
                fill_runs(xp, flat[hw_:], starts, width, 0.0)
        elif "fresh" not in prev:
            off.fill(0.0)
            ow.fill(0.0)
        new["off"] = (xp.zeros(0, dtype=xp.int64), 1)
        drawn = drawn_all[..., :k]  # S_n
        r = self.radius
        sq = self._squares(xp, x, y)
        x0, x1, y0, y1 = sq[..., 0], sq[..., 1], sq[..., 2], sq[..., 3]
        span = int(math.floor(2 * r)) + 2
        inst = xp.flatnonzero((drawn.any(axis=-1) & (x1 > x0) & (y1 > y0)).reshape(-1))  # (b, n)
        if inst.size == 0:
            return
        # every drawn keypoint of every instance on its whole square, one block per
        # (instance, keypoint) (block cells past the square repeat its last row / column);
        # cells that several instances' squares cover are rewritten below by DLC's rule
        xk, yk = xs[..., :k].reshape(b * n, k), ys[..., :k].reshape(b * n, k)
        x0f, x1f, y0f, y1f = x0.reshape(-1), x1.reshape(-1), y0.reshape(-1), y1.reshape(-1)
        q = xp.flatnonzero(drawn.reshape(b * n, k)[inst])
        pi, kq = inst[q // k], q % k
        cols = xp.minimum(x0f[pi][:, None] + xp.arange(min(span, w)), (x1f[pi] - 1)[:, None])  # (Q, Sx)
        rows = xp.minimum(y0f[pi][:, None] + xp.arange(min(span, h)), (y1f[pi] - 1)[:, None])  # (Q, Sy)
        key = ((((pi // n) * (2 * k) + 2 * kq) * h)[:, None] + rows) * w  # block rows' cell 0
        key = key[:, :, None] + cols[:, None, :]  # (Q, Sy, Sx): offset channel 2k; 2k+1 is + H*W
        shape = key.shape
        ox = xp.broadcast_to((cols.astype(xp.float32) - xk[pi, kq][:, None])[:, None, :], shape)
        oy = xp.broadcast_to((rows.astype(xp.float32) - yk[pi, kq][:, None])[:, :, None], shape)
        wq = xp.broadcast_to((xp.float32(1) / xp.sqrt(area.reshape(-1)[pi])).astype(xp.float32)[:, None, None],
                             shape)
        flat_o, flat_w = off.reshape(-1), ow.reshape(-1)
        flat_o[key] = ox
        flat_o[hw_:][key] = oy
        flat_w[key] = wq
        flat_w[hw_:][key] = wq
        sx = int(key.shape[2])
        new["off"] = (xp.minimum(key[:, :, 0].reshape(-1), off.size - hw_ - sx), sx)
        # cells on several squares: DLC visits instance by instance, keypoint by keypoint
        o = xp.arange(span)
        cols = x0f[inst][:, None] + o
        rows = y0f[inst][:, None] + o
        ins = (rows < y1f[inst][:, None])[:, :, None] & (cols < x1f[inst][:, None])[:, None, :]
        m, i, j = xp.nonzero(ins)
        p = inst[m]  # flat (b, n) of each entry
        bi, ni = p // n, p % n
        pos = rows[m, i] * w + cols[m, j]
        # visit order per cell: sort entries by (b, cell, n); keep the cells with several
        srt = xp.sort((bi * hw_ + pos) * n + ni)
        grp = srt // n
        same = grp[1:] == grp[:-1]
        multi = xp.zeros(srt.size, dtype=bool)
        multi[1:] = same
        multi[:-1] |= same  # (not multi[1:]: CuPy's in-place ops do not guard overlaps)
        srt = srt[multi]
        if srt.size == 0:
            return
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
        run = _segment_running_min(xp, ra, xp.flatnonzero(brings), seg)  # A after each entry
        before = xp.empty_like(run)
        before[1:] = run[:-1]
        before[0] = -1
        full = start | (before >= ra)
        kidx = xp.arange(k)
        fnew = xp.argmax((S & ~W).astype(xp.int8), axis=1)  # the first keypoint nobody set
        f = xp.where(full, 0, xp.where(brings, fnew, k))
        T = S & (kidx[None, :] >= f[:, None])  # keypoints this entry writes
        # the last writer of each keypoint per cell (-1: none), then the writes keypoint-major
        # (each offset map's cells in increasing order)
        ends = xp.flatnonzero(xp.concatenate([start[1:], xp.ones(1, dtype=bool)]))
        wl = _group_last(xp, T, first, ends)  # (G, K)
        # DLC's "already set" is a non-zero offset: a keypoint exactly on the cell writes (0, 0),
        # which the next entry overwrites whatever its area; the closed form counts it as set,
        # so the cells with such a write (rare: at most one per instance-keypoint) are redone
        # by DLC's sequential rule (same float32 subtraction as the writes)
        cellz = grp % hw_
        xsk, ysk = xs[..., :k].reshape(b * n, k), ys[..., :k].reshape(b * n, k)
        zero = (S & (((cellz % w).astype(xp.float32)[:, None] - xsk[p]) == 0)
                & (((cellz // w).astype(xp.float32)[:, None] - ysk[p]) == 0))  # (E, K)
        zent = xp.flatnonzero(zero.any(axis=1))
        if zent.size:
            wl = _sequential_writers(xp, wl, xp.unique(gid[zent]), S, zero, area.reshape(-1)[p], first, ends)
        kj, g = xp.nonzero(wl.T >= 0)
        we = wl[g, kj]
        cell = grp[ends][g] % hw_
        bg, pw = bi[we], p[we]
        colc = (cell % w).astype(xp.float32)
        rowc = (cell // w).astype(xp.float32)
        ox = colc - xs[..., :k].reshape(b * n, k)[pw, kj]
        oy = rowc - ys[..., :k].reshape(b * n, k)[pw, kj]
        wgt = (xp.float32(1) / xp.sqrt(area.reshape(-1)[pw])).astype(xp.float32)
        base = (bg * (2 * k) + 2 * kj) * hw_ + cell  # cells of the blocks above: no new cells
        for flat, vals in ((flat_o, (ox, oy)), (flat_w, (wgt, wgt))):
            flat[base] = vals[0]
            flat[hw_:][base] = vals[1]

    def _check_area(self, xp: Any, drawn: Array, area: Array) -> None:
        """Refuse a non-finite or non-positive area for an instance with a keypoint (not the
        centre) on the map (``drawn (B, N, K+1)``; it would weight offsets by
        ``1/sqrt(area)``)."""
        bad = drawn[..., :-1].any(axis=-1) & ~((area > 0) & xp.isfinite(area))
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


def _segment_running_min(xp: Any, a: Array, seg_first: Array, seg: Array) -> Array:
    """Running minimum of ``a (E,)`` restarting at each segment (``seg[i]``: entry ``i``'s
    segment, segments contiguous, ``seg_first``: their first entries). Without
    ``ufunc.accumulate`` (CuPy has it for add and multiply only): a ``(E, D)`` minimum over
    the last ``D`` entries, ``D`` the longest segment (here <= N, the instances on a cell)."""
    i = xp.arange(a.size, dtype=xp.int64)
    d = i - seg_first[seg]  # position in its segment
    depth = int(d.max()) + 1
    back = i[:, None] - xp.arange(depth, dtype=xp.int64)[None, :]  # (E, D) this and earlier entries
    vals = xp.where(back >= (i - d)[:, None], a[xp.maximum(back, 0)], a.max() + 1)
    return vals.min(axis=1)


def _sequential_writers(xp: Any, wl: Array, fix: Array, s: Array, zero: Array, a: Array,
                        first: Array, ends: Array) -> Array:
    """DeepLabCut's rule, entry by entry, for the groups (cells) ``fix``: ``wl (G, K)`` (the
    last writer per keypoint, entry index or -1) with those rows replaced. Entries ``first[g]
    .. ends[g]`` in visiting order, ``s (E, K)`` the keypoints each brings, ``zero (E, K)``
    its write there is ``(0, 0)``, ``a (E,)`` its area (float32). A keypoint is written unless
    it is set (last write non-zero) and the cell's area (the last write's, any keypoint) is
    smaller. On the host, vectorised over the groups (a loop over depth and keypoints)."""
    f0, f1 = first[fix], ends[fix]
    depth = int((f1 - f0).max()) + 1
    idx = f0[:, None] + xp.arange(depth, dtype=xp.int64)[None, :]  # (F, D)
    valid = idx <= f1[:, None]
    idx = xp.where(valid, idx, f0[:, None])
    host = (lambda t: t) if xp is np else (lambda t: t.get())  # noqa: E731
    s_, z_, a_, i_ = host(s[idx] & valid[:, :, None]), host(zero[idx]), host(a[idx]), host(idx)
    nf, k = s_.shape[0], s_.shape[2]
    last = np.full((nf, k), -1, dtype=np.int64)
    is_set = np.zeros((nf, k), dtype=bool)
    amap = np.zeros(nf, dtype=np.float32)
    for d in range(depth):
        ad = a_[:, d]
        for kk in range(k):
            wr = s_[:, d, kk] & ~(is_set[:, kk] & (amap < ad))
            last[:, kk] = np.where(wr, i_[:, d], last[:, kk])
            is_set[:, kk] = np.where(wr, ~z_[:, d, kk], is_set[:, kk])
            amap = np.where(wr, ad, amap)
    wl[fix] = xp.asarray(last, dtype=wl.dtype)
    return wl


def _group_last(xp: Any, t: Array, first: Array, ends: Array) -> Array:
    """Per group ``g`` (entries ``first[g] .. ends[g]``, contiguous) and column ``k`` of the
    boolean ``t (E, K)``: the last entry with ``t`` set, -1 if none -- a ``(G, D, K)``
    maximum, ``D`` the largest group (here <= N)."""
    depth = int((ends - first).max()) + 1
    back = ends[:, None] - xp.arange(depth, dtype=xp.int64)[None, :]  # (G, D)
    inside = back >= first[:, None]
    bk = xp.maximum(back, 0)
    cand = xp.where((inside[:, :, None] & t[bk]), bk[:, :, None], -1)
    return cand.max(axis=1)
