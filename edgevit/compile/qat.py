"""``edgevit qat``: labelled folders in, ``out/MODEL-wNaM[-po2]/`` out (written atomically).

The folder holds ``model.qonnx.onnx`` (FINN/hls4ml), ``model.qcdq.onnx`` (any ONNX runtime),
``qat_weights.safetensors`` (the Brevitas state dict, scales included), ``manifest.json`` (per-layer
quantizer settings for the FPGA flow, accuracy, round-trip checks) and ``report.md``.

To rebuild the QAT model in PyTorch: load the same fp32 ``--weights``, ``deploy``, ``quantize_lowbit``
with the same spec/po2, ``calibrate`` on anything (creates the scale parameters), then
``load_state_dict`` the safetensors file. The fp32 weights are needed because the deploy form's
attention-bias tables are derived buffers, not part of any state dict.
"""
from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from .._io import atomic_directory, atomic_write_json, atomic_write_text, ensure_writable_dir
from ..data import LabelledSet, Preprocess, load_labelled_folder, split_indices
from ..errors import EdgevitError, VerificationError
from ..manifest import MANIFEST_VERSION
from ..models import prepare_model
from ..quantization.lowbit import LowBitResult, LowBitSpec, QatSettings, lowbit_pipeline
from ..quantization.lowbit.quantize import __doc__ as QUANTIZE_DECISIONS  # the decisions, quoted in the report

__all__ = ["QatOptions", "QatResult", "build_qat_artifact"]

HOLDOUT_FRACTION = 0.25


@dataclass
class QatOptions:
    model: str
    bits: str
    data: Path
    epochs: int = 3
    weights: Path | None = None
    po2: bool = False
    ptq_only: bool = False
    eval_dir: Path | None = None
    output_root: Path = Path("out")
    num_calib: int = 32
    lr: float = 2e-4
    num_classes: int | None = None
    input_shape: tuple[int, int, int, int] | None = None  # None: the zoo default (224x224 for full-size models)


@dataclass
class QatResult:
    out_dir: Path
    manifest: dict
    lowbit: LowBitResult


def _data(opts: QatOptions, preprocess: Preprocess, num_classes: int):
    train = load_labelled_folder(opts.data, preprocess)
    if len(train.classes) != num_classes:
        raise EdgevitError(
            f"{opts.data} has {len(train.classes)} class subfolders but {opts.model} has {num_classes} outputs; "
            f"pass --num-classes {len(train.classes)} (and --weights trained on these classes), or point --data "
            "at a folder with one subfolder per output class.")
    if opts.eval_dir is None:
        tr, te = split_indices(train.labels.numpy(), HOLDOUT_FRACTION, seed=0)
        source = f"{train.source} (held-out {HOLDOUT_FRACTION:.0%}, stratified, seed 0)"
        return (train.inputs[tr], train.labels[tr]), (train.inputs[te], train.labels[te]), train, source
    evaluation: LabelledSet = load_labelled_folder(opts.eval_dir, preprocess)
    if evaluation.classes != train.classes:
        raise EdgevitError(f"--eval {opts.eval_dir} has classes {evaluation.classes[:5]}... but --data has "
                           f"{train.classes[:5]}...; both need the same class subfolder names.")
    return (train.inputs, train.labels), (evaluation.inputs, evaluation.labels), train, evaluation.source


def _roundtrip_failure(name: str, v: dict) -> str:
    t = v["tolerance"]
    text = (f"{name.upper()} on {v['samples']} images (at least {t['min_samples']}): exported = "
            f"{v['slope']:.5f} x Brevitas {v['intercept']:+.2g} (median image: "
            f"slope {v['median_image_slope']:.5f}; limits |slope - 1| <= {t['slope']:.2g}, |offset| <= "
            f"{t['offset']:.2g}; a wrong scale or zero point shows here), max |diff| {v['max_abs_diff']:.3g} "
            f"(limit {t['loose']:.2g}), top-1 agreement {v['top1_agreement']:.1%} (limit {t['top1']:.0%})")
    if v.get("same_quant_nodes_as_artifact") is False:
        text += ", and the checked dynamic-batch twin's Quant nodes differ from the artifact's"
    return text


