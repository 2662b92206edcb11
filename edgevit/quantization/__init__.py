"""Post-training quantization through PT2E (torch.export + torchao observers).

The backend decides *which* patterns are quantized (its ``Quantizer``); this package runs the generic
steps (export, insert observers, calibrate, convert), the recipe's ViT-aware steps around them, and
the per-layer sensitivity analysis.
"""
from .observers import OBSERVERS, PercentileObserver
from .pt2e import quantize_pt2e
from .recipe import DEFAULT_OBSERVER, QuantRecipe
from .static import quantize_static

__all__ = ["quantize_pt2e", "quantize_static", "QuantRecipe", "DEFAULT_OBSERVER", "OBSERVERS",
           "PercentileObserver"]
