"""`edgevit estimate` (predicted latency per stage) and `edgevit calibrate` (fit it from stored profiles)."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import out, print_json, profiles_option, progress_display


@cli.command("estimate")
@click.argument("model")
@click.option("--device", "-d", required=True, help="Device profile name (see `edgevit devices`).")
@click.option("--precision", default="int8", show_default=True, help="int8 | fp16 | fp32")
@click.option("--backend", default="auto", show_default=True,
              help="Whose lowering to price; auto: the device's preferred backend that has a cost model.")
@click.option("--input-shape", help="Static input N,C,H,W (required for a user module).")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier size, when not the zoo default.")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Calibration JSON (default: CALIBRATION_DIR/DEVICE.json when it exists).")
@click.option("--calibration-dir", default=Path("out/calibration"), show_default=True,
              type=click.Path(path_type=Path), help="Where calibrations and measured host peaks live.")
@click.option("--measure-peaks", is_flag=True,
              help="host only: measure this machine's XNNPACK peaks once (GEMM microbenchmark) and keep them.")
@profiles_option
@click.option("--pe", help="FPGA boards: PE array ROWSxCOLS; default: the fastest that fits.")
@click.option("--task", help="FPGA boards: the task whose expert routing is priced (default: the first).")
@click.option("--weights", type=click.Path(path_type=Path), help="FPGA boards: checkpoint (routing depends on it).")
@click.option("--png", type=click.Path(path_type=Path), help="FPGA boards: write the breakdown chart here.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def estimate_cmd(model: str, device: str, precision: str, backend: str, input_shape: str | None,
                 num_classes: int | None,
                 calibration: Path | None, calibration_dir: Path, measure_peaks: bool,
                 profile_dirs: tuple[Path, ...], pe: str | None, task: str | None, weights: Path | None,
                 png: Path | None, as_json: bool) -> None:
    """Predicted latency of MODEL on DEVICE, in total and per model stage, with where each figure comes from.

    On an FPGA board: cycles by layer kind (compute vs DDR), DSP/BRAM/URAM/LUT, and whether the design fits."""
    from .._io import atomic_write_json
    from ..devices import get_device
    from ..errors import EdgevitError
    from ..estimate import cost_backend, estimate
    from ..models import parse_input_shape

    if get_device(device, list(profile_dirs)).kind == "fpga":
        return _estimate_fpga(model, device, profile_dirs, pe, task, weights, png, as_json)

    shape = parse_input_shape(input_shape)
    with progress_display(enabled=not as_json) as progress:
        if measure_peaks:
            if device != "host":
                raise EdgevitError(f"--measure-peaks measures this machine; it only applies to --device host, "
                                   f"not '{device}'.")
            chosen, replay = cost_backend(get_device(device, list(profile_dirs)), backend)
            with progress.stage(f"measuring {chosen.name} peaks here (GEMM, GEMV)"):
                peaks = replay.measure_peaks()
            atomic_write_json(Path(calibration_dir) / "host-peaks.json", peaks)
        with progress.stage(f"tracing {model} ({precision}) and pricing its operators"):
            result = estimate(model, device, precision, shape, calibration, calibration_dir,
                              list(profile_dirs), num_classes, backend)
    if as_json:
        return print_json(result.as_dict())
    out.print(f"[bold]{result.model}[/] {result.precision} {'x'.join(map(str, result.input_shape))} on "
              f"[bold]{result.device}[/]: predicted [bold]{result.total_ms:.2f} ms[/] "
              f"({result.threads} thread; dispatch {result.dispatch_ms:.2f} ms, runtime call {result.call_ms:.2f} ms)")
    table = Table(title="per stage")
    for col in ("stage", "ops", "GMACs", "ms", "share"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in result.stages:
        table.add_row(s["name"], str(s["ops"]), f"{s['macs'] / 1e9:.3f}", f"{s['ms']:.3f}", f"{s['share']:.1%}")
    out.print(table)
    kinds = Table(title="per operator kind")
    for col in ("kind", "ops", "ms", "figures from"):
        kinds.add_column(col, justify="left" if col in ("kind", "figures from") else "right")
    for k in result.kinds:
        kinds.add_row(k["kind"], str(k["ops"]), f"{k['ms']:.3f}", k["basis"])
    out.print(kinds)
    out.print(f"figures: {result.figures}")
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")


@cli.command("calibrate")
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--device", "-d", required=True, help="The device the profiles ran on (the artifacts' device).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="Use the profiles taken with this many threads.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Calibration file to write (default: out/calibration/DEVICE.json).")
@profiles_option
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON.")
def calibrate_cmd(roots: tuple[Path, ...], device: str, threads: int, output: Path | None,
                  profile_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Fit DEVICE's latency model from the `edgevit profile` results under ROOTS (folders or profile JSONs)."""
    from ..devices import get_device
    from ..estimate import DEFAULT_CALIBRATION_DIR, calibrate

    profile = get_device(device, list(profile_dirs))
    output = output or DEFAULT_CALIBRATION_DIR / f"{profile.name}.json"
    with progress_display(enabled=not as_json) as progress:
        model, passed = calibrate(list(roots), profile.name, threads, progress)
        model.fit_report["threads"] = threads
        model.save(output)
    if as_json:
        return print_json({**model.to_json(), "file": str(output), "passed_over": passed})
    table = Table(title=f"{profile.name}: calibrated from {len(model.sources)} profile(s)")
    for col in ("kind", "G units/s", "GB/s (activations)", "GB/s (weights)", "overhead µs", "from"):
        table.add_column(col, justify="left" if col in ("kind", "from") else "right")

    def giga(v):
        return f"{v / 1e9:.1f}" if v else "-"
    for key, cost in sorted(model.ops.items()):
        r = cost.rates()
        table.add_row(key, giga(r["units_per_s"]), giga(r["bytes_per_s"]), giga(r["weight_bytes_per_s"]),
                      f"{r['overhead_us']:.2f}", cost.basis)
    out.print(table)
    for p in model.dispatch_s:
        out.print(f"{p} models: {model.dispatch_s[p] * 1e6:.2f} µs per operator + {model.call_s[p] * 1e3:.3f} ms per "
                  f"call + {model.unprofiled[p]:.1%} of operator time outside the operator events")
    out.print(f"GEMM microkernel tile (fitted): {model.tile_m} x {model.tile_n}")
    for note in passed:
        out.print(f"[yellow]passed over:[/] {note}")
    out.print(f"calibration: {output}")