def _artifact_entry(name: str, data: bytes) -> dict:
    return {"file": name, "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def build_qat_artifact(opts: QatOptions, progress=None) -> QatResult:
    started = time.perf_counter()
    spec = LowBitSpec.parse(opts.bits)  # cheap checks first
    if ":" in opts.model:
        raise EdgevitError(f"edgevit qat takes a zoo model name (see `edgevit models`), not '{opts.model}'.")
    ensure_writable_dir(opts.output_root)
    model = prepare_model(opts.model, opts.input_shape, opts.num_classes, opts.weights)
    num_classes = model.num_classes
    preprocess = Preprocess.from_dict(model.preprocessing)
    train, evaluation, labelled, eval_source = _data(opts, preprocess, num_classes)

    settings = QatSettings(epochs=0 if opts.ptq_only else opts.epochs, lr=opts.lr, num_calib=opts.num_calib)
    stage = progress.stage if progress is not None else None
    result = lowbit_pipeline(model.deployed, spec, opts.po2, train, evaluation, settings, stage)
    failed = [_roundtrip_failure(k, v) for k, v in result.roundtrip.items() if v["passed"] is False]
    if failed:
        raise VerificationError(f"The exported {spec.name} model does not match the Brevitas model it came from "
                                f"({'; '.join(failed)}). Nothing was written.")

    name = f"{model.name}-{spec.name}{'-po2' if opts.po2 else ''}"
    out_dir = Path(opts.output_root) / name
    from safetensors.torch import save as save_safetensors
    state = {k: v.detach().contiguous().clone() for k, v in result.qmodel.state_dict().items()}
    blobs = {"model.qonnx.onnx": result.qonnx, "model.qcdq.onnx": result.qcdq,
             "qat_weights.safetensors": save_safetensors(state)}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": "lowbit",
        "model": {"name": model.name, "family": model.family, "num_classes": num_classes,
                  "params": sum(p.numel() for p in model.reference.parameters()), "form": "deploy (BatchNorm folded)"},
        "weights": model.weights,
        "quantization": {
            "tool": "brevitas", "bits": spec.name, "weight_bits": spec.weight_bits, "act_bits": spec.act_bits,
            "po2_scales": opts.po2, "method": "PTQ" if opts.ptq_only else "PTQ + QAT",
            "weights": "per-output-channel, signed, narrow range, zero point 0",
            "activations": "per-tensor input of every Conv2d/Linear, signed, zero point 0",
            "first_last_layers": "8 bits", "bias": "float32",
            "float_ops": "attention matmuls, softmax, GELU/ReLU, LayerNorm standardisation, residual adds, pooling",
            "layers": result.layers,
        },
        "data": {"train": {"source": labelled.source, "count": len(train[1]), "classes": labelled.classes},
                 "eval": {"source": eval_source, "count": len(evaluation[1])},
                 "calibration": {"count": min(settings.num_calib, len(train[1])), "from": "train, seeded subset"}},
        "qat": ({"epochs": settings.epochs, "lr": settings.lr, "batch_size": settings.batch_size,
                 "weight_decay": 0.0, "loss_per_epoch": [round(v, 4) for v in result.qat_loss]}
                if settings.epochs else None),
        "accuracy_top1": {k: round(v, 2) for k, v in result.accuracy.items()},
        "roundtrip": result.roundtrip,
        "artifacts": [_artifact_entry(k, v) for k, v in blobs.items()],
        "rebuild": "deploy(model with the fp32 weights) -> quantize_lowbit(spec, po2) -> calibrate(any images) "
                   "-> load_state_dict(qat_weights.safetensors)",
        "inputs": [{"name": "pixel_values", "shape": list(model.input_shape), "dtype": "float32"}],
        "preprocessing": preprocess.describe(),
        "tool_versions": {"edgevit": version("edgevit"), "python": platform.python_version(),
                          "torch": torch.__version__, **{p: version(p) for p in
                                                         ("brevitas", "onnx", "onnxruntime", "qonnx")}},
        "seconds": {**result.seconds, "total": round(time.perf_counter() - started, 1)},
    }
    with atomic_directory(out_dir) as tmp:
        for file, data in blobs.items():
            (tmp / file).write_bytes(data)
        atomic_write_json(tmp / "manifest.json", manifest)
        atomic_write_text(tmp / "report.md", render_report(manifest))
    return QatResult(out_dir, manifest, result)


