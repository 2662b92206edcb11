"""The PT2E flow shared by every backend: export -> prepare_pt2e -> calibrate -> convert_pt2e."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import Quantizer

__all__ = ["quantize_pt2e"]


@torch.no_grad()
def quantize_pt2e(model: nn.Module, example: torch.Tensor, quantizer: Quantizer, calibration: torch.Tensor,
                  on_batch: Callable[[int], None] | None = None) -> torch.fx.GraphModule:
    """Return ``model`` with quantize/dequantize nodes whose scales come from ``calibration`` (N, ...).

    The graph is specialised to ``example``'s static shape, so calibration runs in batches of that size.
    """
    captured = torch.export.export(model.eval(), (example,)).module()
    prepared = prepare_pt2e(captured, quantizer)
    step = example.shape[0]
    for start in range(0, calibration.shape[0] - step + 1, step):
        prepared(calibration[start:start + step])
        if on_batch:
            on_batch(step)
    return convert_pt2e(prepared)
