"""`edgevit qat`: Brevitas low-bit PTQ/QAT of a zoo model, exported as QONNX and QCDQ ONNX."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._group import cli
from ._ui import out, print_json, progress_display


@cli.command("qat")
@click.argument("model")
@click.option("--bits", required=True, help="wNaM: N-bit weights, M-bit activations, each 2..8; e.g. w8a8, w6a6, w4a8.")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Labelled training images: one subfolder per class (ImageFolder layout).")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1), help="QAT epochs.")
@click.option("--weights", type=click.Path(path_type=Path), help="Trained fp32 checkpoint to start from.")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier size, if the checkpoint's differs.")
@click.option("--input-shape", help="Static input N,C,H,W (default: the model's; e.g. 1,3,64,64 for small images).")
@click.option("--po2", is_flag=True, help="Power-of-two scales (fixed point), as FPGA flows want.")
@click.option("--ptq-only", is_flag=True, help="Calibrate only, no QAT.")
@click.option("--num-calib", default=32, show_default=True, type=click.IntRange(1),
              help="PTQ calibration images, taken from --data.")
@click.option("--lr", default=2e-4, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="QAT learning rate.")
@click.option("--eval", "eval_dir", type=click.Path(path_type=Path),
              help="Labelled held-out images for top-1 (default: a stratified 25%% of --data held out).")
@click.option("-o", "--output", "output_root", default=Path("out"), show_default=True,
              type=click.Path(path_type=Path), help="Folder that receives MODEL-wNaM[-po2]/.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of a table.")
def qat_cmd(model: str, bits: str, data: Path, epochs: int, weights: Path | None, num_classes: int | None,
            input_shape: str | None, po2: bool, ptq_only: bool, num_calib: int, lr: float, eval_dir: Path | None,
            output_root: Path, as_json: bool) -> None:
    """Quantize MODEL to low-bit integers with Brevitas (PTQ, then QAT) and export QONNX + QCDQ ONNX."""
    from ..compile.qat import QatOptions, build_qat_artifact
    from ..models import parse_input_shape

    opts = QatOptions(model=model, bits=bits, data=data, epochs=epochs, weights=weights, po2=po2,
                      ptq_only=ptq_only, eval_dir=eval_dir, output_root=output_root, num_calib=num_calib,
                      lr=lr, num_classes=num_classes, input_shape=parse_input_shape(input_shape))
    with progress_display(enabled=not as_json) as progress:
        result = build_qat_artifact(opts, progress)
    if as_json:
        return print_json(result.manifest)
    m = result.manifest
    table = Table(title=f"{m['model']['name']} {m['quantization']['bits']} ({m['quantization']['method']}"
                        f"{', po2 scales' if po2 else ''})")
    table.add_column("model")
    table.add_column("top-1 %", justify="right")
    names = {"fp32": "fp32 (eager)", "ptq": "PTQ (Brevitas)", "qat": "QAT (Brevitas)",
             "qcdq_onnx": "model.qcdq.onnx (onnxruntime)"}
    for key, value in m["accuracy_top1"].items():
        table.add_row(names[key], f"{value:.2f}")
    out.print(table)
    for key, r in m["roundtrip"].items():
        out.print(f"{key} vs Brevitas in {r['runtime']}: median/max |diff| {r['median_abs_diff']:.2g}/"
                  f"{r['max_abs_diff']:.2g} on {r['samples']} images, top-1 agreement {r['top1_agreement']:.0%}")
    out.print(f"eval: {m['data']['eval']['source']} ({m['data']['eval']['count']} images)")
    files = ", ".join(a["file"] for a in m["artifacts"])
    out.print(f"artifacts: {result.out_dir}/ ({files}, manifest.json, report.md)")
