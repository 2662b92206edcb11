"""Which patterns ExecuTorch's XNNPACK kernels accept quantized (backend-specific quantization rules)."""
from __future__ import annotations

from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

from ...quantization import QuantRecipe

__all__ = ["xnnpack_int8_quantizer"]


def xnnpack_int8_quantizer(recipe: QuantRecipe | None = None) -> XNNPACKQuantizer:
    """Static int8 (XNNPACK's qs8): the recipe's observers on the patterns XNNPACK runs in int8 (conv,
    linear, add, mul, cat, average pool); the nodes the recipe keeps float are left unannotated, so
    XNNPACK runs them in fp32 inside the same delegate."""
    recipe = recipe or QuantRecipe()
    quantizer = XNNPACKQuantizer().set_global(recipe.quantization_config())
    return quantizer.set_filter_function(lambda node: not recipe.keeps_float(node))
