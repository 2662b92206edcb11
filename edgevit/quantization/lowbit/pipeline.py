"""Low-bit end to end on tensors: quantize -> PTQ calibrate -> QAT -> export QONNX + QCDQ -> re-run both.

:func:`lowbit_pipeline` is what ``edgevit qat`` (files in, artifact folder out) and
``tools/bench_accuracy.py`` (tensors in, accuracy out) share. Accuracy of the low-bit model is measured
through the exported QCDQ model in onnxruntime — the artifact, not the PyTorch model that made it.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ...training import evaluate_logits, topk_accuracy, train_classifier
from .onnx_export import QcdqRunner, QonnxRunner, export_qcdq_bytes, export_qonnx_bytes
from .quantize import calibrate, layer_settings, quantize_lowbit
from .spec import LowBitSpec

__all__ = ["LowBitResult", "QatSettings", "lowbit_pipeline", "roundtrip_tolerance"]


@dataclass(frozen=True)
class QatSettings:
    epochs: int = 3                 # 0: PTQ only
    lr: float = 2e-4                # fine-tuning from trained fp32 weights (5e-4 measured worse); scales learn too
    batch_size: int = 64
    num_calib: int = 32             # PTQ calibration images (the literature's size), from the training set
    num_qonnx_check: int = 2        # qonnx's executor is ~1 s per image per 100 nodes: a few suffice
    seed: int = 0


@dataclass
class LowBitResult:
    qmodel: nn.Module
    qonnx: bytes
    qcdq: bytes
    accuracy: dict                  # top-1 % on the eval set: fp32, ptq, qat (Brevitas), qcdq_onnx (artifact)
    roundtrip: dict                 # exported models vs the Brevitas model
    layers: list[dict]              # per-layer quantizer settings
    qat_loss: list[float] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def roundtrip_tolerance(reference: torch.Tensor) -> tuple[float, float]:
    """(tight, loose) allowed max |exported - Brevitas| per image, relative to the largest logit.

    Both sides compute the same integer grid in float32, so most images match to float rounding (tight: 1e-4).
    Summation order differs, though, and now and then moves a value across a rounding boundary, shifting one
    activation by one integer step, which later layers carry to the logits; the deeper the model, the more
    images see one (TinyViT micro W8A8 on 450 digits images: 8 % above tight, the worst at 2.5 % of the
    largest logit, top-1 the same on all). So an export matches when the median image meets the tight bound (a
    wrong scale, zero point or bit width moves every image), every image stays within 5 % of the largest logit
    (loose), and the top-1 answers agree on >= 99 % of images."""
    scale = max(1.0, float(reference.abs().max()))
    return 1e-4 * scale, 5e-2 * scale


@contextlib.contextmanager
def _no_stage(description: str, total: int | None = None):
    yield lambda n=1: None


def _top1(forward: Callable, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 64) -> float:
    return topk_accuracy(evaluate_logits(forward, inputs, batch_size), labels, ks=(1,))["top1"]


def _calibration_subset(n_train: int, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=g)[:min(count, n_train)]


def _compare(name: str, out: torch.Tensor, ref: torch.Tensor) -> dict:
    per_image = (out - ref).abs().amax(dim=1)
    tight, loose = roundtrip_tolerance(ref)
    within = float((per_image <= tight).float().mean())
    return {"runtime": name, "samples": int(ref.shape[0]), "max_abs_diff": float(per_image.max()),
            "median_abs_diff": float(per_image.median()), "within_tight": within,
            "tolerance": {"tight": tight, "loose": loose},
            "top1_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean()),
            "passed": float(per_image.median()) <= tight and float(per_image.max()) <= loose
            and float((out.argmax(1) == ref.argmax(1)).float().mean()) >= 0.99}


def lowbit_pipeline(deployed: nn.Module, spec: LowBitSpec, po2: bool,
                    train: tuple[torch.Tensor, torch.Tensor], evaluation: tuple[torch.Tensor, torch.Tensor],
                    settings: QatSettings = QatSettings(), stage=None) -> LowBitResult:
    """``deployed``: the fp32 deploy form (trained). ``train``/``evaluation``: (inputs, labels)."""
    stage = stage or _no_stage
    (x_train, y_train), (x_eval, y_eval) = train, evaluation
    seconds, started = {}, time.perf_counter()
    accuracy = {"fp32": _top1(deployed, x_eval, y_eval)}

    with stage(f"PTQ: {spec.name}{' po2' if po2 else ''}, calibrating on {settings.num_calib} images"):
        torch.manual_seed(settings.seed)
        qmodel = quantize_lowbit(deployed, spec, po2=po2)
        calibrate(qmodel, x_train[_calibration_subset(len(x_train), settings.num_calib, settings.seed)])
        accuracy["ptq"] = _top1(qmodel, x_eval, y_eval)
    seconds["ptq"] = time.perf_counter() - started

    losses = []
    if settings.epochs > 0:
        steps = settings.epochs * -(-len(y_train) // settings.batch_size)
        with stage(f"QAT: {settings.epochs} epochs on {len(y_train)} images", total=steps) as advance:
            losses = train_classifier(qmodel, x_train, y_train, epochs=settings.epochs, lr=settings.lr,
                                      batch_size=settings.batch_size, weight_decay=0.0, seed=settings.seed,
                                      on_step=lambda step, loss: advance(1))
        accuracy["qat"] = _top1(qmodel, x_eval, y_eval)
        seconds["qat"] = time.perf_counter() - started - seconds["ptq"]
    qmodel.eval()

    mark = time.perf_counter()
    with stage("export QONNX + QCDQ ONNX"):
        example = x_eval[:1]
        qonnx, qcdq = export_qonnx_bytes(qmodel, example), export_qcdq_bytes(qmodel, example)
    seconds["export"] = time.perf_counter() - mark

    mark = time.perf_counter()
    with stage(f"QCDQ in onnxruntime on {len(y_eval)} images (exact graph, then optimized)",
               total=2 * len(y_eval)) as advance:
        reference = evaluate_logits(qmodel, x_eval, batch_size=64)
        exact = evaluate_logits(QcdqRunner(qcdq, optimize=False), x_eval, batch_size=64)
        advance(len(y_eval))
        deployed_logits = evaluate_logits(QcdqRunner(qcdq), x_eval, batch_size=64)
        advance(len(y_eval))
    accuracy["qcdq_onnx"] = topk_accuracy(deployed_logits, y_eval, ks=(1,))["top1"]
    n_check = min(settings.num_qonnx_check, len(x_eval))
    with stage(f"QONNX in qonnx's executor on {n_check} images"):
        qonnx_logits = QonnxRunner(qonnx)(x_eval[:n_check])
    seconds["verify"] = time.perf_counter() - mark
    roundtrip = {"qcdq": _compare("onnxruntime (no graph optimizations)", exact, reference),
                 "qonnx": _compare("qonnx.core.onnx_exec", qonnx_logits, reference[:n_check]),
                 "qcdq_optimized": {**_compare("onnxruntime (integer kernels)", deployed_logits, reference),
                                    "passed": None}}  # informative: deploy-time rounding, not an export check
    return LowBitResult(qmodel, qonnx, qcdq, accuracy, roundtrip, layer_settings(qmodel), losses,
                        {k: round(v, 1) for k, v in seconds.items()})
