"""`posefeed bench --targets`: codec micro-benchmarks (encode time per batch, NumPy and CuPy).

Times the codecs of `TIMED_CODECS` (built through `posefeed.targets.build_codec`): ``encode`` of a ``(B, 1, K, 3)`` batch of random keypoints in the input, median of ``repeats`` calls after
warm-up, with the per-sample NumPy loop of the reference loader (MMPose style) for comparison.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from posefeed.bench.reference import msra_heatmap, simcc_targets
from posefeed.targets import build_codec


#: the codecs timed, by registry name, with arguments beyond `build_codec`'s defaults
TIMED_CODECS: dict[str, dict[str, Any]] = {
    "simcc": {},
    "heatmap": {},
    "udp_heatmap": {},
    "dlc": {"pos_dist_thresh": 17.0},   # DeepLabCut's default radius, as timed so far
}


def _codecs(input_size: tuple[int, int]) -> list[Any]:
    """Every timed codec at ``input_size``, maps at stride 4."""
    return [build_codec(name, input_size, 4, **kw) for name, kw in TIMED_CODECS.items()]


def _time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] | None = None) -> float:
    fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_targets(batch_size: int = 64, num_keypoints: int = 17, input_size: tuple[int, int] = (192, 256),
                repeats: int = 20, device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    """Rows ``{codec, backend, batch, ms_per_batch, us_per_sample, outputs}``."""
    rng = np.random.default_rng(seed)
    w, h = input_size
    kp = np.concatenate([rng.uniform(-10, [w + 10, h + 10], (batch_size, 1, num_keypoints, 2)),
                         rng.choice([0.0, 1.0, 2.0], (batch_size, 1, num_keypoints, 1), p=[.1, .1, .8])],
                        axis=-1).astype(np.float32)
    rows: list[dict[str, Any]] = []
    backends: list[tuple[str, Any, Callable[[], None] | None]] = [("numpy", kp, None)]
    if device == "gpu":
        try:
            import cupy as cp  # optional (the gpu extra); may fail to load without a GPU

            backends.append(("cupy", cp.asarray(kp), cp.cuda.Device().synchronize))
        except Exception:
            pass
    for codec in _codecs(input_size):
        for backend, arr, sync in backends:
            out = codec.encode(arr)
            t = _time(lambda c=codec, a=arr: c.encode(a), repeats, sync)
            rows.append({"codec": type(codec).__name__, "backend": backend, "batch": batch_size,
                         "ms_per_batch": t * 1e3, "us_per_sample": t * 1e6 / batch_size,
                         "outputs": {k: list(v.shape) for k, v in out.items()}})
    # the reference loader's per-sample NumPy targets (as MMPose computes them in workers)
    t = _time(lambda: [simcc_targets(kp[i, 0], input_size) for i in range(batch_size)], repeats)
    rows.append({"codec": "SimCC (reference, per sample)", "backend": "numpy", "batch": batch_size,
                 "ms_per_batch": t * 1e3, "us_per_sample": t * 1e6 / batch_size, "outputs": {}})
    t = _time(lambda: [msra_heatmap(kp[i, 0], (w // 4, h // 4)) for i in range(batch_size)], repeats)
    rows.append({"codec": "MSRA heatmap (reference, per sample)", "backend": "numpy",
                 "batch": batch_size, "ms_per_batch": t * 1e3, "us_per_sample": t * 1e6 / batch_size,
                 "outputs": {}})
    return rows


def render_targets(rows: list[dict[str, Any]], console: Any = None) -> None:
    console = console or Console()
    t = Table(title="Codec encode time (median per batch)")
    for col in ("codec", "backend", "batch", "ms / batch", "us / sample", "outputs"):
        t.add_column(col, justify="left" if col in ("codec", "backend", "outputs") else "right")
    for r in rows:
        outs = ", ".join(f"{k} {tuple(v)}" for k, v in r["outputs"].items())
        t.add_row(r["codec"], r["backend"], str(r["batch"]), f"{r['ms_per_batch']:.3f}",
                  f"{r['us_per_sample']:.1f}", outs)
    console.print(t)
