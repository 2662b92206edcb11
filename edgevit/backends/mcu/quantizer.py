"""Which patterns the MCU kernels take in int8: the recipe's XNNPACK patterns plus attention's matmuls and softmax.

The calibration is edgevit's PT2E recipe (observers, per-channel symmetric weights, bias correction) on the same
annotator XNNPACK uses; the microcontroller has no float fallback, so the two places that annotator leaves float in
a ViT get int8 boundaries too: ``bmm`` (inputs and output observed like any activation) and ``softmax`` (output at
the fixed scale 1/256, zero point -128, as TFLite's int8 softmax). Every other float region (sigmoid, GELU,
standardisation) sits between a dequantize and a quantize already and becomes one integer kernel in ``convert``.
"""
from __future__ import annotations

import torch
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec, QuantizationAnnotation

from ...quantization import QuantRecipe

__all__ = ["mcu_int8_quantizer", "SOFTMAX_SCALE", "SOFTMAX_ZERO_POINT"]

SOFTMAX_SCALE = 1.0 / 256.0
SOFTMAX_ZERO_POINT = -128
_BMM = (torch.ops.aten.bmm.default, torch.ops.aten.matmul.default)
_SOFTMAX = (torch.ops.aten.softmax.int, torch.ops.aten._softmax.default)


class _McuInt8Quantizer(XNNPACKQuantizer):
    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        model = super().annotate(model)
        act = self.global_config.input_activation
        fixed = FixedQParamsQuantizationSpec(dtype=torch.int8, scale=SOFTMAX_SCALE, zero_point=SOFTMAX_ZERO_POINT,
                                             quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine)
        for node in model.graph.nodes:
            if node.op != "call_function" or "quantization_annotation" in node.meta:
                continue
            if node.target in _BMM:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={a: act for a in node.args[:2] if isinstance(a, torch.fx.Node)},
                    output_qspec=act, _annotated=True)
            elif node.target in _SOFTMAX:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: act}, output_qspec=fixed, _annotated=True)
        return model


def mcu_int8_quantizer(recipe: QuantRecipe | None = None) -> XNNPACKQuantizer:
    """The recipe's int8 config on the MCU's patterns. What the recipe keeps float (``float_norm``: the
    standardisation's statistics) ends up as one dequantize -> float region -> quantize, which ``convert`` turns
    into one integer kernel, or refuses by name."""
    recipe = recipe or QuantRecipe()
    quantizer = _McuInt8Quantizer().set_global(recipe.quantization_config())
    return quantizer.set_filter_function(lambda node: not recipe.keeps_float(node))
