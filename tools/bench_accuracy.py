#!/usr/bin/env python
"""Top-1 of fp32, plain int8, edgevit int8 and Brevitas low-bit, each run through its real artifact.

For each micro variant of the four families, trained here on a labelled set (digits: scikit-learn's,
upsampled to 64 px; shapes, opt-in: edgevit's procedural 10-class set, which these models do not
learn in a bench budget yet), on the held-out quarter
(split_indices(0.25, seed=0), never seen in training or calibration):

  fp32            the trained model in PyTorch eager
  plain int8      the ExecuTorch tutorial recipe (tools/bench_compile.py's plain_executorch:
                  XNNPACKQuantizer + symmetric config, prepare/convert_pt2e, to_edge_transform_and_lower),
                  run as .pte in the ExecuTorch runtime
  edgevit int8    `edgevit compile MODEL --device host --precision int8 --weights CKPT --calib DIR`,
                  the .pte in the ExecuTorch runtime (and the .tflite in LiteRT unless --no-litert)
  W8A8/W6A6/W4A8  Brevitas PTQ + QAT (edgevit.quantization.lowbit), the exported QCDQ ONNX in onnxruntime

Calibration (both int8 recipes and the low-bit PTQ start): 32 training images spread over the train
split. fp32 checkpoints are cached under OUT/weights/ (delete to retrain).
Targets: edgevit int8 within 0.5 points of fp32 and never below plain int8; W6A6 within 2 points.

    python tools/bench_accuracy.py                               # digits, the four families
    python tools/bench_accuracy.py --datasets digits --models shvit_micro --qat-epochs 1
    python tools/bench_accuracy.py --merge out/a/bench_accuracy.json out/b/bench_accuracy.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")
for _noisy in ("torchao", "torch.utils._pytree", "absl"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compile import plain_executorch  # the tutorial recipe, shared with the speed bench
from rich.console import Console
from rich.table import Table

from edgevit._io import atomic_write_bytes, atomic_write_json
from edgevit.backends import get_backend
from edgevit.compile import CompileOptions, compile_model
from edgevit.data import Preprocess, digits, shapes, split_indices
from edgevit.models import create_model, deploy, get_model_spec
from edgevit.quantization.lowbit import LowBitSpec, QatSettings, lowbit_pipeline
from edgevit.training import evaluate_logits, topk_accuracy, train_classifier

MODELS = ["efficientformer_micro", "efficientformerv2_micro", "tiny_vit_micro", "shvit_micro"]
DATASETS = {"digits": digits, "shapes": shapes}
LOWBIT = ["w8a8", "w6a6", "w4a8"]
COLUMNS = ["fp32", "plain_int8", "edgevit_int8_pte", "edgevit_int8_tflite", *LOWBIT]
console = Console(width=160, stderr=True)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return topk_accuracy(logits, labels, ks=(1,))["top1"]


def load_or_train(name: str, dataset: str, x, y, epochs: int, cache: Path) -> tuple[torch.nn.Module, Path]:
    from safetensors.torch import load_file, save_file
    path = cache / f"{name}-{dataset}-e{epochs}.safetensors"
    torch.manual_seed(0)
    model = create_model(name)
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
    else:
        started = time.perf_counter()
        train_classifier(model, x, y, epochs=epochs)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        console.print(f"  trained {name} on {dataset}: {epochs} epochs, {time.perf_counter() - started:.0f} s")
    return model.eval(), path


def write_calibration_folder(folder: Path, images: np.ndarray) -> Path:
    """A flat folder whose sorted order is the given order (compile takes the first --num-calib, then
    verifies on the next images)."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        atomic_write_bytes(folder / f"{i:05d}.png", buffer.getvalue())
    return folder


def bench_model(name: str, dataset: str, data: dict, args) -> dict:
    spec = get_model_spec(name)
    pre = Preprocess(64, 64, tuple(spec.mean), tuple(spec.std), spec.crop_pct, spec.interpolation)
    x = pre.normalise(torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float() / 255)
    y = torch.from_numpy(data["labels"])
    train, test = data["train"], data["test"]
    model, ckpt = load_or_train(name, dataset, x[train], y[train], args.epochs, args.out / "weights")
    calib_idx = data["calib"]
    row, seconds = {"model": name, "dataset": dataset}, {}

    @contextlib.contextmanager
    def timed(key):
        started = time.perf_counter()
        yield
        seconds[key] = round(time.perf_counter() - started, 1)

    row["fp32"] = top1(evaluate_logits(model, x[test], batch_size=256), y[test])
    executorch = get_backend("executorch")
    with timed("plain_int8"):
        plain = plain_executorch(model, torch.zeros(1, 3, 64, 64), x[calib_idx])
    row["plain_int8"] = top1(evaluate_logits(executorch.load(plain, args.threads), x[test]), y[test])

    for backend in ["executorch"] + ([] if args.no_litert else ["litert"]):
        key = "edgevit_int8_pte" if backend == "executorch" else "edgevit_int8_tflite"
        with timed(key):
            result = compile_model(CompileOptions(
                model=name, device="host", backend=backend, precision="int8", weights=ckpt,
                calib=data["calib_dir"], num_calib=len(calib_idx),
                output_root=args.out / "artifacts" / dataset / backend, threads=args.threads,
                min_sqnr=0.0, min_cosine=0.0))  # measure every artifact; its top-1 is the verdict here
        runner = get_backend(backend).load(result.artifact, args.threads)
        row[key] = top1(evaluate_logits(runner, x[test]), y[test])
        row[f"{key}_verify_sqnr_db"] = round(result.manifest["verification"]["sqnr_db"], 2)

    deployed = deploy(model)
    settings = QatSettings(epochs=args.qat_epochs, num_calib=len(calib_idx))
    for bits in LOWBIT:
        with timed(bits):
            lowbit = lowbit_pipeline(deployed, LowBitSpec.parse(bits), False, (x[train], y[train]),
                                     (x[test], y[test]), settings)
        row[bits] = lowbit.accuracy["qcdq_onnx"]
        row[f"{bits}_detail"] = {k: round(v, 2) for k, v in lowbit.accuracy.items()}
        row[f"{bits}_export_matches"] = bool(lowbit.roundtrip["qcdq"]["passed"] and lowbit.roundtrip["qonnx"]["passed"])
    row["targets"] = {
        "edgevit_int8_within_0.5_of_fp32": row["fp32"] - row["edgevit_int8_pte"] <= 0.5,
        "edgevit_int8_not_below_plain": row["edgevit_int8_pte"] >= row["plain_int8"],
        "w6a6_within_2_of_fp32": row["fp32"] - row["w6a6"] <= 2.0,
    }
    row["seconds"] = seconds
    return row


