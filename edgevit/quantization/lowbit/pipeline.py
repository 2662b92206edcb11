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
from .onnx_export import QcdqRunner, QonnxRunner, export_qcdq_bytes, export_qonnx_bytes, quant_parameters
from .quantize import calibrate, layer_settings, quantize_lowbit
from .spec import LowBitSpec

__all__ = ["LowBitResult", "QatSettings", "lowbit_pipeline", "roundtrip_inputs", "roundtrip_tolerance"]


@dataclass(frozen=True)
class QatSettings:
    epochs: int = 3                 # 0: PTQ only
    lr: float = 2e-4                # fine-tuning from trained fp32 weights (5e-4 measured worse); scales learn too
    batch_size: int = 64
    num_calib: int = 32             # PTQ calibration images (the literature's size), from the training set
    num_roundtrip: int = 64         # images the exports are judged on (eval first, then train: no labels needed)
    seed: int = 0
    # Largest Adam step (~the lr) as a fraction of a layer's weight RMS (_param_groups); 0.001 slows every layer
    # with weight RMS under 0.2, i.e. nearly all: QAT fine-tunes each layer by the same relative amount.
    max_relative_step: float = 0.001


def _param_groups(model: nn.Module, lr: float, max_relative_step: float) -> list[dict]:
    """AdamW groups for QAT of the folded deploy form: each layer's weight (dim > 1) and bias at
    lr x min(1, max_relative_step x RMS(weight) / lr); every other parameter (activation scales, norms) at lr.

    Adam moves every element by about lr per step whatever its gradient's size, so a weight tensor whose RMS
    is near lr is rewritten rather than fine-tuned. Folding puts such layers in the deploy form: a layer
    scale multiplied into its projection's weight and bias (mobilenetv4_hybrid_micro on Fashion-MNIST: nine
    weights of RMS 2-6e-4, next to 3e-2..1e-1 elsewhere; at lr 2e-4 for every layer, its W6A6/W4A8 after one
    QAT epoch on 1,000 images scored 9.90/10.00 % = chance on the 10,000 test images, fp32 81.37). Scaling the
    step with the weight's RMS (the per-layer trust ratio of LAMB, You et al., arXiv:1904.00962) caps it at
    ``max_relative_step`` of the RMS: at 0.01 the same run scores 77.97/77.37 %; at 0.1 (only those nine
    scaled) 47.89/38.96 %. 0.01 still lost 3 points of W6A6 in QAT that PTQ had kept (with the MSE activation
    init, all 10,000 test images: PTQ -0.67, QAT at 0.01 -3.03, even at lr 2e-5 -2.62: the slowed layers
    still move 1 % a step, 16 % in an epoch of 16 steps); at 0.001 QAT -0.63 (1,000 images), -0.15 (5,000).
    Layers with RMS above lr / max_relative_step (0.2 at the defaults) keep lr."""
    factors: dict[int, float] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() > 1:
            rms = float(weight.detach().pow(2).mean().sqrt())
            factor = min(1.0, max_relative_step * rms / lr) if lr > 0 else 1.0
            for p in (weight, getattr(module, "bias", None)):
                if isinstance(p, nn.Parameter):
                    factors[id(p)] = factor
    return [{"params": [p], "lr": lr * factors.get(id(p), 1.0)} for p in model.parameters() if p.requires_grad]


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


MIN_ROUNDTRIP_IMAGES = 32
MAX_SLOPE_ERROR = 2.0 ** -9     # a one-step scale error of an 8-bit grid is 2**-7: caught with 4x margin
MAX_OFFSET = 2.0 ** -9          # x the largest logit (>= 1); one zero-point step of an 8-bit output is ~2**-7
MIN_TOP1_AGREEMENT = 0.98       # at most 1 of 64 images


def roundtrip_tolerance(reference: torch.Tensor, act_bits: int = 8) -> tuple[float, float]:
    """(tight, loose) allowed max |exported - Brevitas| per image, relative to the largest logit.

    Both sides compute the same integer grid, but the float32 sums inside each conv/matmul run in another
    order (onnxruntime's kernels vs PyTorch's: ~1e-6 apart). Where a sum lands within that of a rounding
    boundary of the next quantizer, one activation moves by one integer step, and every later quantizer
    turns the small change it causes into more such steps. On the micro variants most images see none
    (tight: 1e-4 of the largest logit); on a full-size model at 224x224 every image does (shvit_s1 W4A8:
    the first step at the 31st of 78 quantized layers, one activation of 21,952, after which the steps
    multiply to ~30 % of the last block's activations; logits up to 4 % of the largest apart, median 1.7 %).
    Those differences scatter around zero. What an export error does instead is systematic: a wrong scale
    multiplies, a wrong zero point shifts. So an export matches (:func:`_compare`) when the least-squares
    line exported = a * Brevitas + b over all logits has |a - 1| <= 2**-9 and |b| <= 2**-9 of the largest logit
    (shvit_s1 at 224: a - 1 = 6e-4, b = 3e-4; the test's one-step scale error: a - 1 = 8e-3), no image is off
    by more than loose, and top-1 agrees on >= 98 % of >= 32 images. Loose is 5 % of the largest logit at
    8-bit activations, times 2**(8 - act_bits) below: one step of a 6-bit activation is 4 of an 8-bit one
    (shvit_s1 W6A6 at 64x64: one image of 64 off by 6.5 %, the median one by 1e-7). Where one or two such
    images tilt the line, the median of the per-image lines (10 logits each) still sits at 1: the slope
    passes if either estimate is within 2**-9 (a one-step scale error moves both, on every image)."""
    scale = max(1.0, float(reference.abs().max()))
    return 1e-4 * scale, 5e-2 * 2.0 ** max(0, 8 - act_bits) * scale


