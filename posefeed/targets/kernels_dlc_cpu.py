"""Compiled CPU kernel (numba) of DeepLabCut 3.0.2's heatmap + locref targets: one call writes
a whole batch's heatmaps, weight maps, locref maps and locref weights into the caller's output
arrays (NumPy views of the output tensors), in DeepLabCut's exact rules; used by
``posefeed.integrations.dlc_heatmap.DLCHeatmapTargets`` on CPU tensors (its torch version runs
on CUDA, with ``kernel="numpy"`` and without numba, and is what the tests compare this with).

The rules (``models/target_generators/heatmap_targets.py``; written out in the
``dlc_heatmap`` module docstring): per map ``(b, g)`` and member ``j`` in order, ``v == 0``
with gradient masking sets the weight map to ``background_weight``, else ``v == -1`` to 0,
else ``v > 0`` draws; grid centres ``gx, gy`` (px, truncated), offsets in float64 px.

* Gaussian: heatmap ``max_j exp(-d^2 / (2 sigma^2))`` as the float64 product of the per-axis
  exponentials, rounded to float32, written in the window of ``gauss`` cells around the
  keypoint (the values left out are below ``dlc_heatmap.GAUSS_EPS``); a drawn member with a
  NaN coordinate makes the whole map NaN (``np.maximum``); the locref maps (channels
  ``2g, 2g+1``) are ``((x - gx), (y - gy)) * locref_scale`` of the last drawn member, whole;
  the locref weights 1 where ``sqrt(d^2)^2 <= t^2`` for any drawn member.
* Plateau: 1 where ``d^2 <= t^2``; the locref maps take each drawn member's values on its disk
  (later members overwrite), 0 elsewhere; locref weights 1 on the union of the disks.

Kept buffers (the caller's default): the arrays hold the previous call's targets, and the
previous call's rectangles (``prev_hm``, ``prev_disk``: ``(B, G', M', 4)`` int64 ``[r0, r1,
c0, c1)`` per member, ``r0 = -1`` none) are zeroed first, so only what changes is written;
the new rectangles go to ``new_hm`` / ``new_disk`` (``(B, G, M, 4)``; may be the same arrays
as ``prev_*``: every clear is done before any draw). ``wmap (B, C)`` float32 holds the weight
value of each map (updated here: a map's weights are rewritten where it changes or when
``fresh``); ``lr_live (B, G)`` uint8 tells which Gaussian locref maps hold values (a map with
no drawn member is zeroed only if it was live; ``fresh``: every map is written).
"""
from __future__ import annotations

import math

import numpy as np

from posefeed.targets._numba import cpu_kernel, numba_or_none


def _copy8_py(dst, i, src, j) -> None:
    """``dst[i:i + 8] = src[j:j + 8]`` by normal stores (``stream8``'s stand-in)."""
    for t in range(8):
        dst[i + t] = src[j + t]


def _no_fence_py() -> None:
    """``store_fence``'s stand-in (normal stores need none)."""


def _streaming_stores() -> tuple:
    """Two numba intrinsics, or ``(None, None)`` without numba: ``stream8(dst, i, src, j)``
    stores ``src[j:j + 8]`` (float32, any alignment) at ``dst[i:i + 8]`` (float32, 32-byte
    aligned address) with a non-temporal store (LLVM ``!nontemporal``: x86 ``vmovntps``), and
    ``store_fence()`` orders those stores before the ones that follow (``fence seq_cst``).

    Why: the Gaussian locref (11.5 MB at 2 x 37 @ 121x161) is written whole every call into
    memory the model step has evicted from the caches; a normal store first reads each cache
    line (read for ownership). Measured here (2026-12-02, 11.5 MB, after evicting the caches):
    1.35 ms with NumPy's ``fill``, 0.51 ms with these stores (0.42 / 0.46 ms cache-warm)."""
    nb = numba_or_none()
    if nb is None:
        return None, None
    try:
        from llvmlite import ir  # noqa: PLC0415 - numba's own dependency
        from numba.core import cgutils, types  # noqa: PLC0415
        from numba.extending import intrinsic  # noqa: PLC0415
    except ImportError:  # a numba whose internals moved: the same values by normal stores
        return nb.njit(nogil=True)(_copy8_py), nb.njit(nogil=True)(_no_fence_py)

    @intrinsic
    def stream8(typingctx, dst, i, src, j):
        sig = types.void(dst, i, src, j)

        def codegen(context, builder, signature, args):
            dty, _, sty, _ = signature.args
            d, di, s, si = args
            dp = cgutils.get_item_pointer(context, builder, dty, context.make_array(dty)(
                context, builder, d), [di], wraparound=False, boundscheck=False)
            sp = cgutils.get_item_pointer(context, builder, sty, context.make_array(sty)(
                context, builder, s), [si], wraparound=False, boundscheck=False)
            vec = ir.VectorType(ir.FloatType(), 8)
            v = builder.load(builder.bitcast(sp, vec.as_pointer()), align=4)
            st = builder.store(v, builder.bitcast(dp, vec.as_pointer()), align=32)
            st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def store_fence(typingctx):
        def codegen(context, builder, signature, args):
            builder.fence("seq_cst")
            return context.get_dummy_value()

        return types.void(), codegen

    return stream8, store_fence