def _estimate_fpga(model, device, profile_dirs, pe, task, weights, png, as_json) -> None:
    from ..compile.fpga import FpgaOptions, estimate_fpga, write_estimate_png

    with progress_display(enabled=not as_json) as progress:
        est = estimate_fpga(FpgaOptions(model=model, device=device, weights=weights, task=task, pe=pe,
                                        num_calib=2, profile_dirs=list(profile_dirs)), progress)
    if png is not None:
        write_estimate_png(est, png)
    if as_json:
        return print_json(est)
    out.print(f"[bold]{est['model']}[/] on [bold]{est['device']}[/] ({est['part']}, task {est['task']}), "
              f"PE {est['pe']} "
              f"@ {est['clock_mhz']:g} MHz ({est['pe_choice']}): [bold]{est['ms']:.3f} ms[/], {est['x_floor']:.3f}x "
              f"the MAC floor ({est['floor_ms']:.3f} ms for {est['active_macs'] / 1e6:.1f} M active MACs)")
    table = Table(title="cycles by layer kind")
    for col in ("kind", "cycles", "compute", "DDR stall", "floor", "ms", "bound"):
        table.add_column(col, justify="left" if col in ("kind", "bound") else "right")
    for kind, k in est["by_kind"].items():
        table.add_row(kind, f"{k['cycles']:.0f}", f"{k['compute_cycles']:.0f}", f"{k['ddr_stall_cycles']:.0f}",
                      f"{k['floor_cycles']:.0f}", f"{k['ms']:.3f}", k["bound"])
    out.print(table)
    res = Table(title=f"resources (model, not synthesis); limit {est['utilisation_limit']:.0%}")
    for col in ("resource", "design", "board", "use"):
        res.add_column(col, justify="left" if col == "resource" else "right")
    for key in ("dsp", "bram36", "uram", "lut"):
        res.add_row(key, str(est["resources"][key]), str(est["board"][key]), f"{est['utilisation'][key]:.1%}")
    out.print(res)
    if est["candidates"]:
        cands = Table(title="PE arrays considered")
        for col in ("PE", "fits", "DSP", "BRAM36", "ms", "x floor"):
            cands.add_column(col, justify="left" if col == "PE" else "right")
        for c in est["candidates"]:
            cands.add_row(c["pe"] + (" *" if c["pe"] == est["pe"] else ""), "yes" if c["fits"] else "no",
                          str(c["dsp"]), str(c["bram36"]), f"{c['ms']:.3f}" if c["ms"] else "-",
                          f"{c['x_floor']:.3f}" if c["x_floor"] else "-")
        out.print(cands)
    if png is not None:
        out.print(f"chart: {png}")
