"""Target-codec benchmark: posefeed's vectorised codecs against faithful loop implementations.

* DeepLabCut 3.x ``HeatmapGaussianGenerator`` (with locref), re-implemented here the way DLC
  runs it: batch x keypoint x individual in Python, each update over the full map in NumPy
  on an ``(H, W, K)`` layout, then the transposes and ``torch.tensor`` copies DLC returns.
  Batch 2 x 37 keypoints at 64x64 (stride 4), 129x129 (stride 2), 241x321 (stride 2, a
  640x480 frame). Outputs are checked equal (float32, atol 1e-6).
* SimCC (RTMPose 256x192, batch 256 x 17) against a per-sample MMPose-style loop.
* MSRA heatmaps (64x48, batch 64 x 17) against a per-sample MMPose-style loop.
* GPU (when CUDA and CuPy exist): fused kernels vs the vectorised CuPy path, batch 64 x 37 at
  241x321 with locref and 64 x 17 heatmaps at 64x48.

Run: ``python benchmarks/bench_targets.py [--repeats 7] [--out benchmarks/results/targets-cpu.md]``.
Times are medians (and minima) of wall-clock repeats; the previous outputs are dropped before
each call, as in a training loop.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC


# --------------------------------------------------------------------------- references
def dlc_generator_loop(keypoints: np.ndarray, stride: float, width: int, height: int,
                       pos_dist_thresh: float = 17, locref_std: float = 7.2801,
                       to_torch: bool = True, locref: bool = True) -> dict[str, Any]:
    """DeepLabCut 3.x ``HeatmapGaussianGenerator.forward`` with locref, as DLC loops it.
    ``keypoints (B, N, K, 3)``; visibility: -1 -> weight 0, > 0 -> drawn, 0 -> nothing."""
    dist_thresh_sq = float(pos_dist_thresh) ** 2
    std = 2 * float(pos_dist_thresh) / 3
    locref_scale = 1.0 / locref_std
    batch_size = keypoints.shape[0]
    coords = keypoints.transpose((0, 2, 1, 3))  # iterate over bodyparts
    num_heatmaps = coords.shape[1]
    heatmap = np.zeros((batch_size, height, width, num_heatmaps), dtype=np.float32)
    weights = np.ones((batch_size, num_heatmaps, height, width), dtype=np.float32)
    locref_map = locref_mask = None
    if locref:
        locref_map = np.zeros((batch_size, height, width, 2 * num_heatmaps), dtype=np.float32)
        locref_mask = np.zeros_like(locref_map, dtype=int)
    grid = np.mgrid[:height, :width].transpose((1, 2, 0))
    grid[:, :, 0] = grid[:, :, 0] * stride + stride / 2
    grid[:, :, 1] = grid[:, :, 1] * stride + stride / 2
    for b in range(batch_size):
        for idx, group in enumerate(coords[b]):
            for kp in group:
                if kp[-1] == -1:
                    weights[b, idx] = 0.0
                elif kp[-1] > 0:
                    p = kp[..., :2].copy()[::-1]
                    dist = np.linalg.norm(grid - p, axis=2) ** 2
                    hm_j = np.exp(-dist / (2 * std ** 2))
                    heatmap[b, :, :, idx] = np.maximum(heatmap[b, :, :, idx], hm_j)
                    if locref:
                        lm = locref_map[b, :, :, 2 * idx:2 * idx + 2]
                        lm[:, :, 0] = (p[1] - grid.copy()[:, :, 1]) * locref_scale
                        lm[:, :, 1] = (p[0] - grid.copy()[:, :, 0]) * locref_scale
                        locref_mask[b, :, :, 2 * idx:2 * idx + 2][dist <= dist_thresh_sq] = 1
    out = {"heatmap": heatmap.transpose((0, 3, 1, 2)), "heatmap_weight": weights}
    if locref:
        out["locref"] = locref_map.transpose((0, 3, 1, 2))
        out["locref_weight"] = locref_mask.transpose((0, 3, 1, 2))
    if to_torch:
        import torch  # noqa: PLC0415

        out = {k: torch.tensor(v) for k, v in out.items()}
    return out


def simcc_loop(codec: SimCC, keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """MMPose ``SimCCLabel._generate_gaussian`` called once per sample (N = 1), stacked."""
    wx, wy = codec.label_size
    sx, sy = codec.sigma
    xs, ys, ws = [], [], []
    x = np.arange(0, wx, 1, dtype=np.float32)
    y = np.arange(0, wy, 1, dtype=np.float32)
    for sample in keypoints:
        kpts, vis = sample[..., :2], np.minimum(1, np.maximum(sample[..., 2], 0))
        n_, k_ = vis.shape
        split = np.around(kpts * codec.split_ratio).astype(np.int64)
        weight = vis.copy()
        tx = np.zeros((n_, k_, wx), np.float32)
        ty = np.zeros((n_, k_, wy), np.float32)
        for n in range(n_):
            for k in range(k_):
                if vis[n, k] < 0.5:
                    continue
                mu = split[n, k]
                left, top = mu - np.array([3 * sx, 3 * sy])
                right, bottom = mu + np.array([3 * sx, 3 * sy]) + 1
                if left >= wx or top >= wy or right < 0 or bottom < 0:
                    weight[n, k] = 0
                    continue
                tx[n, k] = np.exp(-((x - mu[0]) ** 2) / (2 * sx ** 2))
                ty[n, k] = np.exp(-((y - mu[1]) ** 2) / (2 * sy ** 2))
        xs.append(tx.max(axis=0))
        ys.append(ty.max(axis=0))
        ws.append(weight.max(axis=0))
    return {"x_labels": np.stack(xs), "y_labels": np.stack(ys), "keypoint_weight": np.stack(ws)}


def msra_loop(codec: GaussianHeatmap, keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """MMPose ``generate_gaussian_heatmaps`` called once per sample (N = 1), stacked."""
    w, h = codec.heatmap_size
    sigma = codec.sigma
    radius = sigma * 3
    gsize = 2 * radius + 1
    x = np.arange(0, gsize, 1, dtype=np.float32)
    yy = x[:, None]
    x0 = gsize // 2
    gauss = np.exp(-((x - x0) ** 2 + (yy - x0) ** 2) / (2 * sigma ** 2))
    hms, ws = [], []
    for sample in keypoints:
        kpts = sample[..., :2] / codec.scale_factor
        vis = np.minimum(1, np.maximum(sample[..., 2], 0))
        n_, k_ = vis.shape
        hm = np.zeros((k_, h, w), np.float32)
        weight = vis.copy()
        for n in range(n_):
            for k in range(k_):
                if vis[n, k] < 0.5:
                    continue
                mu = (kpts[n, k] + 0.5).astype(np.int64)
                left, top = (mu - radius).astype(np.int64)
                right, bottom = (mu + radius + 1).astype(np.int64)
                if left >= w or top >= h or right < 0 or bottom < 0:
                    weight[n, k] = 0
                    continue
                reg = hm[k, max(0, top):min(h, bottom), max(0, left):min(w, right)]
                g = gauss[max(0, -top):min(h, bottom) - top, max(0, -left):min(w, right) - left]
                np.maximum(reg, g, out=reg)
        hms.append(hm)
        ws.append(weight.max(axis=0))
    return {"heatmap": np.stack(hms), "keypoint_weight": np.stack(ws)}


# --------------------------------------------------------------------------- timing
def timeit(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median, min) seconds over ``repeats`` calls after one warm-up; outputs dropped."""
    out = fn()
    del out
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
        del out
    return statistics.median(ts), min(ts)


