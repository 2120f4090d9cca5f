"""`posefeed bench`: plan the runners, run each in its own process, assemble the report dict.

Report keys (also the ``--json`` file):

- ``machine``: CPU model, cores (logical, usable), GPU name or null, date (UTC), versions,
  load average before / after (a busy machine makes every number noisy),
- ``config``: the command's settings,
- ``posefeed``, ``cached``, ``reference``, ``decode_only``, ``train``: each with
  ``samples_per_s`` and ``cpu_s_per_sample`` (null when not run or failed), plus details,
- ``ratios``: against the reference (samples/s ratio, and CPU per sample ratio),
- ``stages``: posefeed's per-stage breakdown,
- ``runs``: every runner's full result (see `posefeed.bench.measure.measure`).
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from posefeed.bench.data import prepare_dataset
from posefeed.bench.harness import run_runner
from posefeed.bench.runners import DESCRIPTIONS

GOALS = {"posefeed": 1.3, "cached": 3.0}


@dataclass
class BenchConfig:
    data: str = "synthetic"
    device: str = "cpu"
    batch_size: int = 64
    threads: int = 2
    iters: int | None = None
    seconds: float = 10.0
    warmup: int | None = None  # None: max(3, 2 * threads + 1)
    cache: bool = True
    stages: bool = True
    train: bool = False
    codecs: list[str] = field(default_factory=lambda: ["simcc"])
    input_size: tuple[int, int] = (192, 256)
    repeat: int = 1
    seed: int = 0
    model: str = "auto"
    start_method: str = "spawn"
    pin: bool = True
    min_rows: int | None = None
    limit: int | None = None
    on_bad_image: str = "raise"         # posefeed loaders: "raise" | "skip"
    category: str | None = None         # COCO keypoint category (name or id)

    def spec(self, data_path: str) -> dict[str, Any]:
        return {"data": data_path, "device": self.device, "batch_size": self.batch_size,
                "threads": self.threads, "iters": self.iters, "seconds": self.seconds,
                "warmup": self.warmup, "codecs": list(self.codecs),
                "input_size": list(self.input_size), "seed": self.seed, "model": self.model,
                "start_method": self.start_method, "pin": self.pin, "min_rows": self.min_rows,
                "limit": self.limit, "on_bad_image": self.on_bad_image,
                "category": self.category}


def plan(cfg: BenchConfig) -> list[str]:
    """Runner names, in the order they run."""
    names = ["reference", "posefeed"]
    if cfg.cache:
        names.append("posefeed_cached_host")
        if cfg.device == "gpu":
            names.append("posefeed_cached_device")
    names += ["decode_dali", "decode_cv2"]
    if cfg.stages:
        names += ["posefeed_no_targets", "posefeed_no_aug"]
    if cfg.train:
        names += ["train_appetite", "train_posefeed", "train_reference"]
    return names


# --------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "gpu": gpu_name(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_before": load_avg(),
    }
    for mod, key in (("torch", "torch"), ("nvidia.dali", "dali"), ("cv2", "opencv"), ("numpy", "numpy")):
        try:
            m = __import__(mod, fromlist=["__version__"])
            info[key] = getattr(m, "__version__", None)
        except Exception:
            info[key] = None
    return info


def gpu_name() -> str | None:
    """The first GPU's name from ``nvidia-smi`` (no CUDA initialised here), or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return names[0] if out.returncode == 0 and names else None


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------------------
def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if not r.get("error") and r.get("samples_per_s")]
    if not ok:
        return results[-1]
    ok.sort(key=lambda r: r["samples_per_s"])
    best = dict(ok[len(ok) // 2])
    if len(results) > 1:
        best["repeats"] = [r.get("samples_per_s") for r in results]
    return best


def _pick(run: dict[str, Any] | None) -> dict[str, Any]:
    """The headline fields of a run (nulls when it did not run or failed)."""
    if not run or run.get("error"):
        return {"samples_per_s": None, "cpu_s_per_sample": None,
                "error": (run or {}).get("error", "not run")}
    keys = ("samples_per_s", "cpu_s_per_sample", "peak_rss_mb", "peak_pss_mb", "gpu_mem_peak_mb",
            "startup_s", "batches", "wall_s", "cores_busy")
    return {k: run.get(k) for k in keys}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def assemble(cfg: BenchConfig, runs: dict[str, dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    ref = _pick(runs.get("reference"))
    pf = _pick(runs.get("posefeed"))
    host = _pick(runs.get("posefeed_cached_host")) if "posefeed_cached_host" in runs else None
    dev = _pick(runs.get("posefeed_cached_device")) if "posefeed_cached_device" in runs else None
    if dev is not None and dev.get("samples_per_s"):
        cached = {**dev, "variant": "device"}
    elif host is not None:
        cached = {**host, "variant": "host"}
    else:
        cached = {"samples_per_s": None, "cpu_s_per_sample": None, "error": "not run"}
    cached["host"], cached["device"] = host, dev

    dd, dc = _pick(runs.get("decode_dali")), _pick(runs.get("decode_cv2"))
    cands = [(n, d) for n, d in (("dali", dd), ("cv2", dc)) if d.get("samples_per_s")]
    if cands:
        name, best = max(cands, key=lambda t: t[1]["samples_per_s"])
        decoder = runs["decode_dali" if name == "dali" else "decode_cv2"].get("decoder", name)
        decode_only = {**best, "decoder": decoder}
    else:
        decode_only = {"samples_per_s": None, "cpu_s_per_sample": None, "error": "not run"}
    decode_only["dali"], decode_only["cv2"] = dd, dc

    report: dict[str, Any] = {
        "machine": machine,
        "config": asdict(cfg),
        "posefeed": pf,
        "cached": cached,
        "reference": ref,
        "decode_only": decode_only,
        "train": train_section(runs),
        "stages": stage_breakdown(runs, cfg.threads),
        "ratios": {},
        "goals": GOALS,
        "descriptions": {n: DESCRIPTIONS.get(n, "") for n in runs},
        "runs": runs,
    }
    r = report["ratios"]
    for key, sec in (("posefeed", pf), ("cached", cached), ("cached_host", host or {}),
                     ("cached_device", dev or {}), ("decode_only", decode_only)):
        r[key] = {"samples_per_s": _ratio(sec.get("samples_per_s"), ref.get("samples_per_s")),
                  "cpu_s_per_sample": _ratio(sec.get("cpu_s_per_sample"), ref.get("cpu_s_per_sample"))}
    r["posefeed_vs_decode_floor"] = _ratio(pf.get("samples_per_s"), decode_only.get("samples_per_s"))
    return report


def train_section(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if not any(n.startswith("train_") for n in runs):
        return {"samples_per_s": None, "cpu_s_per_sample": None, "ran": False}
    app = runs.get("train_appetite") or {}
    out: dict[str, Any] = {"ran": True, "model": app.get("model"), "parameters": app.get("parameters")}
    app_sps = None if app.get("error") else app.get("samples_per_s")
    for key, name in (("appetite", "train_appetite"), ("posefeed", "train_posefeed"),
                      ("reference", "train_reference")):
        run = runs.get(name) or {}
        sec = _pick(run)
        sec["steps_per_s"] = None if run.get("error") else run.get("steps_per_s")
        sec["fraction_of_appetite"] = _ratio(sec.get("samples_per_s"), app_sps)
        out[key] = sec
    # headline: training fed by posefeed
    out["samples_per_s"] = out["posefeed"].get("samples_per_s")
    out["cpu_s_per_sample"] = out["posefeed"].get("cpu_s_per_sample")
    return out


def stage_breakdown(runs: dict[str, dict[str, Any]], threads: int) -> dict[str, Any]:
    """posefeed's cost per stage, from runs that switch one stage off at a time:
    full -> no targets -> no augmentation -> decode only (DALI). Costs are differences of CPU
    ms per sample (and of core-ms per sample = threads / samples_per_s, for wall time)."""
    chain = [("full", "posefeed"), ("no_targets", "posefeed_no_targets"),
             ("no_augmentation", "posefeed_no_aug"), ("decode_only", "decode_dali")]
    levels: dict[str, Any] = {}
    for label, name in chain:
        run = runs.get(name)
        if run and not run.get("error") and run.get("samples_per_s"):
            levels[label] = {"samples_per_s": run["samples_per_s"],
                             "cpu_ms_per_sample": 1e3 * (run.get("cpu_s_per_sample") or 0.0),
                             "core_ms_per_sample": 1e3 * threads / run["samples_per_s"]}
    costs: dict[str, Any] = {}
    names = {"full": "targets", "no_targets": "augmentation",
             "no_augmentation": "crop_normalise_feed"}
    for (a, _), (b, _) in zip(chain, chain[1:]):
        if a in levels and b in levels:
            costs[names[a]] = {k: levels[a][k] - levels[b][k]
                               for k in ("cpu_ms_per_sample", "core_ms_per_sample")}
    if "decode_only" in levels:
        costs["decode"] = {k: levels["decode_only"][k] for k in ("cpu_ms_per_sample", "core_ms_per_sample")}
    return {"levels": levels, "cost_ms_per_sample": costs}


# --------------------------------------------------------------------------------------
def run_bench(cfg: BenchConfig, *, progress: Callable[[str, dict[str, Any] | None], None] | None = None,
              workdir: str | None = None) -> dict[str, Any]:
    """Run every planned runner (``cfg.repeat`` interleaved rounds, each run in its own
    process; the median run by samples/s is kept) and return the report dict.
    ``progress(name, result_or_None)`` is called before and after each run."""
    machine = machine_info()
    out = str(Path(workdir) / "synthetic") if workdir else None
    data = prepare_dataset(cfg.data, out)
    spec = cfg.spec(data)
    names = plan(cfg)
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    # with --repeat, rounds are interleaved (every runner once per round), so a change of
    # load during the bench spreads over all runners instead of hitting one
    for _ in range(max(cfg.repeat, 1)):
        for name in names:
            if progress:
                progress(name, None)
            res = run_runner(name, spec)
            results[name].append(res)
            if progress:
                progress(name, res)
    runs = {n: _median_run(results[n]) for n in names}
    machine["load_avg_after"] = load_avg()
    report = assemble(cfg, runs, machine)
    report["config"]["data_path"] = data
    return report