def _scale_text(scale) -> str:
    if isinstance(scale, list):
        return f"{min(scale):.3g}..{max(scale):.3g}"
    return f"{scale:.3g}"


def render_report(m: dict) -> str:
    q, acc = m["quantization"], m["accuracy_top1"]
    lines = [f"# {m['model']['name']} {q['bits']}{' (power-of-two scales)' if q['po2_scales'] else ''}", "",
             f"Brevitas {q['method']} on the deploy form; weights: {m['weights']['source']}.", "",
             "## Top-1 on the eval set", "",
             f"Eval: {m['data']['eval']['source']} ({m['data']['eval']['count']} images)",
             "", "| model | top-1 % |", "|---|---:|"]
    labels = {"fp32": "fp32 (eager, deploy form)", "ptq": f"{q['bits']} PTQ (Brevitas)",
              "qat": f"{q['bits']} QAT (Brevitas)", "qcdq_onnx": f"{q['bits']} model.qcdq.onnx (onnxruntime)"}
    lines += [f"| {labels[k]} | {v:.2f} |" for k, v in acc.items()]
    lines += ["", "## Exports re-executed against the Brevitas model", "",
              ("Match: no systematic difference (least-squares exported = a x Brevitas + b over all logits: "
               "|a - 1| <= 2^-9 for it or for the median image's line, a one-step 8-bit scale error being 2^-7; "
               "|b| <= 2^-9 of the largest logit), every image within the loose bound (5 % of the largest "
               "logit at 8-bit activations, x 2 per bit below), top-1 the same on >= 98 %, judged on >= 32 "
               "images. Float summation order differs between runtimes and flips values across rounding "
               "boundaries, so a deep model's logits never match exactly; those flips scatter around zero, an "
               "export error does not. The optimized row is informative (integer kernels round differently)."), "",
              "| export | runtime | images | median / max abs diff | slope - 1 | offset | loose | top-1 agree "
              "| match |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for k, r in m["roundtrip"].items():
        t = r["tolerance"]
        lines.append(f"| {k} | {r['runtime']} | {r['samples']} | {r['median_abs_diff']:.2g} / {r['max_abs_diff']:.2g} "
                     f"| {r['slope'] - 1:.2g} | {r['intercept']:.2g} | {t['loose']:.2g} | {r['top1_agreement']:.0%} "
                     f"| {'-' if r['passed'] is None else 'yes' if r['passed'] else 'no'} |")
    lines += ["", "## What is quantized", "", QUANTIZE_DECISIONS.split("\n\n", 1)[1].strip(), "",
              "## Layers", "", "| layer | type | weight bits | weight scale | input bits | input scale | po2 |",
              "|---|---|---:|---|---:|---:|---|"]
    for r in q["layers"]:
        lines.append(f"| {r['layer']} | {r['type']} | {r['weight']['bits']} | {_scale_text(r['weight']['scale'])} | "
                     f"{r['input']['bits']} | {_scale_text(r['input']['scale'])} | "
                     f"{'yes' if r['weight']['po2'] and r['input']['po2'] else 'no'} |")
    files = ", ".join(f"`{a['file']}` ({a['size_bytes'] / 1024:.0f} KiB)" for a in m["artifacts"])
    lines += ["", "Files: " + files, ""]
    return "\n".join(lines)
