"""``posefeed inspect PATH``: what a dataset holds and what is wrong with it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from posefeed.cli import app
from posefeed.cli.errors import choice, describe

#: problem lines the summary prints before "... and N more" (``--json`` lists them all)
SHOWN_PROBLEMS = 20


def format_problems(problems: list[str], limit: int = SHOWN_PROBLEMS) -> str:
    """``problems`` as indented ``  - ...`` lines, the first ``limit`` of them (``limit <= 0``:
    all), then one line saying how many more there are and how to see them."""
    shown = problems if limit <= 0 else problems[:limit]
    lines = [f"  - {p}" for p in shown]
    if len(problems) > len(shown):
        lines.append(f"  ... and {len(problems) - len(shown)} more (--max-problems 0 or --json "
                     "lists them all)")
    return "\n".join(lines)


def _print_summary(console, summary: dict, path: str,  # noqa: ANN001 - rich Console
                   max_problems: int = SHOWN_PROBLEMS) -> None:
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console.print(f"[bold]{escape(path)}[/bold]  (images under {escape(summary['root'])})")
    console.print(f"frames: {summary['frames']}   instances: {summary['instances']}   "
                  f"max per frame: {summary['max_instances_per_frame']}   "
                  f"individuals: {len(summary['individuals'])}")
    sizes = ", ".join(f"{s} ({n} frames)" for s, n in summary["image_sizes"].items())
    console.print(f"image sizes: {sizes}")
    if summary["skipped_images"]:
        console.print(f"[yellow]skipped images: {summary['skipped_images']}[/yellow] (missing or "
                      "unreadable header; listed below)")
    tab = Table(title=f"{len(summary['bodyparts'])} bodyparts")
    tab.add_column("#", justify="right")
    tab.add_column("bodypart")
    tab.add_column("labelled", justify="right")
    tab.add_column("visible", justify="right")
    tab.add_column("flips with")
    partner = {}
    for a, b in summary["flip_pairs"]:
        partner[a], partner[b] = b, a
    for i, bp in enumerate(summary["bodyparts"]):
        tab.add_row(str(i), escape(bp), f"{summary['labelled_fraction'][bp]:.1%}",
                    f"{summary['visible_fraction'][bp]:.1%}", escape(partner.get(bp, "")))
    console.print(tab)
    pairs = ", ".join(f"{a}<->{b}" for a, b in summary["flip_pairs"]) or "none"
    console.print(f"flip pairs: {escape(pairs)}")
    problems = summary["problems"]
    if problems:
        console.print(f"[yellow]{len(problems)} problems:[/yellow]")
        console.print(format_problems(problems, max_problems), markup=False, highlight=False,
                      soft_wrap=True)   # unbroken lines: paths stay copyable
    else:
        console.print("[green]no problems found[/green]")


@app.command("inspect")
def inspect_command(
    path: str = typer.Argument(..., help="DeepLabCut project folder, CollectedData .h5/.csv, "
                               "COCO .json, or 'synthetic'."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    deep: bool = typer.Option(False, "--deep", help="Decode every image once and list "
                              "unreadable, truncated, zero-byte or wrongly sized ones."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where 'synthetic' is generated "
                                       "(default: the posefeed cache folder)."),
    threads: int = typer.Option(4, "--threads", min=1, help="Threads for --deep."),
    category: Optional[str] = typer.Option(None, "--category", help="COCO keypoint category "
                                           "(name or id) when the file has several."),
    on_bad_image: str = typer.Option("raise", "--on-bad-image", help="raise: stop at a "
                                     "missing or unreadable image | skip: leave it out, "
                                     "count and list it (exit code 1)."),
    max_problems: int = typer.Option(SHOWN_PROBLEMS, "--max-problems", help="Problems printed "
                                     "before '... and N more' (0: all; --json lists all)."),
) -> None:
    """Summarise a dataset and list its problems (exit code 1 on invalid data, 2 on bad
    arguments).

    Prints frames, instances, bodyparts, the labelled fraction per bodypart, image sizes,
    flip pairs and problems found.
    """
    # lazy: CLI start-up (see posefeed/cli/__init__.py)
    from rich.console import Console  # noqa: PLC0415
    from rich.markup import escape  # noqa: PLC0415

    from posefeed.datasets import AnnotationError, deep_check, resolve_dataset  # noqa: PLC0415
    from posefeed.datasets.summary import summarize  # noqa: PLC0415

    choice("--on-bad-image", on_bad_image, ("raise", "skip"))
    err = Console(stderr=True)
    try:
        table = resolve_dataset(path, out=out, category=category, on_bad_image=on_bad_image)
    except AnnotationError as e:
        if as_json:
            typer.echo(json.dumps({"error": str(e), "file": e.file, "row": None if e.row is None
                                   else str(e.row), "field": e.field, "problems": e.problems}))
        err.print(f"[red]error:[/red] {escape(describe(e))}", highlight=False)
        raise typer.Exit(1) from None
    summary = summarize(table)
    bad = bool(table.skipped_images)
    if deep:
        # lazy: CLI start-up (see posefeed/cli/__init__.py)
        from rich.progress import Progress  # noqa: PLC0415

        images = table.images
        sizes = dict(zip(table.frame[("image", "")], map(tuple, table.image_sizes.tolist())))
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("decoding images", total=len(images))
            found = deep_check(table.root, images, sizes, threads=threads,
                               progress=lambda: progress.advance(task))
        summary["images_checked"] = len(images)
        summary["image_problems"] = found
        summary["problems"] += found
        bad = bad or bool(found)
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_summary(Console(), summary, path, max_problems)
    if bad:
        raise typer.Exit(1)
