"""Low-bit on the full-size zoo: each family's smallest model x W8A8/W6A6/W4A8, both exports, round trip.

    python tools/bench_lowbit.py                      # 4 models x 3 widths at 64x64, PTQ, ~25 min on 2 cores
    python tools/bench_lowbit.py --models shvit_s1 --bits w4a8 --qat-epochs 1 --out out/bench_lowbit

For every (model, bits): the deploy form (synthetic weights, 10 classes, as `edgevit qat` without
--weights) is quantized, calibrated on 32 digits images (PTQ), optionally fine-tuned (``--qat-epochs``),
exported as QONNX and QCDQ (both written to ``OUT/MODEL-wNaM/``), and both exports are re-executed on
64 images against the Brevitas model (``lowbit_pipeline``'s check: qonnx's executor, onnxruntime without
graph optimizations). Prints a table and writes ``OUT/bench_lowbit.json``.

Every family takes 64x64: TinyViT pads its windows at the borders (any resolution), the others are
convolutional down to a few tokens. ``--size 224`` runs the zoo default (the issue's setting; slower).
Synthetic weights give near-tied logits (top-1 agreement is then the harshest it gets); the round trip
does not depend on accuracy.
"""
from __future__ import annotations

import argparse
import json
import time
import traceback
import warnings
from pathlib import Path

import torch

FAMILIES = ["efficientformer_l1", "efficientformerv2_s0", "tiny_vit_5m_224", "shvit_s1"]
BITS = ["w8a8", "w6a6", "w4a8"]


def _data(preprocess, size: int, n_train: int, n_eval: int):
    from edgevit.data import digits, split_indices
    images, labels, _ = digits(64)
    tr, te = split_indices(labels, 0.25, seed=0)
    tr, te = tr[:n_train], te[:n_eval]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    if size != 64:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x, y = preprocess.normalise(x), torch.from_numpy(labels)
    return (x[tr], y[tr]), (x[te], y[te])


def run_one(name: str, bits: str, size: int, qat_epochs: int, out: Path, n_train: int, n_eval: int) -> dict:
    from edgevit.data import Preprocess
    from edgevit.models import prepare_model
    from edgevit.quantization.lowbit import LowBitSpec, QatSettings, lowbit_pipeline

    started = time.perf_counter()
    model = prepare_model(name, (1, 3, size, size), 10)
    train, evaluation = _data(Preprocess.from_dict(model.preprocessing), size, n_train, n_eval)
    settings = QatSettings(epochs=qat_epochs, batch_size=32)
    result = lowbit_pipeline(model.deployed, LowBitSpec.parse(bits), False, train, evaluation, settings)
    folder = out / f"{name}-{bits}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.qonnx.onnx").write_bytes(result.qonnx)
    (folder / "model.qcdq.onnx").write_bytes(result.qcdq)
    keep = ("samples", "median_abs_diff", "max_abs_diff", "slope", "median_image_slope", "intercept",
            "top1_agreement", "passed", "same_quant_nodes_as_artifact")
    return {"model": name, "bits": bits, "size": size, "qat_epochs": qat_epochs,
            "roundtrip": {k: {f: v[f] for f in keep if f in v} for k, v in result.roundtrip.items()},
            "accuracy_top1": result.accuracy, "files": {"qonnx": len(result.qonnx), "qcdq": len(result.qcdq)},
            "seconds": {**result.seconds, "total": round(time.perf_counter() - started, 1)}}


def _row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['bits']} | error: {r['error']} |||||||"
    cells = [r["model"], r["bits"]]
    for k in ("qcdq", "qonnx"):
        v = r["roundtrip"][k]
        cells += [f"{v['samples']}", f"{v['median_abs_diff']:.2g} / {v['max_abs_diff']:.2g}", f"{v['slope'] - 1:+.1e}",
                  f"{v['top1_agreement']:.0%}", "yes" if v["passed"] else "NO"]
    return "| " + " | ".join(cells) + f" | {r['seconds']['total']:.0f} |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=FAMILIES)
    p.add_argument("--bits", nargs="+", default=BITS)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--qat-epochs", type=int, default=0)
    p.add_argument("--num-train", type=int, default=200, help="training images (calibration + QAT)")
    p.add_argument("--num-eval", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("out/bench_lowbit"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| model | bits | QCDQ images | median / max abs diff | slope - 1 | top-1 agree | match | QONNX images "
          "| median / max abs diff | slope - 1 | top-1 agree | match | s |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|", flush=True)
    for name in args.models:
        for bits in args.bits:
            try:
                r = run_one(name, bits, args.size, args.qat_epochs, args.out, args.num_train, args.num_eval)
            except Exception as e:  # one broken row must not lose the others
                r = {"model": name, "bits": bits, "error": f"{type(e).__name__}: {e}"[:300],
                     "traceback": traceback.format_exc()}
            rows.append(r)
            print(_row(r), flush=True)
            (args.out / "bench_lowbit.json").write_text(json.dumps(rows, indent=1))
    return 0 if all("error" not in r and r["roundtrip"]["qcdq"]["passed"] and r["roundtrip"]["qonnx"]["passed"]
                    for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
