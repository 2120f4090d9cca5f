"""Render a bench report: rich tables, the JSON file, a PNG bar chart (matplotlib Agg)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

LABELS = {
    "reference": "reference (DataLoader + OpenCV)",
    "posefeed": "posefeed",
    "posefeed_cached_host": "posefeed, host cache",
    "posefeed_cached_device": "posefeed, device cache",
    "decode_dali": "decode only, full image (DALI)",
    "decode_cv2": "decode only, full image (cv2 pool)",
    "posefeed_no_targets": "posefeed, targets off",
    "posefeed_no_aug": "posefeed, targets + aug off",
    "reference_no_aug": "reference, aug off",
    "train_appetite": "train: one batch in memory",
    "train_posefeed": "train: fed by posefeed",
    "train_reference": "train: fed by reference",
}


def _f(x: Any, fmt: str = "{:,.0f}", none: str = "-") -> str:
    if x is None:
        return none
    try:
        return fmt.format(x)
    except (TypeError, ValueError):
        return str(x)


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=2, default=str))
    return p


def render(report: dict[str, Any], console: Any = None) -> None:
    """Print the tables (loaders, posefeed stages, training) and the goal lines."""
    console = console or Console()
    m, cfg = report["machine"], report["config"]
    console.print(
        f"[bold]posefeed bench[/bold]  {cfg.get('data_path', cfg['data'])}  device={cfg['device']}  "
        f"batch={cfg['batch_size']}  threads={cfg['threads']}  input={tuple(cfg['input_size'])}  "
        f"codecs={','.join(cfg['codecs'])}")
    console.print(f"machine: {m.get('cpu')} ({m.get('usable_cores')}/{m.get('cores')} cores usable), "
                  f"GPU: {m.get('gpu') or 'none'}, {m.get('date')}, load avg before "
                  f"{m.get('load_avg_before')} after {m.get('load_avg_after')}")
    before = m.get("load_avg_before")  # "after" includes the bench's own load
    cores = m.get("usable_cores") or m.get("cores") or 1
    if before and before[0] > 0.5 * cores:
        console.print(f"[yellow]the machine was busy before the bench (1-min load {before[0]:.1f} "
                      f"on {cores} cores): samples/s are unreliable; CPU ms/sample is the "
                      "steadier comparison.[/yellow]")
    runs: dict[str, Any] = report["runs"]
    ref = runs.get("reference") or {}
    ref_sps, ref_cpu = ref.get("samples_per_s"), ref.get("cpu_s_per_sample")
    t = Table(title="Loaders (same data, recipe and thread budget; one process each)")
    for col, just in (("loader", "left"), ("samples/s", "right"), ("x ref", "right"),
                      ("CPU ms/sample", "right"), ("CPU x ref", "right"), ("cores busy", "right"),
                      ("peak RSS MB (PSS)", "right"), ("GPU MB", "right"), ("start s", "right")):
        t.add_column(col, justify=just)
    for name, run in runs.items():
        if name.startswith("train_"):
            continue
        label = LABELS.get(name, name)
        if run.get("error"):
            t.add_row(label, "[red]failed[/red]", "", "", "", "", "", "", "",)
            continue
        sps, cpu = run.get("samples_per_s"), run.get("cpu_s_per_sample")
        t.add_row(label, _f(sps), _f(sps / ref_sps if sps and ref_sps else None, "{:.2f}x"),
                  _f(cpu * 1e3 if cpu is not None else None, "{:.2f}"),
                  _f(cpu / ref_cpu if cpu and ref_cpu else None, "{:.2f}x"),
                  _f(run.get("cores_busy"), "{:.2f}"),
                  f"{_f(run.get('peak_rss_mb'))} ({_f(run.get('peak_pss_mb'))})",
                  _f(run.get("gpu_mem_peak_mb")), _f(run.get("startup_s"), "{:.1f}"))
    console.print(t)
    for name, run in runs.items():
        if run.get("error"):
            console.print(f"[red]{LABELS.get(name, name)} failed:[/red] {run['error']}")
    for name in ("posefeed", "posefeed_cached_host", "posefeed_cached_device"):
        thr = (runs.get(name) or {}).get("runner_threads_cores")
        if thr:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in list(thr.items())[:6])
            console.print(f"[dim]{LABELS.get(name, name)}: cores per thread: {parts}[/dim]")

    stages = report.get("stages") or {}
    costs = stages.get("cost_ms_per_sample") or {}
    if costs:
        st = Table(title="posefeed per-stage cost (differences between runs with one stage off)")
        st.add_column("stage")
        st.add_column("CPU ms/sample", justify="right")
        st.add_column("core-ms/sample (wall x threads)", justify="right")
        for stage in ("decode", "crop_normalise_feed", "augmentation", "targets"):
            if stage in costs:
                st.add_row(stage.replace("_", " "), _f(costs[stage]["cpu_ms_per_sample"], "{:.2f}"),
                           _f(costs[stage]["core_ms_per_sample"], "{:.2f}"))
        full = (stages.get("levels") or {}).get("full")
        if full:
            st.add_row("[bold]total (full pipeline)[/bold]", _f(full["cpu_ms_per_sample"], "{:.2f}"),
                       _f(full["core_ms_per_sample"], "{:.2f}"))
        console.print(st)

    train = report.get("train") or {}
    if train.get("ran"):
        tt = Table(title=f"Training steps/s ({train.get('model')}, {_f(train.get('parameters'))} params)")
        for col in ("fed by", "steps/s", "samples/s", "fraction of appetite", "CPU ms/sample"):
            tt.add_column(col, justify="left" if col == "fed by" else "right")
        for key, label in (("appetite", "one batch in memory (appetite)"), ("posefeed", "posefeed"),
                           ("reference", "reference loader")):
            sec = train.get(key) or {}
            cpu = sec.get("cpu_s_per_sample")
            tt.add_row(label, _f(sec.get("steps_per_s"), "{:.2f}"), _f(sec.get("samples_per_s")),
                       _f(sec.get("fraction_of_appetite"), "{:.0%}"),
                       _f(cpu * 1e3 if cpu is not None else None, "{:.2f}"))
        console.print(tt)

    ratios, goals = report.get("ratios") or {}, report.get("goals") or {}
    for key in ("posefeed", "cached"):
        r = (ratios.get(key) or {}).get("samples_per_s")
        goal = goals.get(key)
        if goal is None:
            continue
        mark = "-" if r is None else ("[green]met[/green]" if r >= goal else "[yellow]not met[/yellow]")
        console.print(f"{key} / reference samples/s: {_f(r, '{:.2f}x')} (goal {goal}x) {mark}")
    floor = ratios.get("posefeed_vs_decode_floor")
    if floor is not None:
        console.print(f"posefeed runs at {floor:.0%} of the full-image decode-only rate "
                      f"({report['decode_only'].get('decoder')}); above 100% is possible when "
                      "the pipeline decodes only the region a crop reads (JPEG ROI decode).")


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """A horizontal bar chart of samples/s per loader (ratios against the reference written on
    the bars) and, when training ran, a second panel with the fraction of the appetite."""
    # matplotlib only when a plot is written: it is slow to import, and the backend must
    # be chosen (Agg, no display) before pyplot is imported
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg")

    runs = report["runs"]
    names = [n for n in runs if not n.startswith("train_")]
    vals = [runs[n].get("samples_per_s") or 0.0 for n in names]
    ref = (runs.get("reference") or {}).get("samples_per_s")
    train = report.get("train") or {}
    panels = 2 if train.get("ran") else 1
    fig, axes = plt.subplots(panels, 1, figsize=(9, 1.2 + 0.45 * len(names) + (2.2 if panels == 2 else 0)),
                             squeeze=False, gridspec_kw={"height_ratios": [len(names), 3][:panels]})
    ax = axes[0][0]
    colours = ["#777777" if n == "reference" else "#bbbbbb" if n.startswith("decode") else "#2a7ab9"
               for n in names]
    y = list(range(len(names)))[::-1]
    ax.barh(y, vals, color=colours)
    ax.set_yticks(y)
    ax.set_yticklabels([LABELS.get(n, n) for n in names])
    top = max(vals + [1.0])
    for yi, n, v in zip(y, names, vals):
        txt = "failed" if runs[n].get("error") else f"{v:,.0f}" + (f"  ({v / ref:.2f}x)" if ref and v else "")
        ax.text(v + top * 0.01, yi, txt, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.3)
    cfg, m = report["config"], report["machine"]
    ax.set_xlabel("samples / s")
    ax.set_title(f"posefeed bench: {cfg['device']}, {cfg['threads']} threads, batch {cfg['batch_size']}, "
                 f"{tuple(cfg['input_size'])}\n{m.get('cpu')}; GPU: {m.get('gpu') or 'none'}; {m.get('date')}",
                 fontsize=9)
    if panels == 2:
        ax2 = axes[1][0]
        keys = [("appetite", "appetite"), ("posefeed", "fed by posefeed"), ("reference", "fed by reference")]
        fr = [(train.get(k) or {}).get("fraction_of_appetite") or 0.0 for k, _ in keys]
        yy = list(range(len(keys)))[::-1]
        ax2.barh(yy, fr, color=["#bbbbbb", "#2a7ab9", "#777777"])
        ax2.set_yticks(yy)
        ax2.set_yticklabels([lbl for _, lbl in keys])
        ax2.set_xlim(0, 1.25)
        for yi, f in zip(yy, fr):
            ax2.text(f + 0.01, yi, f"{f:.0%}", va="center", fontsize=8)
        ax2.set_xlabel("training throughput, fraction of the model's appetite")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
