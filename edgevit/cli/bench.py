"""`edgevit bench`: every backend x precision of one model, timed side by side."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import int_list, out, print_json, profiles_option, progress_display


@cli.command("bench")
@click.argument("model")
@click.option("--device", "-d", default="host", show_default=True,
              help="Device profile (its backends are benchmarked).")
@click.option("--threads", default="1", show_default=True, callback=int_list, help="Thread counts, e.g. 1,2.")
@click.option("--backend", "backends", multiple=True, help="Only this backend (repeatable).")
@click.option("--precision", "precisions", multiple=True, help="Only this precision (repeatable).")
@click.option("--rounds", default=20, show_default=True, type=click.IntRange(5), help="Timed round-robin rounds.")
@click.option("--input-shape", help="Static input N,C,H,W (required for a user module).")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier size, when not the zoo default.")
@click.option("--num-calib", default=32, show_default=True, type=click.IntRange(1))
@click.option("--no-memory", is_flag=True, help="Skip the per-artifact peak-memory subprocesses.")
@click.option("-o", "--output", "output_root", default=Path("out/bench"), show_default=True,
              type=click.Path(path_type=Path))
@profiles_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
def bench_cmd(model: str, device: str, threads: list[int], backends: tuple[str, ...], precisions: tuple[str, ...],
              rounds: int, input_shape: str | None, num_classes: int | None, num_calib: int, no_memory: bool,
              output_root: Path, profile_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Every backend x precision for MODEL, compiled, verified and timed side by side here."""
    from ..profiling import BenchOptions, run_bench

    opts = BenchOptions(model=model, device=device, threads=threads, backends=list(backends) or None,
                        precisions=list(precisions) or None, rounds=rounds, input_shape=input_shape,
                        num_classes=num_classes, num_calib=num_calib, output_root=output_root,
                        profile_dirs=list(profile_dirs), measure_memory=not no_memory)
    with progress_display(enabled=not as_json) as progress:
        report = run_bench(opts, progress)
    if as_json:
        return print_json(report)
    table = Table(title=f"{report['model']} on {report['device']} ({report['rounds']} round-robin rounds)")
    for col in ("backend/precision", "threads", "median ms", "p90 ms", "size MB", "peak mem MB", "SQNR dB",
                "cosine", "verified"):
        table.add_column(col, justify="left" if col == "backend/precision" else "right")
    for r in report["rows"]:
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        verified = "-" if r["passed"] is None else ("yes" if r["passed"] else "[red]no[/]")
        if r["error"]:
            verified = f"[red]{r['error'][:60]}…[/]"
        table.add_row(r["label"], str(r["threads"]), f(r["median_ms"], ".2f"), f(r["p90_ms"], ".2f"),
                      f(r["size_bytes"] and r["size_bytes"] / 2**20, ".2f"),
                      f(r["peak_memory_bytes"] and r["peak_memory_bytes"] / 2**20, ".1f"),
                      f(r["sqnr_db"], ".1f"), f(r["cosine"], ".5f"), verified)
    out.print(table)
    for t, label in report["auto_choice"].items():
        out.print(f"fastest verified artifact at {t} thread(s): [bold]{label or 'none'}[/]")
    out.print(f"report: {report['files']['json']}  chart: {report['files']['png']}")
