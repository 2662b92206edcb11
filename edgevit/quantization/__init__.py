"""Post-training quantization through PT2E (torch.export + torchao observers).

The backend decides *which* patterns are quantized (its ``Quantizer``); this package runs the generic
steps: export, insert observers, calibrate, convert.
"""
from .pt2e import quantize_pt2e

__all__ = ["quantize_pt2e"]