def _line_fit(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """Least squares out = a * ref + b over every logit of every image (float64)."""
    r, o = ref.double().flatten(), out.double().flatten()
    rc = r - r.mean()
    denominator = float((rc * rc).sum())
    a = float((rc * (o - o.mean())).sum()) / denominator if denominator > 0 else 1.0
    return a, float(o.mean() - a * r.mean())


@contextlib.contextmanager
def _no_stage(description: str, total: int | None = None):
    yield lambda n=1: None


def _top1(forward: Callable, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 64) -> float:
    return topk_accuracy(evaluate_logits(forward, inputs, batch_size), labels, ks=(1,))["top1"]


def _calibration_subset(n_train: int, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=g)[:min(count, n_train)]


def _compare(name: str, out: torch.Tensor, ref: torch.Tensor, min_samples: int = 1, act_bits: int = 8) -> dict:
    """The round-trip verdict of :func:`roundtrip_tolerance` (``min_samples``: fewer images never pass;
    ``act_bits``: the narrowest activation width in the model)."""
    per_image = (out - ref).abs().amax(dim=1)
    tight, loose = roundtrip_tolerance(ref, act_bits)
    slope, intercept = _line_fit(out, ref)
    image_slope = float(torch.tensor([_line_fit(o, r)[0] for o, r in zip(out, ref)]).median())
    slope_error = min(abs(slope - 1), abs(image_slope - 1))
    agreement = float((out.argmax(1) == ref.argmax(1)).float().mean())
    max_offset = MAX_OFFSET * max(1.0, float(ref.abs().max()))
    return {"runtime": name, "samples": int(ref.shape[0]), "max_abs_diff": float(per_image.max()),
            "median_abs_diff": float(per_image.median()), "within_tight": float((per_image <= tight).float().mean()),
            "slope": slope, "median_image_slope": image_slope, "intercept": intercept,
            "tolerance": {"tight": tight, "loose": loose, "slope": MAX_SLOPE_ERROR,
                          "offset": max_offset, "top1": MIN_TOP1_AGREEMENT,
                          "min_samples": min_samples},
            "top1_agreement": agreement,
            "passed": int(ref.shape[0]) >= min_samples and slope_error <= MAX_SLOPE_ERROR
            and abs(intercept) <= max_offset and float(per_image.max()) <= loose and agreement >= MIN_TOP1_AGREEMENT}


def roundtrip_inputs(x_eval: torch.Tensor, x_train: torch.Tensor, count: int) -> torch.Tensor:
    """The images the exports are judged on: eval first, topped up from train (a round trip needs no labels)."""
    return torch.cat([x_eval[:count], x_train[:max(0, count - len(x_eval))]])


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
                                      on_step=lambda step, loss: advance(1),
                                      param_groups=_param_groups(qmodel, settings.lr, settings.max_relative_step))
        accuracy["qat"] = _top1(qmodel, x_eval, y_eval)
        seconds["qat"] = time.perf_counter() - started - seconds["ptq"]
    qmodel.eval()

    mark = time.perf_counter()
    with stage("export QONNX + QCDQ ONNX"):
        example = x_eval[:1]
        qonnx, qcdq = export_qonnx_bytes(qmodel, example), export_qcdq_bytes(qmodel, example)
        # qonnx's executor costs ~25 ms per node whatever the batch: the check runs a dynamic-batch twin on
        # all images in one pass, and the twin's Quant nodes must equal the artifact's, one for one.
        qonnx_twin = export_qonnx_bytes(qmodel, example, dynamic_batch=True)
    seconds["export"] = time.perf_counter() - mark

    mark = time.perf_counter()
    x_check = roundtrip_inputs(x_eval, x_train, settings.num_roundtrip)
    n_check, need = len(x_check), min(MIN_ROUNDTRIP_IMAGES, settings.num_roundtrip)
    with stage(f"QCDQ in onnxruntime on {len(y_eval)} + {n_check} images (optimized, then exact graph)",
               total=len(y_eval) + n_check) as advance:
        deployed_logits = evaluate_logits(QcdqRunner(qcdq), x_eval, batch_size=64)
        advance(len(y_eval))
        reference = evaluate_logits(qmodel, x_check, batch_size=64)
        exact = evaluate_logits(QcdqRunner(qcdq, optimize=False), x_check, batch_size=64)
        advance(n_check)
    accuracy["qcdq_onnx"] = topk_accuracy(deployed_logits, y_eval, ks=(1,))["top1"]
    with stage(f"QONNX in qonnx's executor on {n_check} images"):
        qonnx_logits = QonnxRunner(qonnx_twin)(x_check)
    seconds["verify"] = time.perf_counter() - mark
    bits = spec.act_bits
    qonnx_check = _compare("qonnx.core.onnx_exec (dynamic-batch twin)", qonnx_logits, reference, need, bits)
    qonnx_check["same_quant_nodes_as_artifact"] = quant_parameters(qonnx) == quant_parameters(qonnx_twin)
    qonnx_check["passed"] = qonnx_check["passed"] and qonnx_check["same_quant_nodes_as_artifact"]
    k = min(len(x_eval), n_check)  # the optimized graph on the eval images among the checked ones
    optimized = _compare("onnxruntime (integer kernels)", deployed_logits[:k], reference[:k], 1, bits)
    roundtrip = {"qcdq": _compare("onnxruntime (no graph optimizations)", exact, reference, need, bits),
                 "qonnx": qonnx_check,
                 "qcdq_optimized": {**optimized, "passed": None}}  # informative: deploy-time rounding, not a check
    return LowBitResult(qmodel, qonnx, qcdq, accuracy, roundtrip, layer_settings(qmodel), losses,
                        {k: round(v, 1) for k, v in seconds.items()})
