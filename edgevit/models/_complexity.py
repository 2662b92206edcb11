"""Parameters and MACs, measured by counting (torch's FlopCounterMode) on the meta device: no weights
are allocated, so listing the whole zoo is cheap."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ._registry import get_model_spec

__all__ = ["count_params_and_macs"]


@torch.no_grad()
def count_params_and_macs(name: str, input_size: tuple[int, int, int] | None = None) -> tuple[int, int]:
    """(parameters, multiply-accumulates for one image) of a zoo model in its training form."""
    spec = get_model_spec(name)
    with torch.device("meta"):
        model = spec.builder(num_classes=spec.num_classes).eval()
        x = torch.empty(1, *(input_size or spec.input_size))
        params = sum(p.numel() for p in model.parameters())
        with FlopCounterMode(display=False) as counter:
            model(x)
    return params, counter.get_total_flops() // 2  # FlopCounterMode counts a MAC as two FLOPs
