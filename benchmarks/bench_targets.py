"""Target-codec benchmark: posefeed's vectorised codecs against faithful loop implementations.

* DeepLabCut 3.x ``HeatmapGaussianGenerator.forward`` (with locref), re-implemented here the
  way DLC runs it (read from DLC's source,
  ``deeplabcut/pose_estimation_pytorch/models/target_generators/heatmap_targets.py``):
  keypoints arrive as a torch tensor (``.cpu().numpy()``), batch x keypoint x individual in
  Python, each ``update`` over the full map in NumPy on an ``(H, W, K)`` layout (``v == 0`` and
  ``v == -1`` zero the weight, as DLC's current source does), then the transposes and the
  four ``torch.tensor`` copies DLC returns. posefeed runs ``DLCHeatmap(...,
  zero_weight_unlabeled=True)`` (DLC's rule) and wraps its outputs with ``torch.from_numpy``.
  Batch 2 x 37 keypoints at 64x64 (stride 4), 129x129 (stride 2), 241x321 (stride 2, a
  640x480 frame). Outputs are checked equal (float32, atol 1e-6) for every batch used.
  posefeed is timed three ways: ``encode(kp)`` (fresh arrays), ``encode(kp, out=buffers)``
  (caller-kept buffers, every element rewritten) and ``codec.encoder()`` (kept buffers that
  rewrite only what changed in the sparse outputs; what the DALI adapter runs on the CPU).
* SimCC (RTMPose 256x192, batch 256 x 17) against a per-sample MMPose-style loop.
* MSRA heatmaps (64x48, batch 64 x 17) against a per-sample MMPose-style loop.
* GPU (when CUDA and CuPy exist): fused kernels vs the vectorised CuPy path, batch 64 x 37 at
  241x321 with locref and 64 x 17 heatmaps at 64x48.

Run: ``python benchmarks/bench_targets.py [--repeats 21] [--baseline-rev REV]
[--out benchmarks/results/targets-cpu.md]``. Every timed call gets the next of 8 different
keypoint batches (so kept buffers never hold the answer already); variants are timed
round-robin within each repeat (the machine's load drifts); medians (and minima) reported;
the previous outputs are dropped before each call, as in a training loop.
``--baseline-rev`` also times ``DLCHeatmap.encode`` as it was at that git revision.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posefeed.targets import DLCHeatmap, GaussianHeatmap, SimCC

N_BATCHES = 8


# --------------------------------------------------------------------------- references
class DLCGaussianGenerator:
    """DeepLabCut 3.x ``HeatmapGaussianGenerator`` (``HeatmapGenerator.forward`` + the
    Gaussian ``update``), keypoint mode, as DLC runs it. ``to_torch=False`` stops before the
    ``torch.tensor`` copies (the NumPy part only: lighter than DLC)."""

    def __init__(self, num_heatmaps: int, pos_dist_thresh: float = 17, locref_std: float = 7.2801,
                 generate_locref: bool = True) -> None:
        self.num_heatmaps = num_heatmaps
        self.dist_thresh = float(pos_dist_thresh)
        self.dist_thresh_sq = self.dist_thresh ** 2
        self.std = 2 * self.dist_thresh / 3
        self.generate_locref = generate_locref
        self.locref_scale = 1.0 / locref_std

    def forward(self, stride: float, outputs: dict[str, Any], labels: dict[str, Any],
                to_torch: bool = True) -> dict[str, Any]:
        import torch  # noqa: PLC0415

        stride_y, stride_x = stride, stride
        batch_size, _, height, width = outputs["heatmap"].shape
        coords = labels["keypoints"].cpu().numpy()
        if len(coords.shape) == 3:
            coords = coords.reshape((batch_size, 1, *coords.shape[1:]))
        coords = coords.transpose((0, 2, 1, 3))  # iterate over bodyparts
        map_size = batch_size, height, width
        heatmap = np.zeros((*map_size, self.num_heatmaps), dtype=np.float32)
        weights = np.ones((batch_size, coords.shape[1], height, width), dtype=np.float32)
        locref_map, locref_mask = None, None
        if self.generate_locref:
            locref_map = np.zeros((*map_size, self.num_heatmaps * 2), dtype=np.float32)
            locref_mask = np.zeros_like(locref_map, dtype=int)
        grid = np.mgrid[:height, :width].transpose((1, 2, 0))
        grid[:, :, 0] = grid[:, :, 0] * stride_y + stride_y / 2
        grid[:, :, 1] = grid[:, :, 1] * stride_x + stride_x / 2
        for b in range(batch_size):
            for heatmap_idx, group_keypoints in enumerate(coords[b]):
                for keypoint in group_keypoints:
                    if keypoint[-1] == 0:
                        weights[b, heatmap_idx] = 0.0
                    elif keypoint[-1] == -1:
                        weights[b, heatmap_idx] = 0.0
                    elif keypoint[-1] > 0:
                        self.update(heatmap=heatmap[b, :, :, heatmap_idx], grid=grid,
                                    keypoint=keypoint[..., :2],
                                    locref_map=self.get_locref(locref_map, b, heatmap_idx),
                                    locref_mask=self.get_locref(locref_mask, b, heatmap_idx))
        heatmap = heatmap.transpose((0, 3, 1, 2))
        conv = (lambda a: torch.tensor(a, device=outputs["heatmap"].device)) if to_torch else (lambda a: a)
        target = {"heatmap": {"target": conv(heatmap), "weights": conv(weights)}}
        if self.generate_locref:
            locref_map = locref_map.transpose((0, 3, 1, 2))
            locref_mask = locref_mask.transpose((0, 3, 1, 2))
            target["locref"] = {"target": conv(locref_map), "weights": conv(locref_mask)}
        return target

    def get_locref(self, locref_map_or_mask: np.ndarray | None, batch_idx: int, heatmap_idx: int):
        if not self.generate_locref:
            return None
        start_idx = 2 * heatmap_idx
        return locref_map_or_mask[batch_idx, :, :, start_idx:start_idx + 2]

    def update(self, heatmap: np.ndarray, grid: np.ndarray, keypoint: np.ndarray,
               locref_map: np.ndarray | None, locref_mask: np.ndarray | None) -> None:
        keypoint = keypoint.copy()[::-1]
        dist = np.linalg.norm(grid - keypoint, axis=2) ** 2
        heatmap_j = np.exp(-dist / (2 * self.std ** 2))
        heatmap[:, :] = np.maximum(heatmap, heatmap_j)
        if locref_map is not None:
            dx = keypoint[1] - grid.copy()[:, :, 1]
            dy = keypoint[0] - grid.copy()[:, :, 0]
            locref_map[:, :, 0] = dx * self.locref_scale
            locref_map[:, :, 1] = dy * self.locref_scale
        if locref_mask is not None:
            locref_mask[dist <= self.dist_thresh_sq] = 1


def dlc_generator_loop(keypoints: np.ndarray, stride: float, width: int, height: int,
                       pos_dist_thresh: float = 17, locref_std: float = 7.2801,
                       to_torch: bool = True, locref: bool = True) -> dict[str, Any]:
    """:class:`DLCGaussianGenerator` on ``keypoints (B, N, K, 3)`` (NumPy; handed to it as a
    torch tensor, as DLC's dataloader does) -> flat ``{heatmap, heatmap_weight, locref,
    locref_weight}`` (torch tensors with ``to_torch``)."""
    import torch  # noqa: PLC0415

    b, _, k, _ = keypoints.shape
    gen = DLCGaussianGenerator(k, pos_dist_thresh, locref_std, generate_locref=locref)

    class _Shape:  # only .shape / .device of the model outputs are read
        def __init__(self, shape: tuple[int, ...]) -> None:
            self.shape, self.device = shape, torch.device("cpu")

    outputs = {"heatmap": _Shape((b, k, height, width)), "locref": _Shape((b, 2 * k, height, width))}
    t = gen.forward(stride, outputs, {"keypoints": torch.from_numpy(keypoints)}, to_torch=to_torch)
    out = {"heatmap": t["heatmap"]["target"], "heatmap_weight": t["heatmap"]["weights"]}
    if locref:
        out["locref"] = t["locref"]["target"]
        out["locref_weight"] = t["locref"]["weights"]
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
    return round_robin({"f": fn}, repeats)["f"]


def round_robin(fns: dict[str, Callable[[], Any]], repeats: int,
                few: dict[str, int] | None = None) -> dict[str, tuple[float, float]]:
    """Time several variants interleaved: each repeat calls every variant once (those in
    ``few`` only in ``few[name]`` repeats spread evenly over the run). One warm-up call each;
    outputs are dropped before the next call. Returns ``{name: (median, min)}`` seconds."""
    few = few or {}
    for fn in fns.values():
        out = fn()
        del out
    ts: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            n_runs = min(few.get(name, repeats), repeats)
            if (r * n_runs) // repeats == ((r + 1) * n_runs) // repeats:
                continue  # runs exactly n_runs times, spread over the repeats
            t0 = time.perf_counter()
            out = fn()
            ts[name].append(time.perf_counter() - t0)
            del out
    return {name: (statistics.median(v), min(v)) for name, v in ts.items()}


def cycle(batches: list[np.ndarray], fn: Callable[[np.ndarray], Any]) -> Callable[[], Any]:
    """A zero-argument callable that applies ``fn`` to the next batch of ``batches``."""
    state = {"i": 0}

    def call() -> Any:
        state["i"] = (state["i"] + 1) % len(batches)
        return fn(batches[state["i"]])

    return call


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
        o = as_numpy(ours[name])
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


def mm(t: tuple[float, float]) -> str:
    return f"{ms(t[0])} / {ms(t[1])}"


def torch_wrap(out: dict[str, np.ndarray]) -> dict[str, Any]:
    """posefeed's outputs as torch tensors without a copy (DLC's generator returns tensors)."""
    import torch  # noqa: PLC0415

    return {k: torch.from_numpy(v) for k, v in out.items()}


def load_baseline(rev: str) -> Any:
    """``posefeed/targets/dlc_heatmap.py`` as it was at git revision ``rev``, as a module."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:posefeed/targets/dlc_heatmap.py"], cwd=root,
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "dlc_heatmap_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("dlc_heatmap_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def dlc_case(w: int, h: int, stride: int, repeats: int, locref: bool, baseline: Any, rev: str | None
             ) -> tuple[dict[str, tuple[float, float]], float, float]:
    """Time the DLC generator and posefeed's DLCHeatmap paths on one map size."""
    batches = [random_keypoints(2, 1, 37, w * stride, h * stride, seed=100 * w + s) for s in range(N_BATCHES)]
    codec = DLCHeatmap(stride=stride, heatmap_size=(w, h), locref=locref, zero_weight_unlabeled=True)
    shapes = codec.output_shapes(2, 37)
    bufs = {name: np.empty(shape, np.float32) for name, shape in shapes.items()}
    enc = codec.encoder()
    diff = 0.0
    for kp in batches:  # every variant, consecutive different batches (exercises the kept buffers)
        ref = dlc_generator_loop(kp, stride, w, h, to_torch=True, locref=locref)
        for ours in (codec.encode(kp), codec.encode(kp, out=bufs), enc(kp)):
            diff = max(diff, check_equal(ours, ref))
    fns: dict[str, Callable[[], Any]] = {
        "dlc": cycle(batches, lambda kp: dlc_generator_loop(kp, stride, w, h, to_torch=True, locref=locref)),
        "dlc_np": cycle(batches, lambda kp: dlc_generator_loop(kp, stride, w, h, to_torch=False, locref=locref)),
        "fresh": cycle(batches, lambda kp: torch_wrap(codec.encode(kp))),
        "out": cycle(batches, lambda kp: torch_wrap(codec.encode(kp, out=bufs))),
        "encoder": cycle(batches, lambda kp: torch_wrap(enc.encode_shared(kp))),
    }
    if baseline is not None:
        old = baseline.DLCHeatmap(stride=stride, heatmap_size=(w, h), locref=locref, zero_weight_unlabeled=True)
        for kp in batches[:2]:
            check_equal(old.encode(kp), codec.encode(kp))
        fns["baseline"] = cycle(batches, lambda kp: torch_wrap(old.encode(kp)))
    shape_list = list(shapes.values())
    fns["floor_fresh"] = lambda: write_floor(shape_list)
    fns["floor_fill"] = lambda: [b.fill(1.0) for b in bufs.values()]
    srcs = {name: np.ones(shape, np.float32) for name, shape in shapes.items()}
    fns["floor_copyto"] = lambda: [np.copyto(bufs[n], srcs[n]) for n in bufs]
    fns["floor_memset"] = lambda: [ctypes.memset(b.ctypes.data, 0, b.nbytes) for b in bufs.values()]
    slow = max(3, repeats // 3) if w * h > 20000 else repeats
    t = round_robin(fns, repeats, few={"dlc": slow, "dlc_np": slow})
    mb = sum(int(np.prod(sh)) * 4 for sh in shape_list) / 1e6
    for b in bufs.values():  # restore the kept buffers' contents before leaving (nothing reads them)
        b.fill(0)
    return t, mb, diff


def cpu_section(repeats: int, rev: str | None) -> list[str]:
    baseline = load_baseline(rev) if rev else None
    lines = ["## CPU (NumPy)", "",
             "### DeepLabCut heatmap + locref targets, batch 2 x 37 keypoints", "",
             "Times in ms, median / min. 'DLC forward' = DLC's generator as DLC runs it (loop + the "
             "`torch.tensor` copies it returns; the reference for the speed-ups); 'NumPy part' = the "
             "same loop without those copies (lighter than DLC). posefeed: `encode()` = fresh arrays; "
             "`encode(out=)` = caller-kept buffers, every element rewritten; `encoder()` = kept buffers, "
             "only the changed sparse cells / weight maps rewritten (`BufferedEncoder.encode_shared`, "
             "what the DALI adapter runs on the CPU); all three wrapped with `torch.from_numpy` (no copy)."
             + (f" 'previous' = `DLCHeatmap.encode` at git revision `{rev}`." if rev else ""), "",
             "| case | DLC forward | NumPy part | " + ("previous encode() | " if rev else "")
             + "encode() | encode(out=) | encoder() | output MB | max abs diff |",
             "|---|---|---|" + ("---|" if rev else "") + "---|---|---|---|---|"]
    ratios = ["", "Speed-up = DLC time / posefeed time, from the medians (and from the minima, the least "
              "disturbed calls, after the slash):", "",
              "| case | posefeed path | over DLC forward | over the NumPy part only |", "|---|---|---|---|"]
    floors = ["", "Memory floors on the same outputs, timed in the same round-robin (nothing computed): "
              "fresh = `np.empty` + `fill` of every output (allocation and first-touch page faults "
              "included); kept = the same buffers every call, `ndarray.fill` / `np.copyto` from another "
              "array / libc `memset` (non-temporal stores).", "",
              "| map | output MB | fresh alloc+fill | kept: fill | kept: copyto | kept: memset "
              "| encode() | encoder() | encoder() GB/s of outputs |",
              "|---|---|---|---|---|---|---|---|---|"]
    cases = [(64, 64, 4, True), (129, 129, 2, True), (321, 241, 2, True), (321, 241, 2, False)]
    for (w, h, stride, locref) in cases:
        t, mb, diff = dlc_case(w, h, stride, repeats, locref, baseline, rev)
        label = f"{'gaussian+locref' if locref else 'gaussian, no locref'} @ {h}x{w} (stride {stride})"
        lines.append(f"| {label} | {mm(t['dlc'])} | {mm(t['dlc_np'])} | "
                     + (f"{mm(t['baseline'])} | " if rev else "")
                     + f"{mm(t['fresh'])} | {mm(t['out'])} | {mm(t['encoder'])} | {mb:.0f} | {diff:.1e} |")
        print(lines[-1], flush=True)

        paths = ([("baseline", f"previous encode() ({rev})")] if rev else []) + [
            ("fresh", "encode()"), ("out", "encode(out=)"), ("encoder", "encoder()")]
        for name, what in paths:
            ratios.append(f"| {label} | {what} | {t['dlc'][0] / t[name][0]:.1f}x / {t['dlc'][1] / t[name][1]:.1f}x "
                          f"| {t['dlc_np'][0] / t[name][0]:.1f}x / {t['dlc_np'][1] / t[name][1]:.1f}x |")
            print(ratios[-1], flush=True)
        floors.append(f"| {h}x{w}{'' if locref else ' no locref'} | {mb:.0f} | {mm(t['floor_fresh'])} "
                      f"| {mm(t['floor_fill'])} | {mm(t['floor_copyto'])} | {mm(t['floor_memset'])} "
                      f"| {ms(t['fresh'][0])} | {ms(t['encoder'][0])} | {mb / 1e3 / t['encoder'][0]:.1f} |")
        print(floors[-1], flush=True)

    others = ["", "### MMPose-style codecs", "",
              "| case | loop ms | encode() ms | encoder() ms | speed-up encode() / encoder() | output MB "
              "| max abs diff |", "|---|---|---|---|---|---|---|"]
    for label, codec, loop, b, k, seed in (
            ("SimCC 256x17 (192x256, r=2)", SimCC(), simcc_loop, 256, 17, 1),
            ("MSRA heatmap 64x17 @ 64x48", GaussianHeatmap(), msra_loop, 64, 17, 2)):
        batches = [random_keypoints(b, 1, k, 192, 256, seed=100 * seed + s) for s in range(N_BATCHES)]
        enc = codec.encoder()
        diff = 0.0
        for kp in batches:
            ref = loop(codec, kp)
            for ours in (codec.encode(kp), enc(kp)):
                diff = max(diff, check_equal(ours, ref))
        t = round_robin({"loop": cycle(batches, lambda kp, c=codec, f=loop: f(c, kp)),
                         "fresh": cycle(batches, codec.encode), "encoder": cycle(batches, enc)},
                        repeats, few={"loop": max(3, repeats // 3)})
        mb = sum(a.nbytes for a in codec.encode(batches[0]).values()) / 1e6
        others.append(f"| {label} | {mm(t['loop'])} | {mm(t['fresh'])} | {mm(t['encoder'])} | "
                      f"{t['loop'][0] / t['fresh'][0]:.1f}x / {t['loop'][0] / t['encoder'][0]:.1f}x | {mb:.0f} "
                      f"| {diff:.1e} |")
        print(others[-1], flush=True)
    return lines + ratios + floors + others


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
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--baseline-rev", default=None,
                    help="also time DLCHeatmap.encode from this git revision (e.g. HEAD)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "targets-cpu.md")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (posefeed's NumPy codecs write their dense maps "
                         "through torch kernels); 1 = one core, like DLC's single-threaded loop")
    args = ap.parse_args(argv)
    import torch  # noqa: PLC0415

    torch.set_num_threads(max(1, args.threads))

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    header = [
        "# posefeed target codecs: benchmark", "",
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores ({cpu_model()}), "
        f"Python {sys.version.split()[0]}, NumPy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average at start {load[0]:.1f} (the cores are shared: absolute times drift, compare "
        "ratios within one table)",
        "",
        "Medians of wall-clock repeats (min after the slash), variants interleaved; outputs of the "
        "previous call dropped before each call; outputs checked equal to the loop for all "
        f"{N_BATCHES} keypoint batches (float32, max abs diff shown).", "",
    ]
    print("\n".join(header), flush=True)
    lines = header + cpu_section(args.repeats, args.baseline_rev) + [""] + gpu_section(args.repeats) + [""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"\nwritten to {args.out}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    main()