def dataset_split(dataset: str, out: Path, num_calib: int) -> dict:
    images, labels, classes = DATASETS[dataset](64)
    train, test = split_indices(labels, 0.25, seed=0)
    # Calibration: num_calib training images spread over the split (all classes), then 8 for compile's
    # verification step; written as files because `edgevit compile --calib` reads a folder.
    spread = train[np.linspace(0, len(train) - 1, num_calib + 8).round().astype(int)]
    calib_dir = write_calibration_folder(out / "data" / dataset / "calib", images[spread])
    return {"images": images, "labels": labels, "classes": classes, "train": train, "test": test,
            "calib": spread[:num_calib], "calib_dir": calib_dir}


TARGET_LABELS = {"edgevit_int8_within_0.5_of_fp32": "int8 ≥ fp32-0.5", "edgevit_int8_not_below_plain": "int8 ≥ plain",
                 "w6a6_within_2_of_fp32": "w6a6 ≥ fp32-2"}


def print_table(rows: list[dict]) -> None:
    table = Table(title="top-1 % on the held-out split, each through its artifact (targets: ✓ met, ✗ missed)")
    for col in ["dataset", "model", *COLUMNS, *TARGET_LABELS.values()]:
        table.add_column(col, justify="left" if col in ("dataset", "model") else "right")
    for r in rows:
        table.add_row(r["dataset"], r["model"], *(f"{r[c]:.2f}" if c in r else "–" for c in COLUMNS),
                      *("✓" if r["targets"][k] else "✗" for k in TARGET_LABELS))
    Console(width=220).print(table)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    colors = ["#444444", "#bbbbbb", "#1f77b4", "#6baed6", "#2ca02c", "#ff7f0e", "#d62728"]
    for ax, dataset in zip(axes[0], datasets):
        subset = [r for r in rows if r["dataset"] == dataset]
        width = 0.8 / len(COLUMNS)
        for j, (col, color) in enumerate(zip(COLUMNS, colors)):
            values = [r.get(col, np.nan) for r in subset]
            ax.bar(np.arange(len(subset)) + (j - len(COLUMNS) / 2 + 0.5) * width, values, width, label=col, color=color)
        low = min(min(r.get(c, 100) for c in COLUMNS) for r in subset)
        ax.set_ylim(max(0, low - 3), 100.5)
        ax.set_xticks(np.arange(len(subset)), [r["model"].removesuffix("_micro") for r in subset])
        ax.set_ylabel("top-1 % (held-out)")
        ax.set_title(f"{dataset}")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(COLUMNS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    # shapes is opt-in: the micro models do not learn it within a bench budget (efficientformer_micro:
    # 9.8 % = chance after 8 epochs, 24.7 % after 40), so its int8 columns would compare noise.
    parser.add_argument("--datasets", default="digits", help="digits and/or shapes, comma-separated")
    parser.add_argument("--epochs", type=int, default=8, help="fp32 training epochs")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--num-calib", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-litert", action="store_true", help="skip the .tflite column")
    parser.add_argument("--out", type=Path, default=Path("out/bench_accuracy"))
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="only render one table, JSON and PNG (into --out) from earlier runs' JSON files "
                             "(e.g. one run per data set, run in parallel)")
    args = parser.parse_args(argv)
    if args.merge:
        import json
        runs = [json.loads(path.read_text()) for path in args.merge]
        rows = [row for run in runs for row in run["rows"]]
        summary = {"rows": rows, "merged_from": [str(p) for p in args.merge],
                   "settings": [run["settings"] for run in runs],
                   "all_targets_met": all(all(r["targets"].values()) for r in rows),
                   "seconds": round(sum(run["seconds"] for run in runs), 1)}
        atomic_write_json(args.out / "bench_accuracy.json", summary)
        plot(rows, args.out / "bench_accuracy.png")
        print_table(rows)
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = []
    for dataset in args.datasets.split(","):
        data = dataset_split(dataset, args.out, args.num_calib)
        for name in args.models.split(","):
            console.print(f"[bold]{dataset} / {name}[/]")
            row = bench_model(name, dataset, data, args)
            rows.append(row)
            atomic_write_json(args.out / "bench_accuracy.partial.json", {"rows": rows})  # survives a crash
            console.print("  " + "  ".join(f"{c} {row[c]:.2f}" for c in COLUMNS if c in row)
                          + f"  ({sum(row['seconds'].values()):.0f} s)")
    summary = {"rows": rows, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "all_targets_met": all(all(r["targets"].values()) for r in rows),
               "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_json(args.out / "bench_accuracy.json", summary)
    plot(rows, args.out / "bench_accuracy.png")
    print_table(rows)
    console.print(f"{args.out / 'bench_accuracy.json'}, {args.out / 'bench_accuracy.png'}; {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
