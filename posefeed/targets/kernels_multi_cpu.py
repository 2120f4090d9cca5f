"""Compiled CPU kernels (numba) for the multi-animal codecs (``PartAffinityField``, ``DEKR``):
one call per batch that walks DeepLabCut's own loops -- batch, animal, limb / keypoint -- but
visits only the cells of each band row, window and square, and writes straight into the
(kept) output buffers. DeepLabCut's scalar arithmetic is followed step by step (float32 where
NumPy 2 keeps DeepLabCut's maths in float32, float64 where it promotes), so no closed form or
overlap bookkeeping is needed: later animals simply overwrite, as in DeepLabCut.

Without numba (``cpu_kernel`` returns None) the codecs run their vectorised NumPy version;
the two give the same outputs (PAF: equal; DEKR: the same separable window Gaussian, with
libm's ``expf`` here and NumPy's SIMD ``exp`` there: 2.4e-7 apart at most measured). The kernels are
module-level so numba's disk cache (``cache=True``) keeps their machine code between runs.

Buffers are float32 C-contiguous; the bookkeeping arrays are int32:

* PAF ``ext (B, L, H, 2)``: per map row of each limb, the columns ``[lo, hi)`` written
  (both channels); a kept buffer clears exactly those on the next call.
* DEKR ``win (B, K+1, N, 4)``: each drawn keypoint's window ``x0, x1, y0, y1`` (clipped,
  end exclusive; ``0, 0, 0, 0`` when not drawn), ``sq (B, N, 4)``: each instance's offset
  square, ``base (B, K+1)``: each heatmap weight map's base value (0 or ``bg_weight``).
"""
from __future__ import annotations

import math

import numpy as np

from posefeed.targets._numba import cpu_kernel

_SLACK = 2.0 ** -40  # relative margin on a band row's solved ends (see paf_encode)
_TINY = 2.0 ** -60  # |u| below this: the test does not depend on the column (whole row)


def _cols(lo: float, hi: float, s: float, inv_s: float, n: int) -> tuple[int, int]:
    """The cells ``[j0, j1]`` (inclusive, clipped to ``[0, n - 1]``) whose DeepLabCut grid
    value ``int(j*s + s/2)`` can lie in ``[lo, hi]`` (input px); NaN ends mean unbounded.
    ``j0 > j1``: none.

    ``int(j*s + s/2)`` lies in ``(j*s + s/2 - 1, j*s + s/2]`` (the float64 sum is rounded
    once more, < 1e-15 relative), so ``j >= (lo - s/2)/s`` and ``j < (hi + 1 - s/2)/s``;
    both bounds are widened by ``1e-9 (1 + |bound|)`` cells (far beyond the roundings of
    the sum and of ``* inv_s``)."""
    half = s / 2.0
    a = (lo - half) * inv_s
    if not a > -1.0:  # NaN, -inf, or before the map
        a = -1.0
    if a > n:
        a = float(n)
    b = (hi + 1.0 - half) * inv_s
    if not b < n + 1.0:
        b = n + 1.0
    if b < -2.0:
        b = -2.0
    j0 = int(math.ceil(a - 1e-9 * (1.0 + abs(a))))
    j1 = int(math.floor(b + 1e-9 * (1.0 + abs(b))))
    return max(j0, 0), min(j1, n - 1)


_cols_nb = cpu_kernel(_cols)


def _fill(flat, start, count, value):
    """``flat[start : start + count] = value`` on unsigned indices (numba then emits no
    negative-index handling and no view of the array: a plain vectorised store loop)."""
    u = np.uint64(start)
    for jj in range(np.uint64(max(count, 0))):
        flat[u + jj] = value


_fill_nb = cpu_kernel(_fill)


