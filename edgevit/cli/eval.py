"""`edgevit eval`: top-1/top-5 of a compiled artifact on a labelled class-folder set."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import out, print_json, progress_display


@cli.command("eval")
@click.argument("artifact_dir", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Labelled images: one subfolder per class (sorted names = the model's label order).")
@click.option("--limit", type=click.IntRange(1), help="Evaluate N images, evenly spread over the folder.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="Runtime threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
def eval_cmd(artifact_dir: Path, data: Path, limit: int | None, threads: int, as_json: bool) -> None:
    """Top-1/top-5 of the artifact in ARTIFACT_DIR, run in its runtime, on --data (plus fp32 eager)."""
    from ..compile.evaluate import evaluate_artifact

    with progress_display(enabled=not as_json) as progress:
        result = evaluate_artifact(artifact_dir, data, limit=limit, threads=threads, progress=progress)
    if as_json:
        return print_json(result)
    table = Table(title=f"{result['model']} ({result['backend']}, {result['precision']}) on "
                        f"{result['data']['images']} images, {result['data']['classes']} classes")
    for col in ("", "top-1 %", "top-5 %"):
        table.add_column(col, justify="right" if col else "left")
    fmt = (lambda v: "–" if v is None else f"{v:.2f}")
    table.add_row("artifact", fmt(result["top1"]), fmt(result["top5"]))
    fp32 = result["fp32"]
    if "top1" in fp32:
        table.add_row("fp32 eager", fmt(fp32["top1"]), "")
        table.add_row("drop (points)", fmt(fp32["drop_points"]), "")
    out.print(table)
    if "skipped" in fp32:
        out.print(f"fp32 reference skipped: {fp32['skipped']}")
    out.print(f"written: {result['written']}")