_stream8, _store_fence = _streaming_stores()


def _stream_x_py(flat, start, h, w, dbl) -> None:
    """``flat[start:start + h*w]`` = an ``(h, w)`` map of rows equal to ``dbl[:w]`` (float32;
    ``dbl`` is that row twice, ``w >= 8``): the whole 64-byte lines by non-temporal stores
    (``_stream8``), the partial lines at the two ends by normal stores."""
    n = h * w
    head = min(((64 - (flat.ctypes.data + 4 * start) % 64) % 64) // 4, n)
    for k in range(head):
        flat[start + k] = dbl[k % w]
    k, j = head, head % w  # j: the column of flat[start + k]
    while k + 8 <= n:
        _stream8(flat, start + k, dbl, j)  # dbl[j:j + 8] is the row from column j on, wrapped
        j += 8
        if j >= w:
            j -= w
        k += 8
    for kk in range(k, n):
        flat[start + kk] = dbl[kk % w]


def _stream_y_py(flat, start, h, w, ycp) -> None:
    """``flat[start:start + h*w]`` = an ``(h, w)`` map whose row ``i`` is ``ycp[8 i]``
    (float32; ``ycp[8 i:8 i + 8]`` holds 8 copies, ``8 (h + 1)`` values, ``w >= 8``), written
    as ``_stream_x``."""
    n = h * w
    head = min(((64 - (flat.ctypes.data + 4 * start) % 64) % 64) // 4, n)
    for k in range(head):
        flat[start + k] = ycp[8 * (k // w)]
    k, i, j = head, head // w, head % w  # flat[start + k] is row i, column j
    while k + 8 <= n:
        # 8 values from column j: all of row i, or (w >= 8) row i then row i + 1, which
        # ycp holds from 8 i + (j + 8 - w) on
        over = j + 8 - w
        _stream8(flat, start + k, ycp, 8 * i + (over if over > 0 else 0))
        j += 8
        if j >= w:
            j -= w
            i += 1
        k += 8
    for kk in range(k, n):
        flat[start + kk] = ycp[8 * (kk // w)]


def _window_start_py(p: float, radius: float, stride: float, upper: int) -> int:
    """First cell of the window of the cells whose centre can be within ``radius`` px of
    ``p`` (px, not NaN), clamped into ``[0, upper]``; the same arithmetic as
    ``dlc_heatmap.window_starts`` (its docstring has the argument)."""
    a1 = np.ceil(p * (1.0 / stride) - (radius / stride + 1.5))  # +-inf: clamped below
    if a1 < 0:
        return 0
    if a1 > upper:
        return upper
    return int(a1)


def _fill_rect_py(arr, b, ch, r0, r1, c0, c1, value) -> None:
    """``arr[b, ch, r0:r1, c0:c1] = value`` (``arr`` C-contiguous, 4-d)."""
    flat = arr.reshape(arr.size)
    h, w = arr.shape[2], arr.shape[3]
    base = (b * arr.shape[1] + ch) * h * w + c0
    for i in range(r0, r1):
        o = base + i * w
        flat[o:o + c1 - c0] = value  # a slice fill: 2x the element loop (measured)


_window_start = cpu_kernel(_window_start_py)
_fill_rect = cpu_kernel(_fill_rect_py)
_stream_x = cpu_kernel(_stream_x_py)
_stream_y = cpu_kernel(_stream_y_py)


def _dlc_heatmap_targets_py(gkp, gx, gy, heatmap, weights, wmap, locref, mask,
                            prev_hm, prev_disk, new_hm, new_disk, lr_live,
                            gaussian, gradient_masking, background_weight, generate_locref,
                            dist_thresh, gauss_radius, std, locref_scale, stride,
                            gauss_rows, gauss_cols, disk_rows, disk_cols, fresh) -> None:
    """Write DeepLabCut's targets for ``gkp (B, G, M, 3)`` float64 ``(x, y, v)`` (input px;
    map ``g``'s members ``j``) into ``heatmap, weights (B, C, H, W)`` float32 and, with
    ``generate_locref``, ``locref (B, 2C, H, W)`` float32 and ``mask (B, 2C, H, W)`` int64
    (maps ``>= G`` are left as they are: 0, weights 1). ``gx (W,)``, ``gy (H,)``: grid centres,
    float64 px; windows: ``gauss_rows x gauss_cols`` (Gaussian) and ``disk_rows x disk_cols``
    cells (the disk of radius ``dist_thresh`` px). See the module docstring for the rest."""
    nb, ng, nm = gkp.shape[0], gkp.shape[1], gkp.shape[2]
    nc, h, w = heatmap.shape[1], heatmap.shape[2], heatmap.shape[3]
    t2 = dist_thresh * dist_thresh
    k2 = -1.0 / (2.0 * std * std)
    # 1. zero what the previous call wrote (kept buffers)
    for b in range(prev_hm.shape[0]):
        for g in range(prev_hm.shape[1]):
            for j in range(prev_hm.shape[2]):
                if gaussian and prev_hm[b, g, j, 0] >= 0:
                    _fill_rect(heatmap, b, g, prev_hm[b, g, j, 0], prev_hm[b, g, j, 1],
                               prev_hm[b, g, j, 2], prev_hm[b, g, j, 3], 0.0)
                r0, r1 = prev_disk[b, g, j, 0], prev_disk[b, g, j, 1]
                if r0 < 0:
                    continue
                c0, c1 = prev_disk[b, g, j, 2], prev_disk[b, g, j, 3]
                if not gaussian:
                    _fill_rect(heatmap, b, g, r0, r1, c0, c1, 0.0)
                if generate_locref:
                    _fill_rect(mask, b, 2 * g, r0, r1, c0, c1, 0)
                    _fill_rect(mask, b, 2 * g + 1, r0, r1, c0, c1, 0)
                    if not gaussian:
                        _fill_rect(locref, b, 2 * g, r0, r1, c0, c1, 0.0)
                        _fill_rect(locref, b, 2 * g + 1, r0, r1, c0, c1, 0.0)
    # 2. weight maps: one value per map, set by the last member that sets one
    for b in range(nb):
        for c in range(nc):
            val = 1.0
            if c < ng:
                for j in range(nm):
                    v = gkp[b, c, j, 2]
                    if gradient_masking and v == 0:
                        val = background_weight
                    elif v == -1:
                        val = 0.0
            val32 = np.float32(val)
            if fresh or val32 != wmap[b, c]:
                wmap[b, c] = val32
                _fill_rect(weights, b, c, 0, h, 0, w, val32)
    # 3. draw, map by map, members in order
    ex = np.empty(max(gauss_cols, disk_cols), np.float64)
    ey = np.empty(max(gauss_rows, disk_rows), np.float64)
    hm_flat = heatmap.reshape(heatmap.size)
    mk_flat = mask.reshape(mask.size)
    lx_col = np.empty(max(disk_cols, 1), np.float32)  # plateau locref x of the disk's columns
    lr_row = np.empty(2 * w, np.float32)    # the x locref row, twice
    lr_ycp = np.empty(8 * (h + 1), np.float32)  # the y locref of row i, 8 times from 8 i
    lr_flat = locref.reshape(locref.size)
    nc2, hw = locref.shape[1], h * w
    for b in range(nb):
        for g in range(ng):
            nan_map = False
            last = -1
            for j in range(nm):
                new_hm[b, g, j, 0] = -1
                new_disk[b, g, j, 0] = -1
                if not gkp[b, g, j, 2] > 0:
                    continue
                last = j
                x, y = gkp[b, g, j, 0], gkp[b, g, j, 1]
                if math.isnan(x) or math.isnan(y):
                    # DeepLabCut: d^2 is NaN on the whole map; the Gaussian heatmap becomes
                    # NaN everywhere (np.maximum keeps it), no cell is inside the disk
                    if gaussian and not nan_map:
                        _fill_rect(heatmap, b, g, 0, h, 0, w, np.float32(np.nan))
                        nan_map = True
                        new_hm[b, g, j, 0], new_hm[b, g, j, 1] = 0, h
                        new_hm[b, g, j, 2], new_hm[b, g, j, 3] = 0, w
                    continue
                if gaussian and not nan_map:
                    r0 = _window_start(y, gauss_radius, stride, h - gauss_rows)
                    c0 = _window_start(x, gauss_radius, stride, w - gauss_cols)
                    for i in range(gauss_rows):
                        d = gy[r0 + i] - y
                        ey[i] = math.exp(d * d * k2)
                    for i in range(gauss_cols):
                        d = gx[c0 + i] - x
                        ex[i] = math.exp(d * d * k2)
                    base = ((b * nc + g) * h + r0) * w + c0
                    for i in range(gauss_rows):  # a flat row view, max(): LLVM vectorises it
                        e, o = ey[i], base + i * w
                        hrow = hm_flat[o:o + gauss_cols]
                        for jj in range(gauss_cols):
                            hrow[jj] = max(hrow[jj], np.float32(e * ex[jj]))
                    new_hm[b, g, j, 0], new_hm[b, g, j, 1] = r0, r0 + gauss_rows
                    new_hm[b, g, j, 2], new_hm[b, g, j, 3] = c0, c0 + gauss_cols
                if gaussian and not generate_locref:
                    continue
                # the disk d^2 <= t^2 (plateau), sqrt(d^2)^2 <= t^2 (Gaussian locref weights)
                r0 = _window_start(y, dist_thresh, stride, h - disk_rows)
                c0 = _window_start(x, dist_thresh, stride, w - disk_cols)
                for i in range(disk_rows):
                    d = gy[r0 + i] - y
                    ey[i] = d * d
                for i in range(disk_cols):
                    d = gx[c0 + i] - x
                    ex[i] = d * d
                for i in range(disk_cols):
                    lx_col[i] = np.float32((x - gx[c0 + i]) * locref_scale)
                # flat row views and branch-free selects (LLVM vectorises them)
                hm0 = ((b * nc + g) * h + r0) * w + c0
                lr0 = ((b * nc2 + 2 * g) * h + r0) * w + c0
                for i in range(disk_rows):
                    ly = np.float32((y - gy[r0 + i]) * locref_scale)
                    dy2 = ey[i]
                    o = hm0 + i * w
                    hrow = hm_flat[o:o + disk_cols]
                    o = lr0 + i * w
                    m0, m1 = mk_flat[o:o + disk_cols], mk_flat[o + hw:o + hw + disk_cols]
                    l0, l1 = lr_flat[o:o + disk_cols], lr_flat[o + hw:o + hw + disk_cols]
                    for jj in range(disk_cols):
                        d2 = dy2 + ex[jj]
                        if gaussian:
                            nrm = math.sqrt(d2)
                            d2 = nrm * nrm
                        inside = d2 <= t2
                        if not gaussian:
                            hrow[jj] = 1.0 if inside else hrow[jj]
                        if generate_locref:
                            m0[jj] = 1 if inside else m0[jj]
                            m1[jj] = 1 if inside else m1[jj]
                            if not gaussian:
                                l0[jj] = lx_col[jj] if inside else l0[jj]
                                l1[jj] = ly if inside else l1[jj]
                new_disk[b, g, j, 0], new_disk[b, g, j, 1] = r0, r0 + disk_rows
                new_disk[b, g, j, 2], new_disk[b, g, j, 3] = c0, c0 + disk_cols
            if not (gaussian and generate_locref):
                continue
            # 4. Gaussian locref: the last drawn member's offsets on the whole map
            if last < 0:
                if fresh or lr_live[b, g]:
                    _fill_rect(locref, b, 2 * g, 0, h, 0, w, 0.0)
                    _fill_rect(locref, b, 2 * g + 1, 0, h, 0, w, 0.0)
                lr_live[b, g] = 0
                continue
            lr_live[b, g] = 1
            x, y = gkp[b, g, last, 0], gkp[b, g, last, 1]
            for jj in range(w):
                lr_row[jj] = np.float32((x - gx[jj]) * locref_scale)
                lr_row[w + jj] = lr_row[jj]
            for i in range(h):
                lr_y = np.float32((y - gy[i]) * locref_scale)
                for t in range(8):
                    lr_ycp[8 * i + t] = lr_y
            if w >= 8:  # non-temporal stores: the memory is not read first
                base = (b * nc2 + 2 * g) * hw
                _stream_x(lr_flat, base, h, w, lr_row)
                _stream_y(lr_flat, base + hw, h, w, lr_ycp)
            else:
                for i in range(h):
                    for jj in range(w):
                        locref[b, 2 * g, i, jj] = lr_row[jj]
                        locref[b, 2 * g + 1, i, jj] = lr_ycp[8 * i]
    _store_fence()


dlc_heatmap_targets = cpu_kernel(_dlc_heatmap_targets_py)
