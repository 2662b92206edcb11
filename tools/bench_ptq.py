"""Which int8 recipe keeps accuracy: every observer and ViT-aware step, measured through real .pte files.

Trains (or loads) the four micro variants on scikit-learn's digits (64 px, split_indices(0.25, seed=0),
the same split as tools/bench_accuracy.py), calibrates on 32 training images spread over the split,
lowers each recipe to an ExecuTorch .pte, and scores it in the runtime on the 450 held-out images:
top-1, top-1 agreement with fp32, logit SQNR vs fp32. "plain" is the ExecuTorch tutorial recipe
(XNNPACKQuantizer + get_symmetric_quantization_config(): per-tensor weights, histogram observers).
The "mixed" row runs the --max-drop search with the agreement proxy on 300 training images (never
the test split) and reports that artifact's test top-1.

    python tools/bench_ptq.py --weights-dir out/micro-weights --json out/bench_ptq.json
    python tools/bench_ptq.py --models shvit_micro --configs "plain;default;steps:none"
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
logging.getLogger("torchao").setLevel(logging.ERROR)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy

from edgevit.backends import get_backend  # noqa: E402
from edgevit.compile.batched import run_batched  # noqa: E402
from edgevit.compile.metrics import compare_outputs  # noqa: E402
from edgevit.compile.mixed import DropMetric, search_mixed_precision  # noqa: E402
from edgevit.data import Preprocess, digits, split_indices  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402
from edgevit.models import create_model, deploy, get_family_spec, get_model_spec  # noqa: E402
from edgevit.progress import SilentProgress  # noqa: E402
from edgevit.quantization import QuantRecipe, quantize_pt2e  # noqa: E402
from edgevit.training import topk_accuracy, train_classifier  # noqa: E402

MODELS = ["efficientformer_micro", "efficientformerv2_micro", "tiny_vit_micro", "shvit_micro"]
ALL_STEPS = "float-norm,float-scores,rescale-norm,float-bridges,bias-correction"
CONFIGS = ["plain", "default", "observer:minmax", "observer:moving-average", "observer:percentile",
           "observer:histogram",
           "steps:none", "steps:float-norm", "steps:float-scores", "steps:float-norm,float-scores",
           "steps:+rescale-norm", "steps:+float-bridges", "steps:+bias-correction", "mixed:0.5"]


def load_or_train(name: str, x: torch.Tensor, y: torch.Tensor, epochs: int, weights_dir: Path | None):
    from safetensors.torch import load_file, save_file
    torch.manual_seed(0)
    model = create_model(name)
    path = weights_dir / f"{name}-digits-e{epochs}.safetensors" if weights_dir else None
    if path is not None and path.is_file():
        model.load_state_dict(load_file(str(path)))
    else:
        train_classifier(model, x, y, epochs=epochs)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval()


def recipe_for(config: str, family: str) -> QuantRecipe:
    bridge = get_family_spec(family).bridge_module
    kind, _, arg = config.partition(":")
    if kind == "observer":
        return QuantRecipe(observer=arg, bridge_module=bridge)
    if kind == "steps":
        if arg.startswith("+"):  # the default steps plus one
            default = [s for s, f in (("float-norm", "float_norm"), ("float-scores", "float_scores"),
                                      ("rescale-norm", "rescale_norm"), ("float-bridges", "float_bridges"),
                                      ("bias-correction", "bias_correction")) if getattr(QuantRecipe(), f)]
            return QuantRecipe.from_steps(default + [arg[1:]], bridge_module=bridge)
        return QuantRecipe.from_steps(arg.split(","), bridge_module=bridge)
    return QuantRecipe(bridge_module=bridge)


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
        recipe = QuantRecipe(bridge_module=get_family_spec(family).bridge_module)
        int8 = backend.lower(deployed, example, "int8", calibration, progress, recipe=recipe)
        return search_mixed_precision(backend, deployed, example, recipe, calibration, int8, metric,
                                      float(config.split(":")[1]), progress)
    return backend.lower(deployed, example, "int8", calibration, progress,
                         recipe=recipe_for(config, family)), None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--configs", default=";".join(CONFIGS), help="';'-separated")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--weights-dir", type=Path, help="cache trained weights here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    images, labels, _ = digits(64)
    train, test = split_indices(labels, 0.25, seed=0)
    backend = get_backend("executorch")
    example = torch.zeros(1, 3, 64, 64)
    results = []
    for name in args.models.split(","):
        spec = get_model_spec(name)
        pre = Preprocess(64, 64, tuple(spec.mean), tuple(spec.std), spec.crop_pct, spec.interpolation)
        x = pre.normalise(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
        y = torch.from_numpy(labels)
        model = load_or_train(name, x[train], y[train], args.epochs, args.weights_dir)
        deployed = deploy(model)
        calibration = x[train[:: len(train) // 32][:32]]
        val = x[train[1:: len(train) // 300][:300]]
        with torch.no_grad():
            reference = run_batched(model, x[test], 64)
            metric = DropMetric(val, None, run_batched(model, val, 64), "300 training images")
        fp32 = topk_accuracy(reference, y[test], (1,))["top1"]
        print(f"{name}: fp32 top-1 {fp32:.2f}", flush=True)
        results.append({"model": name, "config": "fp32", "top1": fp32})
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
            row = {"model": name, "config": config, "top1": topk_accuracy(logits, y[test], (1,))["top1"],
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
