"""Names for the quantizable layers of an exported graph, stable across captures of the same model.

A layer is one op that computes in int8: a conv or linear, named by the module it came from
(``stages.2.blocks.0.mlp.fc1``), or an elementwise add/mul, named by its module and op
(``stages.2.blocks.0:add``, the residual add of that block); ``#k`` is appended when one module
issues several. Sensitivity reports, the mixed-precision search and ``--fp32-layer`` all speak these
names, so a layer chosen in one capture is the same layer in the next. (Concatenation and pooling,
which only move or average int8 values, are not layers: they stay int8.)
"""
from __future__ import annotations

import torch
from torch.fx import Node

__all__ = ["WEIGHT_OPS", "LAYER_OPS", "module_path", "module_types", "weight_layers", "quantizable_layers"]

WEIGHT_OPS = {torch.ops.aten.conv2d.default, torch.ops.aten.conv1d.default, torch.ops.aten.linear.default,
              torch.ops.aten.convolution.default}
_ELEMENTWISE = {torch.ops.aten.add.Tensor: "add", torch.ops.aten.mul.Tensor: "mul"}
LAYER_OPS = WEIGHT_OPS | set(_ELEMENTWISE)


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


def quantizable_layers(graph: torch.fx.Graph, ops=LAYER_OPS) -> dict[str, Node]:
    """Layer name -> node, in graph (execution) order."""
    layers: dict[str, Node] = {}
    seen: dict[str, int] = {}
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in ops:
            continue
        base = module_path(node) or node.name
        if node.target in _ELEMENTWISE:
            base = f"{base}:{_ELEMENTWISE[node.target]}"
        seen[base] = seen.get(base, 0) + 1
        layers[base if seen[base] == 1 else f"{base}#{seen[base]}"] = node
    return layers


def weight_layers(graph: torch.fx.Graph) -> dict[str, Node]:
    """The conv/linear layers only (same names as in :func:`quantizable_layers`)."""
    return quantizable_layers(graph, WEIGHT_OPS)
