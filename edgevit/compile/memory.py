"""Will the model fit? Weights at the target precision plus the peak of live activations."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MemoryEstimate", "estimate_memory"]

# Bytes per element of conv/linear weights, of every other parameter, and of activations. int8 graphs
# still run softmax/GELU in float, and dynamic int8 keeps float activations, so activations count 4
# bytes for both: the estimate is meant to err on the side of refusing.
_WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1, "int8-dynamic": 1}
_OTHER_PARAM_BYTES = {"fp32": 4, "fp16": 2, "int8": 4, "int8-dynamic": 4}
_ACTIVATION_BYTES = {"fp32": 4, "fp16": 2, "int8": 4, "int8-dynamic": 4}


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
            is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            total += p.numel() * (_WEIGHT_BYTES if is_weight else _OTHER_PARAM_BYTES)[precision]
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
