"""``posefeed bench PATH``: posefeed against the reference CPU loader, side by side."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from posefeed.cli import app
from posefeed.cli.errors import choice


def _default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@app.command()
def bench(
    path: str = typer.Argument("synthetic", help="Dataset (COCO .json, DLC project / .h5 / .csv) "
                               "or 'synthetic' (generated on the fly)."),
    device: str = typer.Option("cpu", "--device", help="cpu or gpu."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    iters: Optional[int] = typer.Option(None, "--iters", min=1,
                                        help="Timed batches per runner (default: run ~--seconds)."),
    seconds: float = typer.Option(10.0, "--seconds", help="Timed seconds per runner when --iters "
                                  "is not given."),
    warmup: Optional[int] = typer.Option(None, "--warmup", min=1, help="Untimed batches before "
                                         "timing (default: max(3, 2 x threads + 1), past the "
                                         "start-up wave of workers and prefetch)."),
    threads: Optional[int] = typer.Option(None, "--threads", "-j", min=1,
                                          help="Threads / workers for every loader (default: all "
                                          "usable cores)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Also run posefeed with the "
                               "decoded-frame cache (host; and device on GPU)."),
    stages: bool = typer.Option(True, "--stages/--no-stages", help="Per-stage breakdown for "
                                "posefeed (extra runs with targets / augmentation off)."),
    train: bool = typer.Option(False, "--train", help="Also measure training steps/s fed by "
                               "each loader, against one batch kept in memory."),
    codec: List[str] = typer.Option(["simcc"], "--codec", help="simcc and/or heatmap (MSRA)."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Run every runner N times, in interleaved "
                        "rounds; keep each runner's median run."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG bar chart."),
    targets: bool = typer.Option(False, "--targets", help="Run only the codec micro-benchmarks."),
    start_method: str = typer.Option("spawn", "--start-method",
                                     help="Reference DataLoader worker start method: spawn or "
                                     "forkserver."),
    pin: bool = typer.Option(True, "--pin/--no-pin", help="Pin each runner to --threads CPUs "
                             "when the machine has more."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N "
                                        "instances of the dataset (keeps a cache of a large "
                                        "dataset in memory)."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where 'synthetic' writes its "
                                           "images (default: posefeed's cache folder, reused)."),
    on_bad_image: str = typer.Option("raise", "--on-bad-image", help="posefeed loaders: raise "
                                     "at an unreadable image | skip it (replaced, logged)."),
    category: Optional[str] = typer.Option(None, "--category", help="COCO keypoint category "
                                           "(name or id) when the file has several."),
) -> None:
    """Run posefeed, the reference CPU loader (torch DataLoader + OpenCV, as MMPose users run
    it) and decode-only floors on the same data, recipe and thread budget, each in its own
    process; print samples/s, CPU per sample, peak memory and ratios."""
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from rich.console import Console

    console = Console()
    if device not in ("cpu", "gpu"):
        raise typer.BadParameter("--device must be cpu or gpu")
    if start_method not in ("spawn", "forkserver"):
        raise typer.BadParameter("--start-method must be spawn or forkserver (a forked "
                                 "DataLoader can hang once OpenCV or DALI threads exist)")
    if device == "gpu":
        # lazy: CLI start-up (see posefeed/cli/__init__.py)
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter("--device gpu: CUDA is not available on this machine")
    bad = set(codec) - {"simcc", "heatmap"}
    if bad:
        raise typer.BadParameter(f"unknown codec(s) {sorted(bad)}: use simcc and/or heatmap")
    choice("--on-bad-image", on_bad_image, ("raise", "skip"))

    if targets:
        # lazy: CLI start-up (see posefeed/cli/__init__.py)
        import json

        from posefeed.bench.targets import render_targets, run_targets

        rows = run_targets(batch_size=batch_size, device=device, repeats=iters or 20)
        render_targets(rows, console)
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps({"targets": rows}, indent=2))
            console.print(f"wrote {json_out}")
        return

    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from posefeed.bench.report import LABELS, plot, render, write_json
    from posefeed.bench.suite import BenchConfig, plan, run_bench

    cfg = BenchConfig(data=path, device=device, batch_size=batch_size, threads=threads or _default_threads(),
                      iters=iters, seconds=seconds, warmup=warmup, cache=cache, stages=stages,
                      train=train, codecs=list(codec), repeat=repeat, start_method=start_method,
                      pin=pin, limit=limit, on_bad_image=on_bad_image, category=category)
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from posefeed.bench.data import load_table, prepare_dataset

    # fail early, with the loader's message (posefeed.cli.errors: exit code 2), before
    # starting any runner
    data_path = prepare_dataset(path, str(workdir / "synthetic") if workdir else None)
    table = load_table(data_path, category, on_bad_image)
    console.print(f"{data_path}: {len(table)} instances in {len(table.images)} images, "
                  f"{len(table.bodyparts)} keypoints"
                  + (f", {len(table.skipped_images)} unreadable images left out"
                     if table.skipped_images else ""))
    names = plan(cfg)
    console.print(f"{len(names)} runners, one process each, ~{cfg.seconds if not iters else f'{iters} batches'}"
                  f"{' s' if not iters else ''} timed per runner: {', '.join(names)}")

    def progress(name: str, result: dict | None) -> None:
        label = LABELS.get(name, name)
        if result is None:
            console.print(f"  running {label} ...", end="")
        elif result.get("error"):
            console.print(f" [red]failed[/red]: {str(result['error']).splitlines()[0]}")
        else:
            console.print(f" {result['samples_per_s']:,.0f} samples/s")

    report = run_bench(cfg, progress=progress, workdir=str(workdir) if workdir else None)
    render(report, console)
    if json_out:
        console.print(f"wrote {write_json(report, json_out)}")
    if plot_out:
        console.print(f"wrote {plot(report, plot_out)}")
    failed = [n for n, r in report["runs"].items() if r.get("error")]
    if failed:   # the ratios above lack these runners: not a complete benchmark
        from rich.markup import escape  # lazy: CLI start-up (see posefeed/cli/__init__.py)

        console.print(f"[red]{len(failed)} of {len(report['runs'])} runners failed:[/red] "
                      + escape("; ".join(f"{LABELS.get(n, n)}: "
                                         f"{str(report['runs'][n]['error']).splitlines()[0]}"
                                         for n in failed)), highlight=False)
        raise typer.Exit(code=1)
