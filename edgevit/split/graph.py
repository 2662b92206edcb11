"""Export once, find where the model can be cut, and split the exported graph into stage modules.

A cut is valid after a node when exactly one activation is alive across it (everything computed before is
either that tensor or no longer needed): the stage boundary is then one tensor, the thing sent over a link.
Cuts are only considered where the module path changes (block boundaries), so units read like the model
(``stem``, ``stages.0.blocks.1``, ``head``) and never fall inside an attention or a residual.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import fx

from ..compile.capture import export_static
from ..errors import EdgevitError
from ..models import prepare_model

__all__ = ["Unit", "SplitGraph", "split_units", "stage_modules", "unit_key"]

_MAC_OPS = {"aten.conv2d.default", "aten.linear.default", "aten.matmul.default", "aten.bmm.default",
            "aten.mm.default", "aten.addmm.default"}


@dataclass(frozen=True)
class Unit:
    """A run of the exported graph between two valid cut points, in execution order."""

    name: str
    out_shape: tuple[int, ...]
    out_bytes: int               # the boundary tensor after this unit, float32
    macs: int
    param_bytes: int             # float32 weights used inside the unit


@dataclass
class SplitGraph:
    model: str
    input_shape: tuple[int, ...]
    units: list[Unit]
    input_bytes: int
    graph_module: fx.GraphModule = field(repr=False)
    unit_ends: list[int] = field(repr=False, default_factory=list)   # node index (in `_compute`) ending each unit
    prepared: object = field(repr=False, default=None)                # models.PreparedModel

    def as_dict(self) -> dict:
        return {"model": self.model, "input_shape": list(self.input_shape), "input_bytes": self.input_bytes,
                "units": [{"name": u.name, "out_shape": list(u.out_shape), "out_bytes": u.out_bytes, "macs": u.macs,
                           "param_bytes": u.param_bytes} for u in self.units]}


def unit_key(path: str) -> str:
    """The block a module path belongs to: ``stages.0.blocks.1.mlp.fc1`` -> ``stages.0.blocks.1``,
    ``stem.0`` -> ``stem``, ``blocks.3.attn.qkv`` -> ``blocks.3``, ``head`` -> ``head``."""
    parts = path.split(".")
    numeric = [i for i, p in enumerate(parts) if p.isdigit()]
    if len(numeric) >= 2:
        return ".".join(parts[:numeric[1] + 1])
    if len(numeric) == 1:
        i = numeric[0]
        return ".".join(parts[:i]) if i == len(parts) - 1 else ".".join(parts[:i + 1])
    return parts[0]


def _path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else ""


def _compute(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function"]


def _macs(node: fx.Node) -> int:
    if str(node.target) not in _MAC_OPS:
        return 0
    out = node.meta["val"]
    if str(node.target) == "aten.conv2d.default":
        weight = node.args[1].meta["val"]
        return out.numel() * math.prod(weight.shape[1:])
    a = node.args[1 if str(node.target) == "aten.addmm.default" else 0].meta["val"]
    return out.numel() * a.shape[-1]


def _common_name(keys: list[str]) -> str:
    """The most specific module path among the unit's nodes (top-level ops have none)."""
    named = [k for k in keys if k != "input"]
    return max(named, key=lambda k: k.count(".")) if named else "top-level ops"


@torch.no_grad()
def split_units(model: str, input_shape=None, num_classes: int | None = None, weights=None) -> SplitGraph:
    """Export ``model``'s deploy form once and list its units (the runs between valid cuts)."""
    prepared = prepare_model(model, input_shape, num_classes, weights)
    exported = export_static(prepared.deployed, prepared.example, prepared.name)
    gm = exported.module()
    nodes = _compute(gm)
    index = {n: i for i, n in enumerate(nodes)}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise EdgevitError(f"{model} takes {len(placeholders)} inputs; split inference cuts single-input models.")
    output = next(n for n in gm.graph.nodes if n.op == "output")
    last_use: dict[fx.Node, int] = {}
    for n in [*placeholders, *nodes]:
        # the output node counts as "after all"; export's input-guard call (_guards_fn) is not a use
        users = [index.get(u, len(nodes)) for u in n.users if u.op in ("call_function", "output")]
        last_use[n] = max(users, default=-1)
    if any(u is output for u in placeholders[0].users):
        raise EdgevitError(f"{model} returns its input; nothing to split.")
    keys = [unit_key(_path(n)) or "input" for n in nodes]
    ends: list[int] = []
    for i in range(len(nodes) - 1):
        if keys[i] == keys[i + 1]:
            continue
        alive = [n for n, last in last_use.items() if last > i and (n.op == "placeholder" or index[n] <= i)]
        if len(alive) == 1 and alive[0] is nodes[i] and isinstance(nodes[i].meta.get("val"), torch.Tensor):
            ends.append(i)
    ends.append(len(nodes) - 1)
    units, start = [], 0
    for end in ends:
        members = nodes[start:end + 1]
        val = nodes[end].meta["val"] if end < len(nodes) - 1 else _output_val(output)
        params = {a for n in members for a in n.all_input_nodes if a.op == "get_attr"}
        param_bytes = sum(_attr(gm, a.target).numel() * 4 for a in params)
        units.append(Unit(name=_common_name(keys[start:end + 1]), out_shape=tuple(val.shape),
                          out_bytes=val.numel() * 4, macs=sum(_macs(n) for n in members), param_bytes=param_bytes))
        start = end + 1
    return SplitGraph(model=prepared.name, input_shape=tuple(prepared.input_shape), units=units,
                      input_bytes=prepared.example.numel() * 4, graph_module=gm, unit_ends=ends, prepared=prepared)


def _output_val(output: fx.Node):
    (value,) = output.args[0] if isinstance(output.args[0], tuple | list) else (output.args[0],)
    return value.meta["val"]


def _attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def stage_modules(sg: SplitGraph, last_units: list[int]) -> list[fx.GraphModule]:
    """One GraphModule per stage; stage k runs units (last_units[k-1], last_units[k]] and maps the boundary
    tensor in to the boundary tensor out. ``last_units`` ends with the last unit's index."""
    if not last_units or last_units[-1] != len(sg.units) - 1 or sorted(set(last_units)) != list(last_units):
        raise EdgevitError(f"Stage ends {last_units} must be increasing unit indices ending at {len(sg.units) - 1}.")
    gm = sg.graph_module
    nodes = _compute(gm)
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    output = next(n for n in gm.graph.nodes if n.op == "output")
    stages, first_node, boundary = [], 0, placeholder
    for k, unit in enumerate(last_units):
        last_node = sg.unit_ends[unit]
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {boundary: graph.placeholder("x")}
        for n in nodes[first_node:last_node + 1]:
            for a in n.all_input_nodes:
                if a not in env:
                    if a.op != "get_attr":
                        raise EdgevitError(f"Stage {k} needs {a.name} from an earlier stage: not a valid cut.")
                    env[a] = graph.get_attr(a.target)
            env[n] = graph.node_copy(n, env.__getitem__)
        graph.output(_final_value(output, env) if k == len(last_units) - 1 else env[nodes[last_node]])
        module = fx.GraphModule(gm, graph)
        module.graph.lint()
        stages.append(module)
        first_node, boundary = last_node + 1, nodes[last_node]
    return stages


def _final_value(output: fx.Node, env: dict) -> fx.Node:
    value = output.args[0]
    if isinstance(value, tuple | list):
        value = value[0]
    return env[value]
