"""Names for the quantizable layers of an exported graph, stable across captures of the same model.

A layer is one conv or linear node, named by the module it came from (``stages.2.blocks.0.mlp.fc1``),
with ``#k`` appended when one module issues several. Sensitivity reports, the mixed-precision search
and the quantizer's fp32 exclusions all speak these names, so a layer chosen in one capture is the
same layer in the next.
"""
from __future__ import annotations

import torch
from torch.fx import Node

__all__ = ["WEIGHT_OPS", "module_path", "module_types", "weight_layers"]

WEIGHT_OPS = {torch.ops.aten.conv2d.default, torch.ops.aten.conv1d.default, torch.ops.aten.linear.default,
              torch.ops.aten.convolution.default}


def module_path(node: Node) -> str:
    """The innermost module path recorded by torch.export ('' for top-level code)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def module_types(node: Node) -> list[str]:
    """Class names of every module enclosing ``node`` (outermost first)."""
    names = []
    for _, cls in (node.meta.get("nn_module_stack") or {}).values():
        names.append(cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1])
    return names


def weight_layers(graph: torch.fx.Graph) -> dict[str, Node]:
    """Layer name -> conv/linear node, in graph (execution) order."""
    layers: dict[str, Node] = {}
    seen: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_function" and node.target in WEIGHT_OPS:
            path = module_path(node) or node.name
            seen[path] = seen.get(path, 0) + 1
            layers[path if seen[path] == 1 else f"{path}#{seen[path]}"] = node
    return layers
