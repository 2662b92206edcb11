"""``edgevit quant-report``: which layers int8 hurts, measured one layer at a time.

Model, weights and calibration images resolve exactly as in ``edgevit compile``; the quantizer is the
ExecuTorch/XNNPACK one with the same recipe. The analysis itself is
:mod:`edgevit.quantization.sensitivity` (eager fake-quant, one calibration pass). Output, written
atomically: ``OUT/MODEL-quant-report/{sensitivity.json, sensitivity.png}``.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .._io import atomic_directory, atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ..backends import Backend, get_backend, list_backends
from ..data import Preprocess, find_images, load_image_folder, synthetic_images
from ..models import parse_input_shape, prepare_model
from ..progress import SilentProgress, StageProgress
from ..quantization import QuantRecipe
from ..quantization.sensitivity import FakeQuantGraph
from .pipeline import default_observer

__all__ = ["QuantReportOptions", "quant_report"]


@dataclass
class QuantReportOptions:
    model: str
    weights: Path | None = None
    calib: Path | None = None
    num_calib: int = 32
    input_shape: str | None = None
    num_classes: int | None = None
    observer: str | None = None
    ptq_steps: list[str] | None = None
    output_root: Path = Path("out")


def _chart(report: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    height = max(3.0, 0.22 * len(layers) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height))
    names = [row["name"] for row in layers][::-1]  # most sensitive at the top
    values = [min(row["sqnr_db"], 80.0) for row in layers][::-1]
    colours = ["#d62728" if v < report["full_int8"]["sqnr_db"] + 6 else "#1f77b4" for v in values]
    ax.barh(names, values, color=colours)
    ax.axvline(report["full_int8"]["sqnr_db"], color="black", linestyle="--", linewidth=1,
               label=f"whole model int8: {report['full_int8']['sqnr_db']:.1f} dB")
    ax.set_xlabel("logit SQNR vs fp32 with only this layer int8 (dB, higher = less sensitive)")
    ax.set_title(f"{report['model']}: per-layer int8 sensitivity ({report['samples']} calibration images)")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def recipe_backend() -> Backend:
    """The backend whose PT2E quantizer the recipe annotates (the first registered that takes a recipe)."""
    return next(get_backend(name) for name in list_backends() if get_backend(name).takes_recipe)


def quant_report(opts: QuantReportOptions, progress: StageProgress | None = None) -> dict:
    progress = progress or SilentProgress()
    started = time.perf_counter()
    recipe = QuantRecipe.from_steps(opts.ptq_steps, observer=opts.observer or default_observer(opts.model),
                                    num_calib=opts.num_calib)
    if opts.calib is not None:
        find_images(opts.calib)
    ensure_writable_dir(opts.output_root)
    with progress.stage("deploy form"):
        model = prepare_model(opts.model, parse_input_shape(opts.input_shape), opts.num_classes, opts.weights)
    resolved, deployed, example = model, model.deployed, model.example
    # The family's bridge module and float rule (its float modules stay float in every candidate).
    recipe = replace(recipe, bridge_module=model.spec.family_spec.bridge_module if model.spec else None,
                     float_modules=model.spec.family_spec.float_modules if model.spec else ())
    preprocess = Preprocess.from_dict(model.preprocessing)
    calibration = (load_image_folder(opts.calib, preprocess, opts.num_calib) if opts.calib is not None
                   else synthetic_images(preprocess, opts.num_calib, seed=0))
    backend = recipe_backend()
    quantizer = backend.quantizer(recipe)
    with progress.stage(f"calibrating ({recipe.observer} observers)"):
        graph = FakeQuantGraph(deployed, example, quantizer, calibration.inputs, recipe.calibration_batch)
    with progress.stage("one layer int8 at a time", total=len(graph.layers)) as advance:
        result = graph.sensitivity(calibration.inputs, on_layer=lambda i, n: advance(1))
    report = {"model": resolved.name, "family": resolved.family,
              "weights": str(opts.weights) if opts.weights else "synthetic (not a trained model)",
              "calibration": {"source": calibration.source, "count": len(calibration),
                              "synthetic": opts.calib is None},
              "recipe": recipe.describe(), "backend": f"{backend.name} ({type(quantizer).__name__} patterns)",
              "method": "eager fake-quant with the calibrated observers' qparams; one layer's input, weight "
                        "and output quantizers on at a time, the rest fp32; logits compared with fp32",
              **result.as_dict(), "seconds": round(time.perf_counter() - started, 1)}
    out_dir = Path(opts.output_root) / f"{resolved.name.replace(':', '.')}-quant-report"
    with atomic_directory(out_dir) as tmp:
        atomic_write_json(tmp / "sensitivity.json", report)
        atomic_write_bytes(tmp / "sensitivity.png", _chart(report))
    report["written"] = str(out_dir)
    return report
