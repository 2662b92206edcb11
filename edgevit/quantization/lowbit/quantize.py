"""Brevitas on edgevit models: which layers are quantized, PTQ calibration, and what each quantizer is.

Decisions (and why):
- **The deploy form is quantized**, not the training form: BatchNorm, layer scales and the attention
  ``1/sqrt(d)`` are already folded into the weights, so the integers in the export are exactly what an
  accelerator multiplies (an FPGA flow has no float BatchNorm after the conv). QAT then fine-tunes the
  folded weights.
- **Layer-wise quantization** (``brevitas.graph.quantize.layerwise_quantize``): every Conv2d/Linear gets an
  input quantizer (activations) and a weight quantizer. Biases stay float32: an int32 bias at scale input x
  weight needs integers beyond float32's exact range where an input scale is tiny (shvit_micro's SE blocks,
  initial weights: ~1e7), and Brevitas's QCDQ export then refuses the layer; FINN/hls4ml fold a float bias
  into their thresholds/accumulators anyway. These layers carry 92-99.9 % of the MACs (measured with
  FlopCounterMode on the deploy forms: tiny_vit_5m_224 92.3, efficientformerv2_s0 95.3, shvit_s1 99.7,
  efficientformer_l1 99.8, the micro variants 96.8-99.9). What stays float: the attention matmuls (q@k^T,
  attn@v: tensor ops in our models, not modules), softmax, GELU/ReLU, the LayerNorm standardisation, residual
  adds, pooling; in the exports they run in float between quantized layers.
- **First and last layers stay at 8 bits** (the stem conv sees raw pixels, the classifier decides
  the label); the usual choice in low-bit work and in Brevitas's own ImageNet examples.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .spec import LowBitSpec, act_quantizer, weight_quantizer

__all__ = ["calibrate", "layer_settings", "quantize_lowbit", "quantized_layers"]

_COMPUTE = (nn.Conv2d, nn.Linear)


def _compute_layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) in _COMPUTE]


def quantize_lowbit(model: nn.Module, spec: LowBitSpec, po2: bool = False,
                    keep_first_last_8bit: bool = True) -> nn.Module:
    """A Brevitas copy of ``model`` (pass the deploy form) with every Conv2d/Linear quantized per ``spec``.

    Activation scales are uninitialised until :func:`calibrate` (or the first QAT steps) runs.
    """
    import brevitas.nn as qnn
    from brevitas.graph.quantize import layerwise_quantize

    names = _compute_layer_names(model)
    if not names:
        raise ValueError("model has no Conv2d/Linear layer to quantize")
    eight = {names[0], names[-1]} if keep_first_last_8bit else set()
    w_low, w8 = weight_quantizer(spec.weight_bits, po2), weight_quantizer(8, po2)
    a_low, a8 = act_quantizer(spec.act_bits, po2), act_quantizer(8, po2)
    # Brevitas calls (module, name) lambdas per layer, which is how per-layer bit widths are chosen.
    kwargs = {"weight_quant": lambda module, name: w8 if name in eight else w_low,
              "input_quant": lambda module, name: a8 if name in eight else a_low,
              "bias_quant": None, "return_quant_tensor": False}
    layer_map = {nn.Conv2d: (qnn.QuantConv2d, kwargs), nn.Linear: (qnn.QuantLinear, kwargs)}
    quantized = layerwise_quantize(copy.deepcopy(model), compute_layer_map=layer_map)
    return quantized.eval()


@torch.no_grad()
def calibrate(qmodel: nn.Module, inputs: torch.Tensor, batch_size: int = 32) -> None:
    """PTQ: activation scales from statistics over ``inputs`` (Brevitas's calibration mode).

    Brevitas's bias correction is not applied: it assumes a Linear sees 3-D input, and TinyViT's
    window attention feeds 4-D (it fails on the bias shape); QAT corrects biases anyway."""
    from brevitas.graph.calibrate import calibration_mode

    qmodel.eval()
    batches = [inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size)]
    with calibration_mode(qmodel):
        for x in batches:
            qmodel(x)


def quantized_layers(qmodel: nn.Module) -> list[tuple[str, nn.Module]]:
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer
    return [(n, m) for n, m in qmodel.named_modules() if isinstance(m, QuantWeightBiasInputOutputLayer)]


def _is_po2(scale: torch.Tensor) -> bool:
    exponents = torch.log2(scale.detach().double().flatten())
    return bool(torch.all((exponents - exponents.round()).abs() < 1e-9))


def _values(t: torch.Tensor) -> float | list[float]:
    flat = t.detach().flatten().tolist()
    return flat[0] if len(flat) == 1 else flat


@torch.no_grad()
def layer_settings(qmodel: nn.Module) -> list[dict]:
    """Per quantized layer: the integer formats and scales an FPGA flow needs (weights per output
    channel, the input activation per tensor, bias int32 at input x weight scale)."""
    rows = []
    for name, layer in quantized_layers(qmodel):
        w = layer.quant_weight()
        act = layer.input_quant
        a_scale = act.scale()
        rows.append({
            "layer": name, "type": type(layer).__name__.removeprefix("Quant"),
            "weight": {"bits": int(w.bit_width), "signed": bool(w.signed), "narrow_range": True,
                       "granularity": "per_output_channel", "scale": _values(w.scale),
                       "zero_point": _values(w.zero_point), "po2": _is_po2(w.scale)},
            "input": {"bits": int(act.bit_width()), "signed": bool(act.is_signed), "granularity": "per_tensor",
                      "scale": float(a_scale), "zero_point": float(act.zero_point()),
                      "po2": _is_po2(a_scale), "log2_scale": round(math.log2(float(a_scale)), 6)},
            "bias": "float32" if layer.bias is not None else None,
        })
    return rows