def paf_encode(kp, graph, gx, gy, stride, width, out, ext, clear):
    """DeepLabCut's ``PartAffinityFieldGenerator`` into ``out (B, 2L, H, W)``.

    ``kp (B, N, K, 3)`` float32 as given (a keypoint is used when ``v > 0`` and both
    coordinates are finite); ``graph (L, 2)`` int64; ``gx (W,)``, ``gy (H,)`` DeepLabCut's
    truncated grid as float64; ``stride``, ``width`` input px. ``out`` must be 0 except,
    when ``clear``, at the cells ``ext`` lists (the previous call's), which are cleared
    first; ``ext`` is then rewritten with this call's cells.

    Per limb (animal by animal, as DeepLabCut): the float32 constants ``u``, ``lo``, ``hi``,
    ``ortho`` as NumPy 2 evaluates DeepLabCut's scalar code, then the map rows the band can
    reach (``gy`` within ``w |u_x|`` of the ends -- exact for ``|u| = 1`` -- widened by
    ``2^-20`` of every magnitude involved, > 16x the float32 roundings of ``u``, ``lo``,
    ``hi``, ``ortho``), and on each the columns between the along and across tests' ends
    solved in float64 (widened by ``2^-40 S / |u|``, > 1000x the rounding of both the solve
    and DeepLabCut's tests; ``S`` bounds the magnitudes), both mapped to cells by
    :func:`_cols`. Every candidate cell is then tested with
    DeepLabCut's own float64 expressions, so the candidates only need to contain the band:
    the result is DeepLabCut's, by construction. Values ``u (1 - |across|)`` in float64,
    rounded to float32 once; a later animal's band overwrites, as in DeepLabCut.
    """
    B, N = kp.shape[0], kp.shape[1]
    L = graph.shape[0]
    H, W = out.shape[2], out.shape[3]
    zero = np.float32(0.0)
    flat = out.reshape(-1)  # indexed with unsigned ints: no negative-index handling in the loops
    if clear:
        for b in range(B):
            for li in range(L):
                for i in range(H):
                    j0 = ext[b, li, i, 0]
                    j1 = ext[b, li, i, 1]
                    if j1 > j0:
                        row = ((b * 2 * L + 2 * li) * H + i) * W
                        _fill_nb(flat, row + j0, j1 - j0, zero)
                        _fill_nb(flat, row + H * W + j0, j1 - j0, zero)
    for b in range(B):
        for li in range(L):
            for i in range(H):
                ext[b, li, i, 0] = W
                ext[b, li, i, 1] = 0
    if W == 0 or H == 0:
        return
    gmax = max(gx[W - 1], gy[H - 1])
    inv_s = 1.0 / stride
    for b in range(B):
        for n in range(N):
            for li in range(L):
                p = graph[li, 0]
                q = graph[li, 1]
                x1 = kp[b, n, p, 0]
                y1 = kp[b, n, p, 1]
                x2 = kp[b, n, q, 0]
                y2 = kp[b, n, q, 1]
                if not (kp[b, n, p, 2] > 0 and kp[b, n, q, 2] > 0):
                    continue
                if not (np.isfinite(x1) and np.isfinite(y1) and np.isfinite(x2) and np.isfinite(y2)):
                    continue
                # DeepLabCut's scalars: float32 differences and squares, a float64 sqrt,
                # float32 unit vector and extents (a Python float meets a float32 as float32)
                dx = x2 - x1
                dy = y2 - y1
                d = math.sqrt(np.float64(dx * dx + dy * dy))
                if not d > 0:
                    continue
                d32 = np.float32(d)
                ux = dx / d32
                uy = dy / d32
                a1 = ux * x1 + uy * y1
                a2 = ux * x2 + uy * y2
                ortho = y1 * ux - x1 * uy
                if not (a1 == a1 and a2 == a2):
                    continue  # NaN extent (overflowing coordinates): DeepLabCut's test never passes
                uxd = np.float64(ux)
                uyd = np.float64(uy)
                lod = np.float64(min(a1, a2))
                hid = np.float64(max(a1, a2))
                ord_ = np.float64(ortho)
                # rows: gy within [min y - w|ux|, max y + w|ux|] (exact for |u| = 1); slack
                # for |u| != 1 and the float32 extents: 2^-20 of every magnitude involved
                mag = 1.0 + abs(np.float64(x1)) + abs(np.float64(y1)) + abs(np.float64(x2)) \
                    + abs(np.float64(y2)) + width + gmax
                reach = width * abs(uxd) + mag * 2.0 ** -20
                ylo = min(np.float64(y1), np.float64(y2)) - reach
                yhi = max(np.float64(y1), np.float64(y2)) + reach
                i0, i1 = _cols_nb(ylo, yhi, stride, inv_s, H)
                S = 1.0 + gmax + width + abs(lod) + abs(hid) + abs(ord_)
                along_free = abs(uxd) < _TINY
                across_free = abs(uyd) < _TINY
                # the ends are solved with reciprocals (2 more roundings: inside the slack)
                iux = 0.0 if along_free else 1.0 / uxd
                iuy = 0.0 if across_free else 1.0 / uyd
                da = S * _SLACK * abs(iux)
                dc = S * _SLACK * abs(iuy)
                ch = 2 * li
                for i in range(i0, i1 + 1):
                    g_y = gy[i]
                    uyy = uyd * g_y
                    yux = g_y * uxd
                    lo = -np.inf
                    hi = np.inf
                    if not along_free:  # lo <= ux*gx + uy*gy <= hi
                        t0 = (lod - uyy) * iux
                        t1 = (hid - uyy) * iux
                        if uxd < 0:
                            t0, t1 = t1, t0
                        lo = t0 - da
                        hi = t1 + da
                    if not across_free:  # -w <= (gy*ux - gx*uy) - ortho <= w
                        c0 = yux - ord_
                        t0 = (c0 - width) * iuy
                        t1 = (c0 + width) * iuy
                        if uyd < 0:
                            t0, t1 = t1, t0
                        t0 -= dc
                        t1 += dc
                        if t0 > lo or not t0 == t0:
                            lo = t0
                        if t1 < hi or not t1 == t1:
                            hi = t1
                    if lo > hi:
                        continue
                    j0, j1 = _cols_nb(lo, hi, stride, inv_s, W)
                    if j1 < j0:
                        continue
                    # the row's candidate cells as 1-d views indexed from 0 (numba then
                    # drops its negative-index handling and vectorises the loop)
                    ux0 = np.uint64(((b * 2 * L + ch) * H + i) * W + j0)
                    uy0 = ux0 + np.uint64(H * W)
                    ug0 = np.uint64(j0)
                    for jj in range(np.uint64(j1 + 1 - j0)):
                        g_x = gx[ug0 + jj]
                        along = uxd * g_x + uyy
                        across = abs(((yux - g_x * uyd) - ord_) / width)
                        if along >= lod and along <= hid and across <= 1.0:
                            t = 1.0 - across
                            flat[ux0 + jj] = np.float32(uxd * t)
                            flat[uy0 + jj] = np.float32(uyd * t)
                    # what the next call clears: the candidates (the others are 0 or
                    # another animal's cells of this call)
                    if j0 < ext[b, li, i, 0]:
                        ext[b, li, i, 0] = j0
                    if j1 + 1 > ext[b, li, i, 1]:
                        ext[b, li, i, 1] = j1 + 1


