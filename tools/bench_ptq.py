"""Which int8 recipe keeps accuracy: every observer and ViT-aware step, measured through real .pte files.

Loads (or trains) each model exactly as tools/bench_accuracy.py does, on the same data and split, from the
same weight cache (fashion-mnist: its --train-images subset of the 60,000 training images, scored on the
10,000 test images, or an evenly spread --test-images share of them; digits: split_indices(0.25, seed=0)),
calibrates on 32 training images (fashion-mnist: bench_accuracy's; digits: every k-th, as the README's
digits table was measured), lowers each recipe to an ExecuTorch .pte,
and scores it in the runtime: top-1 (± its SE), top-1 agreement with fp32, logit SQNR vs fp32 (the finer
measure). "plain" is the ExecuTorch tutorial recipe (XNNPACKQuantizer + get_symmetric_quantization_config():
per-tensor weights, histogram observers). The "mixed" row runs the --max-drop search with the agreement
proxy on 300 training images (never the test split) and reports that artifact's test top-1.

    python tools/bench_ptq.py --dataset fashion-mnist --epochs 4 --models micro --json out/bench_ptq/fashion-mnist.json
    python tools/bench_ptq.py --weights-dir out/micro-weights --json out/bench_ptq.json     # digits, 4 families
    python tools/bench_ptq.py --models shvit_micro --configs "plain;default;steps:none"
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")
logging.getLogger("torchao").setLevel(logging.ERROR)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_accuracy: the same data, split and weights
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy

from bench_accuracy import (  # noqa: E402
    DATASETS,
    calibration_indices,
    expand_models,
    load_dataset,
    load_or_train,
    model_inputs,
    paired_standard_error,
    standard_error,
)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from edgevit._io import atomic_write_bytes, atomic_write_json  # noqa: E402
from edgevit.backends import get_backend  # noqa: E402
from edgevit.compile.batched import run_batched  # noqa: E402
from edgevit.compile.metrics import compare_outputs  # noqa: E402
from edgevit.compile.mixed import DropMetric, search_mixed_precision  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402
from edgevit.models import deploy, get_family_spec  # noqa: E402
from edgevit.progress import SilentProgress  # noqa: E402
from edgevit.quantization import DEFAULT_OBSERVER, QuantRecipe, quantize_pt2e  # noqa: E402
from edgevit.quantization.recipe import PTQ_STEPS  # noqa: E402
from edgevit.training import topk_accuracy  # noqa: E402

ISSUE11_MICRO = ["efficientformer_micro", "efficientformerv2_micro", "tiny_vit_micro", "shvit_micro"]
ALL_STEPS = "float-norm,float-scores,rescale-norm,float-bridges,bias-correction"
CONFIGS = ["plain", "default", "observer:minmax", "observer:moving-average", "observer:percentile",
           "observer:histogram",
           "steps:none", "steps:float-norm", "steps:float-scores", "steps:float-norm,float-scores",
           "steps:+rescale-norm", "steps:+float-bridges", "steps:+bias-correction", "mixed:0.5"]


def family_facts(family: str) -> dict:
    """The family's facts `edgevit compile` gives every recipe (QuantRecipe.for_family): its bridge module, its
    float rule (e.g. EfficientViT-MIT's ReluLinearAttention stays float whatever the steps say) and its default
    observer (TinyViT: histogram; an "observer:X" config replaces it)."""
    spec = get_family_spec(family)
    return {"bridge_module": spec.bridge_module, "float_modules": tuple(spec.float_modules),
            "observer": spec.observer or DEFAULT_OBSERVER}


def recipe_for(config: str, family: str) -> QuantRecipe:
    facts = family_facts(family)
    kind, _, arg = config.partition(":")
    if kind == "observer":
        return QuantRecipe(**{**facts, "observer": arg})
    if kind == "steps":
        if arg.startswith("+"):  # the default steps (every one QuantRecipe switches on) plus one
            default = [s for s, f in PTQ_STEPS.items() if getattr(QuantRecipe(), f)]
            return QuantRecipe.from_steps(default + [arg[1:]], **facts)
        return QuantRecipe.from_steps(arg.split(","), **facts)
    return QuantRecipe(**facts)


def lower(config: str, deployed, example, calibration, family, backend, metric=None):
    """The lowered artifact of one configuration (and the mixed-precision block, if any)."""
    progress = SilentProgress()
    if config == "plain":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        graph = quantize_pt2e(deployed, example, quantizer, calibration)
        allow_exported_model_train_eval(graph)
        return backend.lower(graph, example, "fp32", None, progress), None  # already q/dq: lower as is
    if config.startswith("mixed:"):
        recipe = QuantRecipe(**family_facts(family))
        int8 = backend.lower(deployed, example, "int8", calibration, progress, recipe=recipe)
        return search_mixed_precision(backend, deployed, example, recipe, calibration, int8, metric,
                                      float(config.split(":")[1]), progress)
    return backend.lower(deployed, example, "int8", calibration, progress,
                         recipe=recipe_for(config, family)), None


def print_table(results: list[dict], title: str) -> None:
    """One row per configuration, one column per model: top-1 ± SE / SQNR dB (mixed: fp32 layers)."""
    models = list(dict.fromkeys(r["model"] for r in results))
    configs = list(dict.fromkeys(r["config"] for r in results))
    by = {(r["model"], r["config"]): r for r in results}
    table = Table(title=title)
    table.add_column("config")
    for model in models:
        table.add_column(model.removesuffix("_micro"), justify="right")

    def cell(r: dict | None) -> str:
        if r is None:
            return "–"
        if "error" in r:
            return "error"
        text = f"{r['top1']:.2f} ±{r['se']:.2f}"
        if "sqnr_db" in r:
            text += f" / {r['sqnr_db']:.1f}"
        if "mixed_precision" in r:
            text += f" ({len(r['mixed_precision']['layers_fp32'])})"
        return text

    for config in configs:
        table.add_row(config, *(cell(by.get((m, config))) for m in models))
    Console(width=max(160, 26 * len(models) + 30)).print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ISSUE11_MICRO),
                        help="comma-separated zoo names; 'micro': every family's micro variant")
    parser.add_argument("--dataset", default="digits", choices=DATASETS[:2])
    parser.add_argument("--configs", default=";".join(CONFIGS), help="';'-separated")
    parser.add_argument("--epochs", type=int, default=8,
                        help="as the bench_accuracy run whose weights to use (the cache key; its fashion-mnist "
                             "default is 4)")
    parser.add_argument("--train-images", type=int, default=10000, help="as bench_accuracy's (fashion-mnist)")
    parser.add_argument("--test-images", type=int, help="score on an evenly spread share of the test split")
    parser.add_argument("--weights-dir", type=Path, default=Path("out/bench_accuracy/weights"),
                        help="bench_accuracy's weight cache (trained here if missing)")
    parser.add_argument("--num-calib", type=int, default=32)
    parser.add_argument("--json", type=Path, help="write the results here (and an SQNR chart as .png beside it)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except EdgevitError as e:
        Console(stderr=True).print(f"[red]error:[/] {e}")
        return 2


def run(args) -> int:
    torch.set_num_threads(1)
    models = expand_models(args.models)
    data = load_dataset(args.dataset, args.train_images)
    train, test = data["train"], data["test"]
    if args.test_images:
        test = test[np.linspace(0, len(test) - 1, min(args.test_images, len(test))).round().astype(int)]
    backend = get_backend("executorch")
    example = torch.zeros(1, 3, 64, 64)
    results = []
    started_all = time.perf_counter()
    for name in models:
        x, y, spec = model_inputs(name, data)
        model, _, _ = load_or_train(name, args.dataset, x[train], y[train], args.epochs, args.weights_dir,
                                    len(data["classes"]))
        deployed = deploy(model)
        if args.dataset == "digits":  # the selection the README's digits table was measured with
            calibration = x[train[:: len(train) // args.num_calib][:args.num_calib]]
        else:  # bench_accuracy's (the same images its int8 columns calibrate on)
            calibration = x[calibration_indices(train, args.num_calib)[:args.num_calib]]
        val = x[train[1:: len(train) // 300][:300]]
        with torch.no_grad():
            reference = run_batched(model, x[test], 64)
            metric = DropMetric(val, None, run_batched(model, val, 64), "300 training images")
        fp32_right = (reference.argmax(1) == y[test]).numpy()
        fp32 = topk_accuracy(reference, y[test], (1,))["top1"]
        print(f"{name}: fp32 top-1 {fp32:.2f} on {len(test)} images", flush=True)
        results.append({"model": name, "config": "fp32", "top1": fp32, "se": standard_error(fp32, len(test))})
        for config in args.configs.split(";"):
            started = time.perf_counter()
            try:
                lowered, mixed = lower(config, deployed, example, calibration, spec.family, backend, metric)
            except EdgevitError as e:  # e.g. a --max-drop no mixed precision reaches: a result too
                results.append({"model": name, "config": config, "error": str(e)})
                print(f"  {config:34s} {e}", flush=True)
                continue
            logits = run_batched(backend.load(lowered.data), x[test], 1)
            agreement = compare_outputs(reference, logits)
            top1 = topk_accuracy(logits, y[test], (1,))["top1"]
            right = (logits.argmax(1) == y[test]).numpy()
            row = {"model": name, "config": config, "top1": top1, "se": standard_error(top1, len(test)),
                   "paired_se_vs_fp32": paired_standard_error(right, fp32_right),
                   "agreement": agreement.top1_agreement * 100, "sqnr_db": agreement.sqnr_db,
                   "steps_ran": {k: len(v) for k, v in ((lowered.details.get("quantization") or {})
                                                        .get("steps_ran") or {}).items()} if isinstance(
                       lowered.details.get("quantization"), dict) else {},
                   "seconds": round(time.perf_counter() - started, 1)}
            if mixed:
                row["mixed_precision"] = {k: mixed[k] for k in mixed if k != "sensitivity_ranking"}
            results.append(row)
            extra = f" fp32 layers {len(mixed['layers_fp32'])}" if mixed else ""
            print(f"  {config:34s} top-1 {row['top1']:6.2f}  agree {row['agreement']:6.2f}  "
                  f"SQNR {row['sqnr_db']:6.2f} dB  {row['steps_ran'] or ''}{extra}  ({row['seconds']} s)", flush=True)
        if args.json:  # after every model: survives an interrupted run
            atomic_write_json(args.json, {"dataset": args.dataset, "test_images": len(test),
                                          "settings": {k: str(v) if isinstance(v, Path) else v
                                                       for k, v in vars(args).items()},
                                          "seconds": round(time.perf_counter() - started_all, 1),
                                          "results": results})
    print_table(results, f"{args.dataset}: top-1 % ± SE / logit SQNR vs fp32 (dB) on {len(test)} test images, "
                         "each recipe through its .pte (mixed: layers left fp32)")
    if args.json:
        plot(results, args.json.with_suffix(".png"))
    return 0


def plot(results: list[dict], path: Path) -> None:
    """SQNR (dB) per configuration and model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in results if "sqnr_db" in r]
    if not rows:
        return
    models = list(dict.fromkeys(r["model"] for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    grid = np.full((len(configs), len(models)), np.nan)
    for r in rows:
        grid[configs.index(r["config"]), models.index(r["model"])] = r["sqnr_db"]
    fig, ax = plt.subplots(figsize=(1.0 * len(models) + 4, 0.4 * len(configs) + 2))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for i in range(len(configs)):
        for j in range(len(models)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(models)), [m.removesuffix("_micro") for m in models], rotation=30, fontsize=8)
    ax.set_yticks(range(len(configs)), configs, fontsize=8)
    fig.colorbar(image, label="logit SQNR vs fp32 (dB)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


if __name__ == "__main__":
    sys.exit(main())
