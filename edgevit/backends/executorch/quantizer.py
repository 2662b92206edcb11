"""Which patterns ExecuTorch's XNNPACK kernels accept quantized (backend-specific quantization rules)."""
from __future__ import annotations

import torch
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

from ...quantization import QuantRecipe

__all__ = ["xnnpack_int8_quantizer"]

_PADS = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)
# A clamp XNNPACK fuses into the op before it (its subgraph optimizer gives the op the clamp's output
# quantization): relu6 / hardtanh after a conv or linear, which XNNPACK's quantizer leaves as two outputs.
_CLAMPS = (torch.ops.aten.relu6.default, torch.ops.aten.hardtanh.default)
_CLAMPED = (torch.ops.aten.conv2d.default, torch.ops.aten.conv1d.default, torch.ops.aten.linear.default)


def _is_zero_pad(node: torch.fx.Node) -> bool:
    """A constant pad with value 0 and no cropping (what XNNPACK's static pad takes)."""
    if node.op != "call_function" or node.target not in _PADS or not isinstance(node.args[0], torch.fx.Node):
        return False
    args = [*node.args, None, None][:4]
    if node.target == torch.ops.aten.pad.default:
        mode = node.kwargs.get("mode", args[2] or "constant")
        value = node.kwargs.get("value", args[3])
        if mode != "constant":
            return False
    else:
        value = node.kwargs.get("value", args[2])
    return (value or 0.0) == 0.0 and all(p >= 0 for p in node.args[1])


def _fuse_clamp(node: torch.fx.Node) -> None:
    """conv/linear -> relu6/hardtanh as one quantized op (output observed after the clamp), as XNNPACK's
    quantizer does for conv -> relu. XNNPACK runs it so anyway: its subgraph optimizer fuses the clamp into
    the conv and gives the conv the clamp's output qparams, dropping the conv's own. Annotated as two
    outputs, the PT2E graph rounded the unclamped conv output to a per-tensor scale the artifact never
    uses (EfficientNet-Lite0: 0.69 for a range clamped to 0..6), so everything measured on that graph
    (bias correction, quant-report, mixed precision) measured an error the .pte does not have."""
    source = node.args[0]
    if not isinstance(source, torch.fx.Node) or source.target not in _CLAMPED or len(source.users) != 1:
        return
    producer, clamp = source.meta.get("quantization_annotation"), node.meta.get("quantization_annotation")
    if producer is None or producer.output_qspec is None or (clamp is not None and clamp.input_qspec_map):
        return
    node.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=producer.output_qspec,
                                                                  _annotated=True)
    producer.output_qspec = None


class _XnnpackInt8Quantizer(XNNPACKQuantizer):
    """XNNPACK's quantizer plus one pattern it lacks: zero constant pad with the input's qparams.

    XNNPACK runs ``constant_pad_nd`` in int8 only when input and output share scale and zero point
    (``xnn_define_static_constant_pad``). Left unannotated, the pad sits between a dequantize and float
    ops; ExecuTorch's ``InsertPadQDQPass`` still serializes it as an int8 pad, and the runtime refuses it
    (``Failed to create StaticConstantPad … xnn_status_invalid_parameter``): TinyViT at every
    resolution whose windows pad. Sharing the input's qparams (as XNNPACK's ``cat`` annotation does)
    makes it legal and exact: 0 quantizes to the zero point, which dequantizes to exactly 0.
    """

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        model = super().annotate(model)
        config = self.global_config
        if config is None or config.input_activation is None or config.input_activation.is_dynamic:
            return model
        for node in model.graph.nodes:
            if node.op == "call_function" and node.target in _CLAMPS:
                _fuse_clamp(node)
        for node in model.graph.nodes:
            if not _is_zero_pad(node) or "quantization_annotation" in node.meta:
                continue
            if self.filter_fn is not None and not self.filter_fn(node):
                continue  # the recipe keeps this node float
            source = node.args[0]
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={source: config.input_activation},
                output_qspec=SharedQuantizationSpec((source, node)), _annotated=True)
        return model


def xnnpack_int8_quantizer(recipe: QuantRecipe | None = None) -> XNNPACKQuantizer:
    """Static int8 (XNNPACK's qs8): the recipe's observers on the patterns XNNPACK runs in int8 (conv,
    linear, add, mul, cat, average pool, zero pad); the nodes the recipe keeps float are left
    unannotated, so XNNPACK runs them in fp32 inside the same delegate."""
    recipe = recipe or QuantRecipe()
    quantizer = _XnnpackInt8Quantizer().set_global(recipe.quantization_config())
    return quantizer.set_filter_function(lambda node: not recipe.keeps_float(node))
