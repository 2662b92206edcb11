"""`edgevit quant-report`: per-layer int8 sensitivity (table, JSON, PNG)."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import out, print_json, progress_display


@cli.command("quant-report")
@click.argument("model")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint (.safetensors/.pth/.bin).")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration images (default: synthetic).")
@click.option("--num-calib", default=32, show_default=True, type=click.IntRange(1), help="Calibration images.")
@click.option("--input-shape", help="Static input N,C,H,W (required for a user module).")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier size, if the checkpoint's differs.")
@click.option("--observer", help="Activation observer: minmax, histogram, moving-average, percentile "
              "(default: minmax; histogram for TinyViT).")
@click.option("--ptq-steps", help="ViT-aware steps, comma-separated, or 'none' (as in `edgevit compile`).")
@click.option("-o", "--output", "output_root", default=Path("out"), show_default=True,
              type=click.Path(path_type=Path), help="Folder that receives MODEL-quant-report/.")
@click.option("--top", default=20, show_default=True, type=click.IntRange(1), help="Rows in the table.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
def quant_report_cmd(model: str, weights: Path | None, calib: Path | None, num_calib: int, input_shape: str | None,
                     num_classes: int | None, observer: str | None, ptq_steps: str | None, output_root: Path,
                     top: int, as_json: bool) -> None:
    """Quantize one conv/linear of MODEL at a time and rank the layers by what int8 costs each."""
    from ..compile.quant_report import QuantReportOptions, quant_report

    opts = QuantReportOptions(model=model, weights=weights, calib=calib, num_calib=num_calib, input_shape=input_shape,
                              num_classes=num_classes, observer=observer, output_root=output_root,
                              ptq_steps=None if ptq_steps is None else [p.strip() for p in ptq_steps.split(",")])
    with progress_display(enabled=not as_json) as progress:
        report = quant_report(opts, progress)
    if as_json:
        return print_json(report)
    full = report["full_int8"]
    table = Table(title=f"{report['model']}: int8 sensitivity, one layer at a time ({report['samples']} images; "
                        f"whole model int8: {full['sqnr_db']:.1f} dB, KL {full['kl']:.4f})")
    for col in ("#", "layer", "op", "params", "SQNR dB", "KL"):
        table.add_column(col, justify="left" if col in ("layer", "op") else "right")
    for i, row in enumerate(report["layers"][:top], 1):
        table.add_row(str(i), row["name"], row["op"], f"{row['params']:,}", f"{row['sqnr_db']:.2f}", f"{row['kl']:.5f}")
    out.print(table)
    if len(report["layers"]) > top:
        out.print(f"… {len(report['layers']) - top} less sensitive layers in sensitivity.json")
    out.print(f"written: {report['written']}/sensitivity.json, sensitivity.png")