paf_encode_nb = cpu_kernel(paf_encode)


def dekr_encode(kp, area_in, add_center, stride, r3, two_s2, r3c, two_s2c, radius, bg,
                hm, hmw, off, ow, amap, state, prev_win, prev_sq, prev_base, win, sq, base, area):
    """DeepLabCut's ``DEKRGenerator`` into ``hm, hmw (B, K+1, H, W)`` and ``off, ow (B, 2K,
    H, W)``; returns ``-1``, or ``b * N + n`` of the first instance with a keypoint on the
    map and no finite area > 0 (nothing is written then).

    ``kp (B, N, K', 3)`` float32 as given (``K' = K + 1`` with the centre last, or ``K``
    with ``add_center``: the centre is then the float64 mean of the keypoints with ``v > 0``,
    rounded to float32, ``v = 2``); non-finite coordinates count as 0 with ``v = min(v, 0)``
    (posefeed's rule). ``area_in (B, N)`` input px², NaN = unknown: the box of the visible
    keypoints, each side >= 1 px (``area`` receives the areas used). ``r3, two_s2`` (and the
    centre's ``r3c, two_s2c``): float32 ``3σ`` and ``2σ²`` in cells; ``radius``, ``bg``.
    ``amap (B, H, W)``: scratch (DeepLabCut's area map; only cells written in this call are
    read). ``state``: 0 = ``hm, off, ow`` are zero (``hmw`` anything), 1 = they hold the
    previous call's outputs described by ``prev_win, prev_sq, prev_base``, 2 = unknown
    (everything is rewritten). ``win, sq, base`` receive this call's (see the module).

    DeepLabCut's loop itself (animal by animal, keypoint by keypoint): window Gaussians
    ``exp(-dx²/2σ²) exp(-dy²/2σ²)`` in float32 (``DEKR._windows``: <= 3e-7 from DeepLabCut's
    ``exp(-(dx² + dy²)/2σ²)``, one exp per window row and column), max over animals; heatmap weight 1 on windows
    of animals after the last ``v == -1`` of that map, else 0 (a ``v == -1`` on the map)
    or ``bg``; offsets on the centre's square, skipped where the keypoint is set already
    and the area last written at the cell is smaller; "set" = a non-zero offset, as
    DeepLabCut tests it (an offset of exactly ``(0, 0)``, a keypoint on the cell, counts as
    unset; every call starts from zero offsets, kept buffers' previous squares cleared).
    """
    B, N, KIN = kp.shape[0], kp.shape[1], kp.shape[2]
    K1 = KIN + 1 if add_center else KIN
    K = K1 - 1
    H, W = hm.shape[2], hm.shape[3]
    f0 = np.float32(0.0)
    f1 = np.float32(1.0)
    s32 = np.float32(stride)
    half32 = np.float32(stride / 2)
    x = np.empty((B, N, K1), np.float32)
    y = np.empty((B, N, K1), np.float32)
    v = np.empty((B, N, K1), np.float32)
    # clean (non-finite -> 0, v = min(v, 0); NaN v -> 0), centres, areas
    for b in range(B):
        for n in range(N):
            cnt = 0
            sx = 0.0
            sy = 0.0
            bx0 = np.float32(np.inf)
            bx1 = np.float32(-np.inf)
            by0 = np.float32(np.inf)
            by1 = np.float32(-np.inf)
            for k in range(KIN):
                xx = kp[b, n, k, 0]
                yy = kp[b, n, k, 1]
                vv = kp[b, n, k, 2]
                if vv != vv:
                    vv = f0
                if not (np.isfinite(xx) and np.isfinite(yy)):
                    xx = f0
                    yy = f0
                    if vv > f0:
                        vv = f0
                x[b, n, k] = xx
                y[b, n, k] = yy
                v[b, n, k] = vv
                if vv > 0 and k < K:  # the box and the centre use the K keypoints
                    cnt += 1
                    sx += np.float64(xx)
                    sy += np.float64(yy)
                    bx0 = min(bx0, xx)
                    bx1 = max(bx1, xx)
                    by0 = min(by0, yy)
                    by1 = max(by1, yy)
            if add_center:
                if cnt > 0:
                    x[b, n, K] = np.float32(sx / cnt)
                    y[b, n, K] = np.float32(sy / cnt)
                    v[b, n, K] = np.float32(2.0)
                else:
                    x[b, n, K] = f0
                    y[b, n, K] = f0
                    v[b, n, K] = f0
            a = area_in[b, n]
            if a != a:
                if cnt > 0:
                    a = max(bx1 - bx0, f1) * max(by1 - by0, f1)
                else:
                    a = f0
            area[b, n] = a
    xs = np.empty((B, N, K1), np.float32)
    ys = np.empty((B, N, K1), np.float32)
    drawn = np.zeros((B, N, K1), np.bool_)
    for b in range(B):
        for n in range(N):
            any_kp = False
            for k in range(K1):
                xs[b, n, k] = (x[b, n, k] - half32) / s32
                ys[b, n, k] = (y[b, n, k] - half32) / s32
                if v[b, n, k] > 0 and not (xs[b, n, k] < 0 or ys[b, n, k] < 0
                                           or xs[b, n, k] >= W or ys[b, n, k] >= H):
                    drawn[b, n, k] = True
                    if k < K:
                        any_kp = True
            a = area[b, n]
            if any_kp and not (a > 0 and np.isfinite(a)):
                return b * N + n
    # the weight maps' base: 0 on a map with a v == -1 instance, else bg; its last one
    last_ign = np.full((B, K1), -1, np.int64)
    for b in range(B):
        for k in range(K1):
            for n in range(N):
                if v[b, n, k] == -1:
                    last_ign[b, k] = n
            base[b, k] = f0 if last_ign[b, k] >= 0 else bg
    # flat views, indexed with unsigned ints (see _fill)
    HW = H * W
    hmf = hm.reshape(-1)
    hwf = hmw.reshape(-1)
    offf = off.reshape(-1)
    owf = ow.reshape(-1)
    amf = amap.reshape(-1)
    # clear what the previous call wrote (or everything)
    if state == 2:
        hm[:] = f0
        off[:] = f0
        ow[:] = f0
    elif state == 1:
        for b in range(B):
            for k in range(K1):
                plane = (b * K1 + k) * HW
                for n in range(prev_win.shape[2]):
                    c0, c1, r0, r1 = prev_win[b, k, n, 0], prev_win[b, k, n, 1], prev_win[b, k, n, 2], prev_win[b, k, n, 3]
                    for i in range(r0, r1):
                        _fill_nb(hmf, plane + i * W + c0, c1 - c0, f0)
            for n in range(prev_sq.shape[1]):
                c0, c1, r0, r1 = prev_sq[b, n, 0], prev_sq[b, n, 1], prev_sq[b, n, 2], prev_sq[b, n, 3]
                if c1 <= c0:
                    continue
                for k in range(K):
                    if prev_win[b, k, n, 1] <= prev_win[b, k, n, 0]:
                        continue  # keypoint not drawn: no offsets written
                    plane = (b * 2 * K + 2 * k) * HW
                    for i in range(r0, r1):
                        at = plane + i * W + c0
                        _fill_nb(offf, at, c1 - c0, f0)
                        _fill_nb(offf, at + HW, c1 - c0, f0)
                        _fill_nb(owf, at, c1 - c0, f0)
                        _fill_nb(owf, at + HW, c1 - c0, f0)
    for b in range(B):
        for k in range(K1):
            bv = base[b, k]
            plane = (b * K1 + k) * HW
            if state != 1 or prev_base[b, k] != bv:
                _fill_nb(hwf, plane, HW, bv)
            else:  # the previous windows back to the base
                for n in range(prev_win.shape[2]):
                    c0, c1, r0, r1 = prev_win[b, k, n, 0], prev_win[b, k, n, 1], prev_win[b, k, n, 2], prev_win[b, k, n, 3]
                    for i in range(r0, r1):
                        _fill_nb(hwf, plane + i * W + c0, c1 - c0, bv)
    ex = np.empty(W, np.float32)  # a window's column and row factors
    ey = np.empty(H, np.float32)
    # DeepLabCut's loop
    for b in range(B):
        for n in range(N):
            # the centre's square: int(c) px -> (c - s/2) / s (float64) -+ r, truncated
            ctx = float(int(min(max(x[b, n, K], -1.0e7), 1.0e7)))
            cty = float(int(min(max(y[b, n, K], -1.0e7), 1.0e7)))
            csx = (ctx - stride / 2) / stride
            csy = (cty - stride / 2) / stride
            qx0 = max(int(csx - radius), 0)
            qy0 = max(int(csy - radius), 0)
            qx1 = min(int(csx + radius), W)
            qy1 = min(int(csy + radius), H)
            sq[b, n, 0] = qx0
            sq[b, n, 1] = qx1
            sq[b, n, 2] = qy0
            sq[b, n, 3] = qy1
            a = area[b, n]
            for k in range(K1):
                if not drawn[b, n, k]:
                    win[b, k, n, 0] = 0
                    win[b, k, n, 1] = 0
                    win[b, k, n, 2] = 0
                    win[b, k, n, 3] = 0
                    continue
                rr = r3c if k == K else r3
                ts = two_s2c if k == K else two_s2
                x0 = xs[b, n, k]
                y0 = ys[b, n, k]
                cc = max(int(math.floor((x0 - rr) - f1)), 0)
                aa = max(int(math.floor((y0 - rr) - f1)), 0)
                dd = min(int(math.ceil((x0 + rr) + np.float32(2.0))), W)
                bb = min(int(math.ceil((y0 + rr) + np.float32(2.0))), H)
                win[b, k, n, 0] = cc
                win[b, k, n, 1] = dd
                win[b, k, n, 2] = aa
                win[b, k, n, 3] = bb
                # separable: exp(-dx²/2σ²) exp(-dy²/2σ²), float32 (DEKR._windows: <= 3e-7
                # from DeepLabCut's exp(-(dx² + dy²)/2σ²))
                for jj in range(dd - cc):
                    dx = np.float32(cc + jj) - x0
                    ex[jj] = np.exp(-((dx * dx) / ts))
                for ii in range(bb - aa):
                    dy = np.float32(aa + ii) - y0
                    ey[ii] = np.exp(-((dy * dy) / ts))
                late = n > last_ign[b, k]
                plane = (b * K1 + k) * HW
                ncol = np.uint64(dd - cc)
                for ii in range(bb - aa):
                    gyv = ey[ii]
                    u = np.uint64(plane + (aa + ii) * W + cc)
                    for jj in range(ncol):
                        g = gyv * ex[jj]
                        if g > hmf[u + jj]:
                            hmf[u + jj] = g
                    if late:
                        _fill_nb(hwf, plane + (aa + ii) * W + cc, dd - cc, f1)
                if k == K or qx1 <= qx0:
                    continue
                wgt = f1 / np.sqrt(a)
                plane = (b * 2 * K + 2 * k) * HW
                ncol = np.uint64(qx1 - qx0)
                for i in range(qy0, qy1):
                    oy = np.float32(i) - y0
                    u = np.uint64(plane + i * W + qx0)
                    u2 = u + np.uint64(HW)
                    ua = np.uint64((b * H + i) * W + qx0)
                    xj = np.float32(qx0)
                    for jj in range(ncol):
                        # DLC: "set" is a non-zero offset (a (0, 0) write counts as unset; the
                        # offsets are 0 here at the start of every call), kept if amap < a; the
                        # weight first (non-zero: written in this call), so the offsets are
                        # read only where a smaller animal wrote (one load per cell, as before)
                        if not (owf[u + jj] != f0 and amf[ua + jj] < a
                                and (offf[u + jj] != f0 or offf[u2 + jj] != f0)):
                            offf[u + jj] = xj - x0
                            offf[u2 + jj] = oy
                            owf[u + jj] = wgt
                            owf[u2 + jj] = wgt
                            amf[ua + jj] = a
                        xj += f1
    return -1


dekr_encode_nb = cpu_kernel(dekr_encode)
