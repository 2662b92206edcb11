"""`edgevit split`: split inference across edge devices. `plan` decides where to cut (or not to)."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import out, print_json, profiles_option, progress_display


@cli.group("split")
def split_group() -> None:
    """Split one model across several edge devices joined by a network link."""


@split_group.command("plan")
@click.argument("model")
@click.option("--devices", "-d", "devices", required=True,
              help="Comma-separated device profile names, in pipeline order (a name may repeat: two rpi5 boards).")
@click.option("--link", "link", required=True, help="Link profile: wifi5, wifi6, gbe, usb3, loopback (or yours).")
@click.option("--objective", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="latency: one image end to end; throughput: images/s of the pipeline (slowest stage or transfer).")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]), default="int8", show_default=True)
@click.option("--boundary-dtype", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="How the tensor crossing a cut is sent.")
@click.option("--order", type=click.Choice(["given", "search"]), default="given", show_default=True,
              help="given: stages follow --devices (a device may be left out); search: the planner picks order "
                   "and subset.")
@click.option("--costs", "source", type=click.Choice(["auto", "estimate", "profile", "peak"]), default="auto",
              show_default=True, help="Where stage times come from; auto: estimate, else a stored profile, else peak.")
@click.option("--unit-times", type=click.Path(path_type=Path),
              help="host: measured per-unit times, JSON {\"unit_ms\": {unit: ms}, \"call_ms\": ms}.")
@click.option("--stored-profiles", "stored", multiple=True, type=click.Path(path_type=Path),
              help="Folders searched for `edgevit profile` results (default: out).")
@click.option("--calibration-dir", type=click.Path(path_type=Path), default=Path("out/calibration"),
              show_default=True, help="Latency-model calibrations (edgevit calibrate).")
@click.option("--input-shape", help="Static input N,C,H,W (required for a user module).")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier size, when not the zoo default.")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint (for the export).")
@profiles_option
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("plan.json"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON too.")
def plan_cmd(model: str, devices: str, link: str, objective: str, precision: str, boundary_dtype: str, order: str,
             source: str, unit_times: Path | None, stored: tuple[Path, ...], calibration_dir: Path,
             input_shape: str | None, num_classes: int | None, weights: Path | None,
             profile_dirs: tuple[Path, ...], output: Path, as_json: bool) -> None:
    """Where to cut MODEL across --devices over --link (or "don't split"); writes plan.json."""
    from ..models import parse_input_shape
    from ..split.planner import plan_split, write_plan

    with progress_display(enabled=not as_json) as progress:
        plan = plan_split(model, devices.split(","), link, objective, precision, boundary_dtype, order, source,
                          parse_input_shape(input_shape), num_classes, weights, unit_times,
                          list(stored) or [Path("out")], calibration_dir, list(profile_dirs), progress)
        write_plan(plan, output)
    if as_json:
        return print_json(plan)
    p = plan["predicted"]
    out.print(f"[bold]{plan['model']}[/] {plan['precision']} over [bold]{plan['link']['name']}[/] "
              f"({plan['link']['bandwidth_mbps']:g} Mbps, RTT {plan['link']['rtt_ms']:g} ms), objective "
              f"{plan['objective']}: {p['latency_ms']:.2f} ms per image, {p['throughput_ips']:.2f} images/s")
    table = Table(title="stages")
    for col in ("stage", "device", "backend", "units", "ms", "memory MB", "basis"):
        table.add_column(col, justify="right" if col in ("ms", "memory MB") else "left")
    for s in plan["stages"]:
        units = s["units"][0] if len(s["units"]) == 1 else f"{s['units'][0]} .. {s['units'][-1]} ({len(s['units'])})"
        table.add_row(str(s["index"]), s["device"], s["backend"], units, f"{s['predicted_ms']:.3f}",
                      f"{s['memory_mb']:.1f}", s["basis"])
    out.print(table)
    for t in plan["transfers"]:
        out.print(f"transfer {t['from_stage']}->{t['to_stage']} after {t['unit']}: {t['bytes']} bytes, "
                  f"{t['predicted_ms']:.3f} ms")
    out.print(f"bottleneck: {p['bottleneck']}")
    style = "green" if plan["verdict"] == "split" else "yellow"
    out.print(f"verdict: [bold {style}]{plan['verdict']}[/]")
    for d in plan["devices"]:
        out.print(f"{d['name']}: {d['basis']}: {d['figures']}")
    out.print(f"plan: {output} (id {plan['plan_id']})")
