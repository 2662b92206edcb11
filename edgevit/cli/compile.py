"""`edgevit compile`: quantize, lower and verify one model for one device."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import out, print_json, profiles_option, progress_display


@cli.command("compile")
@click.argument("model")
@click.option("--device", "-d", required=True, help="Device profile name (see `edgevit devices`).")
@click.option("--backend", default="auto", show_default=True,
              help="executorch, litert, or auto (the device profile's preferred backend).")
@click.option("--precision", type=click.Choice(["int8", "int8-dynamic", "fp16", "fp32"]),
              help="Default: the device profile's default precision. int8-dynamic: LiteRT only.")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint (.safetensors/.pth/.bin) in timm layout.")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Folder of calibration images (nested folders, any Pillow format). "
                   "Default: built-in synthetic 1/f-noise images (the manifest says so).")
@click.option("--num-calib", default=32, show_default=True, type=click.IntRange(1), help="Calibration images.")
@click.option("--num-verify", default=8, show_default=True, type=click.IntRange(1),
              help="Inputs the artifact is checked on against the fp32 eager model.")
@click.option("--input-shape", help="Static input N,C,H,W (required for a user module).")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier size, if the checkpoint's differs.")
@click.option("-o", "--output", "output_root", default=Path("out"), show_default=True,
              type=click.Path(path_type=Path), help="Folder that receives MODEL-DEVICE/.")
@profiles_option
@click.option("--min-sqnr", type=float, help="Verification threshold in dB (default per precision).")
@click.option("--min-cosine", type=float, help="Verification threshold (default per precision).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="Runtime threads for verification on this machine.")
@click.option("--observer", help="int8 activation observer: minmax, histogram, moving-average, percentile "
              "(default: minmax; histogram for TinyViT).")
@click.option("--ptq-steps", help="ViT-aware int8 steps, comma-separated, or 'none' (default: the measured best; "
                                  "see README 'Quantization'): float-norm, float-scores, rescale-norm, "
                                  "float-bridges, bias-correction, bias-correction-folded, "
                                  "bias-correction-heads.")
@click.option("--fp32-layer", "fp32_layers", multiple=True,
              help="Leave this conv/linear layer in fp32 (a name from `edgevit quant-report`; repeatable).")
@click.option("--max-drop", type=float, help="Mixed precision: accept at most this many top-1 points lost "
                                             "(on --eval, or top-1 disagreement with fp32 without it).")
@click.option("--eval", "eval_dir", type=click.Path(path_type=Path),
              help="Labelled images (class subfolders) that --max-drop is measured on.")
@click.option("--pe", help="FPGA boards: PE array ROWSxCOLS (tokens x outputs per cycle), e.g. 8x16. "
                           "Default: the fastest that fits the board.")
@click.option("--task", help="FPGA boards, multi-task models: the task the C-simulation verifies and the estimate "
                             "prices (the accelerator takes any task at run time). Default: the first.")
@click.option("--fixed", "fixed_formats", help="FPGA boards: ap_fixed formats per tensor class, CLASS=WIDTH.INT_BITS "
                                              "comma-separated (act, weight, bias, norm, gate); default act=24.10,"
                                              "weight=16.2,bias=32.12,norm=16.4,gate=17.1.")
@click.option("--hls4ml-heads", is_flag=True, help="FPGA boards: also build the task heads with hls4ml "
                                                "(Brevitas -> QONNX -> hls4ml), verified bit for bit.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of a table.")
def compile_cmd(model: str, device: str, backend: str, precision: str | None, weights: Path | None,
                calib: Path | None, num_calib: int, num_verify: int, input_shape: str | None,
                num_classes: int | None, output_root: Path, profile_dirs: tuple[Path, ...],
                min_sqnr: float | None, min_cosine: float | None, threads: int, observer: str | None,
                ptq_steps: str | None, fp32_layers: tuple[str, ...], max_drop: float | None,
                eval_dir: Path | None, pe: str | None, task: str | None, fixed_formats: str | None, hls4ml_heads: bool,
                as_json: bool) -> None:
    """Quantize, lower and verify MODEL (a zoo name or package.module:builder) for a device.

    For an FPGA board (kind fpga) it builds an HLS accelerator project instead, verified in C-simulation."""
    from ..compile import CompileOptions, compile_model
    from ..devices import get_device

    if get_device(device, list(profile_dirs)).kind == "fpga":
        return _compile_fpga(model, device, weights, calib, num_verify, output_root, profile_dirs, pe, task,
                             fixed_formats, hls4ml_heads, as_json)
    if pe is not None or task is not None or hls4ml_heads or fixed_formats:
        raise click.UsageError("--pe, --task, --fixed and --hls4ml-heads apply to FPGA boards (see `edgevit devices`).")

    opts = CompileOptions(model=model, device=device, backend=backend, precision=precision, weights=weights,
                          calib=calib, num_calib=num_calib, num_verify=num_verify, input_shape=input_shape,
                          num_classes=num_classes, output_root=output_root, profile_dirs=list(profile_dirs),
                          min_sqnr=min_sqnr, min_cosine=min_cosine, threads=threads, observer=observer,
                          ptq_steps=None if ptq_steps is None else
                          [p.strip() for p in ptq_steps.split(",") if p.strip()],
                          fp32_layers=list(fp32_layers), max_drop=max_drop, eval_dir=eval_dir)
    with progress_display(enabled=not as_json) as progress:
        result = compile_model(opts, progress)
    if as_json:
        return print_json(result.manifest)
    _print_compile_summary(result)


def _quantization_rows(m: dict) -> list[tuple[str, str]]:
    q, mp = m.get("quantization"), m.get("mixed_precision")
    rows = []
    if isinstance(q, dict):
        steps = [k for k, on in q["vit_aware"].items() if on]
        rows.append(("int8 recipe", f"{q['observer']} observer; {', '.join(steps) or 'no ViT-aware steps'}"))
    if mp:
        rows.append(("mixed precision", f"{len(mp['layers_fp32'])} fp32 layers; {mp['metric']} "
                                        f"{mp['measured_drop']:.2f} ≤ {mp['max_drop']:g} "
                                        f"(int8: {mp['drop_int8']:.2f})"))
        if "latency_ms_mixed" in mp:
            rows.append(("latency int8 / mixed", f"{mp['latency_ms_int8']:.3f} / {mp['latency_ms_mixed']:.3f} ms"))
    return rows


def _print_compile_summary(result) -> None:
    m = result.manifest
    v, ops = m["verification"], m["ops"]
    table = Table(title=f"{m['model']['name']} → {m['device']['name']} ({m['backend']['name']}, {m['precision']})",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column()
    cal = m["calibration"]
    rows = [
        ("artifact", f"{result.artifact}  ({m['artifact']['size_bytes'] / 2**20:.2f} MB)"),
        ("weights", m["weights"]["source"]),
        ("calibration", f"{cal['count']} × {cal['source']}" if cal else "none (float)"),
        ("SQNR / cosine", f"{v['sqnr_db']:.2f} dB / {v['cosine']:.5f}"),
        ("max abs / top-1 agree", f"{v['max_abs_error']:.4g} / {v['top1_agreement']:.0%} of {v['samples']}"),
        ("ops delegated", f"{ops['delegated_ops']} in {ops['delegate_calls']} calls; "
                          f"{ops['non_delegated_ops']} outside"),
        ("memory (est.)", f"{m['memory']['total_bytes'] / 2**20:.1f} MB of "
                          f"{m['memory']['budget_bytes'] / 2**20:.0f} MB"),
        *_quantization_rows(m),
        ("compile time", f"{m['compile_seconds']} s"),
    ]
    for k, val in rows:
        table.add_row(k, val)
    out.print(table)
    out.print(f"manifest: {result.out_dir / 'manifest.json'}")


def _compile_fpga(model, device, weights, calib, num_verify, output_root, profile_dirs, pe, task, fixed_formats,
                  hls4ml_heads, as_json) -> None:
    from ..backends.hls.reference import Formats
    from ..compile.fpga import FpgaOptions, compile_fpga

    opts = FpgaOptions(model=model, device=device, weights=weights, task=task, pe=pe, calib=calib,
                       num_verify=min(num_verify, 2), output_root=output_root, profile_dirs=list(profile_dirs),
                       hls4ml_heads=hls4ml_heads, formats=Formats.parse(fixed_formats))
    with progress_display(enabled=not as_json) as progress:
        out_dir, manifest = compile_fpga(opts, progress)
    if as_json:
        return print_json(manifest)
    est, v = manifest["estimate"], manifest["verification"]
    table = Table(title=f"{model} → {device} (HLS accelerator, {manifest['design']['pe_rows']}x"
                        f"{manifest['design']['pe_cols']} PE @ {manifest['design']['clock_mhz']:g} MHz)",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in [
        ("project", f"{out_dir}/project  (weights.bin {manifest['weight_image']['bytes'] / 2**20:.2f} MB)"),
        ("C-simulation", f"{v['layers_compared']} layers identical to the fixed-point reference on "
                         f"{v['images']} image(s)"),
        ("features vs fp32", f"cosine {min(v['feature_cosine_vs_fp32']):.6f}"),
        ("task", f"{manifest['task']['name']} (run-time register)"),
        ("estimated latency", f"{est['ms']:.3f} ms ({est['x_floor']:.2f}x the {est['floor_ms']:.3f} ms MAC floor)"),
        ("resources", ", ".join(f"{k} {est['resources'][k]} ({est['utilisation'][k]:.0%})"
                                for k in ("dsp", "bram36", "uram", "lut"))),
        ("compile time", f"{manifest['compile_seconds']} s"),
    ]:
        table.add_row(key, value)
    out.print(table)
    out.print(f"manifest: {out_dir / 'manifest.json'}   report: {out_dir / 'report.md'}")
