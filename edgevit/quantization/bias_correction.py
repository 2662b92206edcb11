"""Empirical bias correction (Nagel et al., arXiv:1906.04721, sec. 4.2) on a converted PT2E graph.

Rounding weights (and the activations before them) to int8 shifts each layer's mean output. For every
quantized conv/linear, in execution order, the mean per-channel difference between the float model's
output and the quantized graph's output on the calibration set is added to the layer's bias; each
layer is measured after the ones before it are corrected, so errors do not compound.

The quantized graph's conv/linear nodes compute on dequantized int8 inputs and weights in float, which
is what the XNNPACK kernel computes in integers; their bias stays float in the graph (XNNPACK quantizes
it at lowering), so correcting it here reaches the artifact.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule, Interpreter, Node

from .layers import weight_layers

__all__ = ["correct_bias"]


class _Reached(Exception):
    pass


class _Capture(Interpreter):
    """Run the graph until ``target`` is computed and keep its value."""

    def __init__(self, gm: GraphModule, target: Node):
        super().__init__(gm)
        self.target, self.value = target, None

    def run_node(self, n: Node):
        out = super().run_node(n)
        if n is self.target:
            self.value = out
            raise _Reached
        return out


def _node_output(gm: GraphModule, node: Node, x: torch.Tensor) -> torch.Tensor:
    capture = _Capture(gm, node)
    try:
        capture.run(x)
    except _Reached:
        pass
    return capture.value


def _channel_mean(y: torch.Tensor, linear: bool) -> torch.Tensor:
    return y.reshape(-1, y.shape[-1]).mean(0) if linear else y.transpose(0, 1).reshape(y.shape[1], -1).mean(1)


def _is_quantized_weight(node: Node) -> bool:
    w = node.args[1]
    return isinstance(w, Node) and w.op == "call_function" and "dequantize" in str(w.target)


def _add_to_attr(gm: GraphModule, target: str, delta: torch.Tensor) -> None:
    """``gm.<target> += delta`` without writing through: the graph shares its tensors with the float
    model it was captured from, which must stay as it was."""
    owner_name, _, attr = target.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    old = getattr(owner, attr)
    new = old.detach() + delta.to(old.dtype)
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(new, requires_grad=False)
    elif attr in owner._buffers:  # noqa: SLF001
        owner._buffers[attr] = new  # noqa: SLF001
        return
    setattr(owner, attr, new)


@torch.no_grad()
def correct_bias(quantized: GraphModule, reference: nn.Module, calibration: torch.Tensor,
                 batch: int = 16) -> list[str]:
    """Correct ``quantized``'s conv/linear biases in place against ``reference`` (the float model it was
    quantized from); returns the layers corrected."""
    modules = dict(reference.named_modules())
    batches = [calibration[i:i + batch] for i in range(0, len(calibration), batch)]
    corrected = []
    for name, node in weight_layers(quantized.graph).items():
        module = modules.get(name)  # '#k' names (several ops in one module) have no module to compare
        bias = node.args[2] if len(node.args) > 2 else None
        if module is None or not isinstance(bias, Node) or bias.op != "get_attr" or not _is_quantized_weight(node):
            continue
        linear = node.target == torch.ops.aten.linear.default
        outputs = []
        handle = module.register_forward_hook(lambda m, a, y: outputs.append(y))
        try:
            for x in batches:
                reference(x)
        finally:
            handle.remove()
        error = sum(_channel_mean(ref - _node_output(quantized, node, x), linear) * len(x)
                    for ref, x in zip(outputs, batches)) / len(calibration)
        _add_to_attr(quantized, bias.target, error)
        corrected.append(name)
    return corrected
