"""`edgevit profile`: where the milliseconds go, per op and per module, on the device (or here)."""
from __future__ import annotations

import importlib.util
import pkgutil
from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import out, print_json, progress_display


def _targets() -> str:
    """The --via choices: one module each in edgevit/profiling/via/ (found without importing them)."""
    spec = importlib.util.find_spec("edgevit.profiling.via")
    return " | ".join(sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)))


@cli.command("profile")
@click.argument("artifact_dir", type=click.Path(path_type=Path))
@click.option("--via", default="local", show_default=True, help=f"Where it runs: {_targets()}.")
@click.option("--runs", default=20, show_default=True, type=click.IntRange(1), help="Timed executions.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(0), help="Untimed executions first.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="Runtime CPU threads.")
@click.option("--serial-id", help="adb: the device's serial (adb devices).")
@click.option("--runner", type=click.Path(path_type=Path), help="adb: executor_runner built with event tracing.")
@click.option("--port", help="serial: the line to the board, e.g. /dev/ttyUSB0.")
@click.option("--baud", type=int, help="serial: line speed, e.g. 921600.")
@click.option("--force", is_flag=True, help="Profile even if the device is not the one the artifact was built for.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile JSON instead of the tables.")
def profile_cmd(artifact_dir: Path, via: str, runs: int, warmup: int, threads: int, serial_id: str | None,
                runner: Path | None, port: str | None, baud: int | None, force: bool, as_json: bool) -> None:
    """Run ARTIFACT_DIR (written by `edgevit compile`) with the runtime's profiler on; per-op report."""
    from ..profiling.profile import ProfileOptions, profile_artifact

    given = {"serial_id": serial_id, "runner": runner, "port": port, "baud": baud}
    opts = ProfileOptions(artifact_dir=artifact_dir, via=via, runs=runs, warmup=warmup, threads=threads,
                          force=force, target_kwargs={k: v for k, v in given.items() if v is not None})
    with progress_display(enabled=not as_json) as progress:
        report = profile_artifact(opts, progress)
    if as_json:
        return print_json(report)
    a, w = report["artifact"], report["wall_ms"]
    load = f"{report['load_ms']:.2f} ms" if report["load_ms"] is not None else "-"
    peak = f"{report['peak_memory_bytes'] / 2**20:.1f} MB" if report["peak_memory_bytes"] else "-"
    out.print(f"[bold]{a['model']}[/] {a['backend']}/{a['precision']} (built for {a['device']}) via {via}: "
              f"median {w['median']:.3f} ms, min {w['min']:.3f}, p90 {w['p90']:.3f} over {w['runs']} runs; "
              f"load {load}; peak memory {peak}; ops sum {report['ops_total_ms']:.3f} ms")
    for title, groups in (("operator types", report["op_types"]), ("modules", report["modules"])):
        table = Table(title=f"top {title}")
        for col in (title[:-1], "ops", "median ms", "share"):
            table.add_column(col, justify="left" if col == title[:-1] else "right")
        for g in groups[:12]:
            table.add_row(g["name"], str(g["ops"]), f"{g['ms']:.3f}", f"{g['share']:.1%}")
        out.print(table)
    for call in report.get("delegate_calls", []):
        out.print(f"delegate call {call['index']} ({call['backend']}, {call['ops']} ops): "
                  f"median {call['median_ms']:.3f} ms")
    for note in report["notes"]:
        out.print(f"[yellow]note:[/] {note}")
    out.print(f"profile: {report['files']['json']}  report: {report['files']['md']}  chart: {report['files']['png']}")
