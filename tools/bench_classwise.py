#!/usr/bin/env python
"""Class-wise split (ED-ViT) on Fashion-MNIST: the whole model vs the fused class-wise sub-models, top-1 on the
10,000 test images, for 2 and 3 devices; each sub-model's accuracy on its classes and its size.

    python tools/bench_classwise.py                                   # efficientformer_micro, 2 and 3 devices
    python tools/bench_classwise.py --train 6000 --epochs 3 --json out/bench_classwise.json
    python tools/bench_classwise.py --sub-model shvit_micro --artifacts   # + fp32 artifacts' fused top-1

Training: `--train` images spread evenly over Fashion-MNIST's 60,000 (every class), 64 px, `--epochs` for the
whole model and for every sub-model (the same budget, same seed; the whole model is trained once and shared by
both device sets), the fusion MLP 300 steps with the sub-models frozen. Device sets: rpi5,pixel8 and
rpi5,rpi5,pixel8 (classes shared by fp32 peak MAC/s). Sub-models are not pruned (ED-ViT prunes them).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from rich.console import Console
from rich.table import Table

from edgevit.data import Preprocess, fashion_mnist
from edgevit.models import get_model_spec
from edgevit.split.classwise import (
    build_classwise,
    evaluate_classwise,
    fused_logits_local,
    load_classwise,
    plan_classwise,
    train_classwise,
)
from edgevit.training import topk_accuracy

DEVICE_SETS = {2: ["rpi5", "pixel8"], 3: ["rpi5", "rpi5", "pixel8"]}
console = Console(width=160)


def load(split: str, limit: int | None, pre: Preprocess):
    images, labels, classes = fashion_mnist(split, size=pre.height, limit=limit)
    x = pre.normalise(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    return x, torch.from_numpy(labels), classes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientformer_micro")
    ap.add_argument("--sub-model", default=None)
    ap.add_argument("--train", type=int, default=4000, help="training images (of 60,000)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--devices", default="2,3", help="device counts to run (of 2, 3)")
    ap.add_argument("--artifacts", action="store_true", help="also build fp32 artifacts and report their fused top-1")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    spec = get_model_spec(args.model)
    pre = Preprocess.from_dict(spec.preprocessing())
    started = time.perf_counter()
    x_train, y_train, classes = load("train", args.train, pre)
    x_test, y_test, _ = load("test", None, pre)
    console.print(f"Fashion-MNIST: {len(y_train)} training images, {len(y_test)} test images, "
                  f"{pre.height} px ({time.perf_counter() - started:.0f} s to load)", style="dim")
    results, whole = [], None
    for k in (int(v) for v in args.devices.split(",")):
        devices = DEVICE_SETS[k]
        plan = plan_classwise(args.model, devices, SimpleNamespace(classes=classes, labels=y_train),
                              sub_model=args.sub_model)
        t0 = time.perf_counter()
        models = train_classwise(plan, x_train, y_train, epochs=args.epochs, whole=whole)
        whole = models.whole
        ev = evaluate_classwise(plan, models, x_test, y_test)
        ev["devices"] = devices
        ev["seconds"] = round(time.perf_counter() - t0, 1)
        if args.artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                out_dir, _ = build_classwise(plan, models, Path(tmp), x_train[:32], x_test[:8], ev)
                _, subs, fusion = load_classwise(out_dir)
                logits = fused_logits_local(subs, fusion, x_test)
                ev["artifacts_fused_top1"] = round(topk_accuracy(logits, y_test, ks=(1,))["top1"], 2)
        results.append({"plan": {k2: plan[k2] for k2 in ("plan_id", "model", "sub_model", "devices")}, **ev})
        console.print(f"{k} devices: whole {ev['whole_top1']:.2f} %, fused {ev['fused_top1']:.2f} % "
                      f"({ev['seconds']:.0f} s)", style="dim")
    table = Table(title=f"Class-wise (ED-ViT, unpruned) vs whole {args.model}: Fashion-MNIST, {len(y_test)} test "
                        f"images, {len(y_train)} train, {args.epochs} epochs")
    for col in ("devices", "whole top-1", "fused top-1", *(["artifacts fused"] if args.artifacts else []),
                "sub-model: classes", "own-class top-1", "+other top-1", "params", "MMACs", "vs whole"):
        table.add_column(col, justify="left" if col in ("devices", "sub-model: classes") else "right")
    for r in results:
        for i, s in enumerate(r["sub_models"]):
            first = i == 0
            table.add_row(",".join(r["devices"]) if first else "", f"{r['whole_top1']:.2f}" if first else "",
                          f"{r['fused_top1']:.2f}" if first else "",
                          *([f"{r['artifacts_fused_top1']:.2f}" if first else ""] if args.artifacts else []),
                          f"{s['device']}: " + ",".join(c.split("_", 1)[0] for c in s["classes"]),
                          f"{s['subset_top1']:.2f}", f"{s['all_images_top1']:.2f}", f"{s['params']:,}",
                          f"{s['macs'] / 1e6:.2f}", f"{s['params_vs_whole']:.2f}x")
        table.add_section()
    console.print(table)
    console.print(f"whole {args.model}: {results[0]['whole_params']:,} params, {results[0]['whole_macs'] / 1e6:.2f} "
                  f"MMACs; chance {results[0]['chance_top1']:.0f} %; total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
