"""Will the model fit? Weights at the target precision plus the peak of live activations."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MemoryEstimate", "estimate_memory"]

_WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
# Activations: int8 graphs still run softmax/LayerNorm/GELU in float on XNNPACK, so count 4 bytes
# for int8 too; the estimate is meant to err on the side of refusing.
_ACTIVATION_BYTES = {"fp32": 4, "fp16": 2, "int8": 4}


@dataclass(frozen=True)
class MemoryEstimate:
    weight_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes

    def as_dict(self) -> dict:
        return {"weights_bytes": self.weight_bytes, "peak_activations_bytes": self.activation_bytes,
                "total_bytes": self.total_bytes}


def _weight_bytes(model: nn.Module, precision: str) -> int:
    total = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            quantized = precision == "int8" and name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            total += p.numel() * (1 if quantized else _WEIGHT_BYTES["fp32" if precision == "int8" else precision])
        for b in module.buffers(recurse=False):
            total += b.numel() * b.element_size()
    return total


def _peak_live_activation_elements(exported: torch.export.ExportedProgram) -> int:
    """Walk the graph in execution order; a tensor lives from its producer to its last consumer."""
    graph = exported.graph
    nodes = [n for n in graph.nodes if n.op in ("call_function", "placeholder")
             and not (n.op == "placeholder" and n.name not in exported.graph_signature.user_inputs)]
    order = {n: i for i, n in enumerate(graph.nodes)}
    last_use = {n: max((order[u] for u in n.users), default=order[n]) for n in nodes}

    def numel(n) -> int:
        val = n.meta.get("val")
        vals = val if isinstance(val, (list, tuple)) else [val]
        return sum(v.numel() for v in vals if isinstance(v, torch.Tensor))

    live: dict = {}
    peak = 0
    for n in graph.nodes:
        if n in last_use:
            live[n] = numel(n)
        peak = max(peak, sum(live.values()))
        for dead in [m for m in live if last_use[m] <= order[n]]:
            del live[dead]
    return peak


def estimate_memory(model: nn.Module, exported: torch.export.ExportedProgram, precision: str) -> MemoryEstimate:
    return MemoryEstimate(weight_bytes=_weight_bytes(model, precision),
                          activation_bytes=_peak_live_activation_elements(exported) * _ACTIVATION_BYTES[precision])
