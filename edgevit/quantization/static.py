"""Static int8 with a recipe: (equalise streams, rescale norms) -> PT2E calibrate + convert -> (bias correction)."""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torchao.quantization.pt2e.quantizer import Quantizer

from .bias_correction import correct_bias
from .equalize import equalize_streams
from .pt2e import quantize_pt2e
from .recipe import QuantRecipe
from .reparam import rescale_norms

__all__ = ["quantize_static"]


def quantize_static(model: nn.Module, example: torch.Tensor, recipe: QuantRecipe, quantizer: Quantizer,
                    calibration: torch.Tensor, on_batch: Callable[[int], None] | None = None
                    ) -> tuple[torch.fx.GraphModule, dict]:
    """The quantized graph and what ran: ``{"equalized_streams": [...], "rescaled_norms": [...],
    "bias_corrected_layers": [...]}``
    for the steps the recipe switched on. ``model`` (deploy form) is not modified."""
    steps: dict[str, list[str]] = {}
    if recipe.equalize_stream and hasattr(model, "residual_streams"):
        model = copy.deepcopy(model)
        steps["equalized_streams"] = list(equalize_streams(model, calibration))
    if recipe.rescale_norm:
        model = copy.deepcopy(model)
        steps["rescaled_norms"] = rescale_norms(model, calibration)
    quantized = quantize_pt2e(model, example, quantizer, calibration, on_batch, batch=recipe.calibration_batch)
    if recipe.bias_correction:
        steps["bias_corrected_layers"] = correct_bias(quantized, model, calibration,
                                                       heads=recipe.bias_correction_heads,
                                                       folded=recipe.bias_correction_folded)
    return quantized, steps