def write_floor(shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Allocate fresh float32 arrays of these shapes and write every element once."""
    out = []
    for shape in shapes:
        a = np.empty(shape, np.float32)
        a.fill(1.0)
        out.append(a)
    return out


def as_numpy(a: Any) -> np.ndarray:
    return a.numpy() if hasattr(a, "numpy") and not isinstance(a, np.ndarray) else np.asarray(a)


def check_equal(ours: dict, ref: dict) -> float:
    worst = 0.0
    for name, ref_arr in ref.items():
        r = as_numpy(ref_arr).astype(np.float32)
        o = ours[name]
        assert o.shape == r.shape and o.dtype == np.float32, name
        worst = max(worst, float(np.abs(o - r).max()))
    assert worst <= 1e-6, f"outputs differ by {worst}"
    return worst


def random_keypoints(b: int, n: int, k: int, w: float, h: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kps = np.empty((b, n, k, 3), np.float32)
    kps[..., 0] = rng.uniform(0, w, (b, n, k))
    kps[..., 1] = rng.uniform(0, h, (b, n, k))
    kps[..., 2] = rng.choice([0, 1, 2], (b, n, k), p=[0.1, 0.2, 0.7])
    return kps


def ms(t: float) -> str:
    return f"{t * 1e3:.2f}" if t < 1 else f"{t * 1e3:.0f}"


def cpu_section(repeats: int) -> list[str]:
    lines = ["## CPU (NumPy)", "",
             "| case | loop ms (median / min) | loop + torch.tensor ms | posefeed ms (median / min) "
             "| speed-up vs loop (median / min) | vs loop + torch (median) | output MB | max abs diff |",
             "|---|---|---|---|---|---|---|---|"]
    floors = ["", "Write floor for the DLC outputs (allocate fresh float32 arrays of the same shapes and "
              "fill them once, nothing computed):", "",
              "| map | output MB | allocate+fill ms (median / min) | posefeed encode ms | posefeed GB/s |",
              "|---|---|---|---|---|"]
    for (w, h, stride) in ((64, 64, 4), (129, 129, 2), (321, 241, 2)):
        kps = random_keypoints(2, 1, 37, w * stride, h * stride, seed=w)
        codec = DLCHeatmap(stride=stride, heatmap_size=(w, h))
        ours = codec.encode(kps)
        diff = check_equal(ours, dlc_generator_loop(kps, stride, w, h, to_torch=False))
        r = max(3, repeats // 2) if w * h > 20000 else repeats
        loop_t = timeit(lambda: dlc_generator_loop(kps, stride, w, h, to_torch=False), r)
        loop_torch_t = timeit(lambda: dlc_generator_loop(kps, stride, w, h, to_torch=True), r)
        ours_t = timeit(lambda: codec.encode(kps), repeats)
        mb = sum(a.nbytes for a in ours.values()) / 1e6
        shapes = [a.shape for a in ours.values()]
        floor_t = timeit(lambda: write_floor(shapes), repeats)
        floors.append(f"| {h}x{w} | {mb:.0f} | {ms(floor_t[0])} / {ms(floor_t[1])} | {ms(ours_t[0])} "
                      f"| {mb / 1e3 / ours_t[0]:.1f} |")
        lines.append(
            f"| DLC gaussian+locref 2x37 @ {h}x{w} (stride {stride}) | {ms(loop_t[0])} / {ms(loop_t[1])} "
            f"| {ms(loop_torch_t[0])} | {ms(ours_t[0])} / {ms(ours_t[1])} | {loop_t[0] / ours_t[0]:.1f}x / "
            f"{loop_t[1] / ours_t[1]:.1f}x | {loop_torch_t[0] / ours_t[0]:.1f}x | {mb:.0f} | {diff:.1e} |")
        print(lines[-1], flush=True)
    # DLC without locref at the large map (heatmap + weight only)
    kps = random_keypoints(2, 1, 37, 642, 482, seed=5)
    codec = DLCHeatmap(stride=2, heatmap_size=(321, 241), locref=False)
    ours = codec.encode(kps)
    diff = check_equal(ours, dlc_generator_loop(kps, 2, 321, 241, to_torch=False, locref=False))
    ours_t = timeit(lambda: codec.encode(kps), repeats)
    loop_t = timeit(lambda: dlc_generator_loop(kps, 2, 321, 241, to_torch=False, locref=False), 3)
    loop_torch_t = timeit(lambda: dlc_generator_loop(kps, 2, 321, 241, locref=False), 3)
    mb = sum(a.nbytes for a in ours.values()) / 1e6
    lines.append(f"| DLC gaussian, no locref 2x37 @ 241x321 (stride 2) | {ms(loop_t[0])} / {ms(loop_t[1])} "
                 f"| {ms(loop_torch_t[0])} | {ms(ours_t[0])} / {ms(ours_t[1])} | {loop_t[0] / ours_t[0]:.1f}x / "
                 f"{loop_t[1] / ours_t[1]:.1f}x | {loop_torch_t[0] / ours_t[0]:.1f}x | {mb:.0f} | {diff:.1e} |")
    print(lines[-1], flush=True)

    kps = random_keypoints(256, 1, 17, 192, 256, seed=1)
    sim = SimCC()
    ours = sim.encode(kps)
    diff = check_equal(ours, simcc_loop(sim, kps))
    loop_t = timeit(lambda: simcc_loop(sim, kps), 3)
    ours_t = timeit(lambda: sim.encode(kps), repeats)
    mb = sum(a.nbytes for a in ours.values()) / 1e6
    lines.append(f"| SimCC 256x17 (192x256, r=2) | {ms(loop_t[0])} / {ms(loop_t[1])} | - | {ms(ours_t[0])} / "
                 f"{ms(ours_t[1])} | {loop_t[0] / ours_t[0]:.1f}x / {loop_t[1] / ours_t[1]:.1f}x | - | {mb:.0f} "
                 f"| {diff:.1e} |")
    print(lines[-1], flush=True)

    kps = random_keypoints(64, 1, 17, 192, 256, seed=2)
    msra = GaussianHeatmap()
    ours = msra.encode(kps)
    diff = check_equal(ours, msra_loop(msra, kps))
    loop_t = timeit(lambda: msra_loop(msra, kps), 3)
    ours_t = timeit(lambda: msra.encode(kps), repeats)
    mb = sum(a.nbytes for a in ours.values()) / 1e6
    lines.append(f"| MSRA heatmap 64x17 @ 64x48 | {ms(loop_t[0])} / {ms(loop_t[1])} | - | {ms(ours_t[0])} / "
                 f"{ms(ours_t[1])} | {loop_t[0] / ours_t[0]:.1f}x / {loop_t[1] / ours_t[1]:.1f}x | - | {mb:.0f} "
                 f"| {diff:.1e} |")
    print(lines[-1], flush=True)
    print("\n".join(floors), flush=True)
    return lines + floors


def gpu_section(repeats: int) -> list[str]:
    lines = ["## GPU (CuPy)", ""]
    try:
        import cupy as cp  # noqa: PLC0415

        ok = cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        ok = False
    if not ok:
        lines.append("not measured (no CUDA)")
        print(lines[-1], flush=True)
        return lines
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name

    def gtime(fn: Callable[[], Any]) -> float:
        fn()
        cp.cuda.Device().synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        ts = []
        for _ in range(max(repeats, 10)):
            start.record()
            fn()
            end.record()
            end.synchronize()
            ts.append(cp.cuda.get_elapsed_time(start, end) * 1e3)  # us
        return statistics.median(ts)

    lines += [f"device: {name}", "", "| case | fused kernel us | vectorised CuPy us | ratio | output MB |",
              "|---|---|---|---|---|"]
    cases = [
        ("DLC gaussian+locref 64x37 @ 241x321", lambda uk: DLCHeatmap(stride=2, heatmap_size=(321, 241), use_kernel=uk),
         random_keypoints(64, 1, 37, 642, 482)),
        ("DLC plateau+locref 64x37 @ 241x321", lambda uk: DLCHeatmap(stride=2, heatmap_size=(321, 241), mode="plateau",
                                                                     use_kernel=uk), random_keypoints(64, 1, 37, 642, 482)),
        ("MSRA heatmap 64x17 @ 64x48", lambda uk: GaussianHeatmap(use_kernel=uk), random_keypoints(64, 1, 17, 192, 256)),
        ("MSRA heatmap 256x17 @ 64x48", lambda uk: GaussianHeatmap(use_kernel=uk), random_keypoints(256, 1, 17, 192, 256)),
    ]
    for label, make, kps in cases:
        g = cp.asarray(kps)
        fused, vect = make(True), make(False)
        a, b = fused.encode(g), vect.encode(g)
        for k in a:
            assert float(cp.abs(a[k] - b[k]).max()) <= 1e-6, k
        mb = sum(x.nbytes for x in a.values()) / 1e6
        tf, tv = gtime(lambda: fused.encode(g)), gtime(lambda: vect.encode(g))
        lines.append(f"| {label} | {tf:.0f} | {tv:.0f} | {tv / tf:.1f}x | {mb:.0f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "targets-cpu.md")
    args = ap.parse_args(argv)
    header = [
        "# posefeed target codecs: benchmark", "",
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}), "
        f"Python {sys.version.split()[0]}, NumPy {np.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "Medians of wall-clock repeats (min after the slash); outputs of the previous call dropped "
        "before each call. 'loop' = DeepLabCut's generator re-implemented as DLC runs it (NumPy part); "
        "'loop + torch.tensor' adds the transposed copies into torch tensors that DLC's generator "
        "returns. Outputs checked equal to the loop (float32, max abs diff shown).", "",
    ]
    print("\n".join(header), flush=True)
    lines = header + cpu_section(args.repeats) + [""] + gpu_section(args.repeats) + [""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
