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
from .pt2e import plain_compile

__all__ = ["correct_bias", "output_layers"]

# Ops that only move or re-round a tensor: a layer whose output reaches the graph's output through these
# alone is a head (its output *is* the model's output).
_PASS_THROUGH = {torch.ops.aten.view.default, torch.ops.aten.reshape.default, torch.ops.aten.flatten.using_ints,
                 torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims, torch.ops.aten.permute.default,
                 torch.ops.aten.clone.default, torch.ops.aten.contiguous.default,
                 torch.ops.quantized_decomposed.quantize_per_tensor.default,
                 torch.ops.quantized_decomposed.dequantize_per_tensor.default}


def output_layers(graph: torch.fx.Graph) -> set[Node]:
    """The layers whose output is the model's output (classifier heads), reached through pass-through ops."""
    heads: set[Node] = set()
    for node in graph.nodes:
        if node.op != "output":
            continue
        todo = list(node.all_input_nodes)
        while todo:
            n = todo.pop()
            if n.op == "call_function" and n.target in _PASS_THROUGH:
                todo.extend(n.all_input_nodes[:1])
            else:
                heads.add(n)
    return heads


def _channel_mean(y: torch.Tensor, linear: bool) -> torch.Tensor:
    return y.reshape(-1, y.shape[-1]).mean(0) if linear else y.transpose(0, 1).reshape(y.shape[1], -1).mean(1)


def _is_quantized_weight(node: Node) -> bool:
    w = node.args[1]
    return isinstance(w, Node) and w.op == "call_function" and "dequantize" in str(w.target)


def _same_output(module: nn.Module, gm: GraphModule, bias_target: str) -> bool:
    """Whether the float module computes what the quantized node computes. PT2E folds a BatchNorm that
    follows a conv into the conv's weight and bias (a user's module keeps its BatchNorms; the zoo's deploy
    forms have none left): the float conv's output is then the BatchNorm's *input*, and correcting the
    folded node towards it would shift every channel by the BatchNorm's affine. The graph shares the float
    model's tensors, so an unfolded node's bias is the module's own bias tensor, value for value."""
    own = getattr(module, "bias", None)
    if own is None:
        return False  # the node's bias was made by a fold
    owner_name, _, attr = bias_target.rpartition(".")
    theirs = getattr(gm.get_submodule(owner_name) if owner_name else gm, attr)
    return own.shape == theirs.shape and torch.equal(own.detach(), theirs.detach())


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


def _reference_means(reference: nn.Module, names: dict[str, bool],
                     batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-channel output means of the float model's modules ``names`` (name -> is linear), in one pass."""
    modules = dict(reference.named_modules())
    sums: dict[str, torch.Tensor] = {}
    images = [0]  # weight of the batch being run: its image count (a layer's batch axis may hold windows)

    def hook(name):
        def record(module, args, y):
            part = _channel_mean(y, names[name]) * images[0]
            sums[name] = part if name not in sums else sums[name] + part
        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        for x in batches:
            images[0] = len(x)
            reference(x)
    finally:
        for handle in handles:
            handle.remove()
    count = sum(len(x) for x in batches)
    return {name: total / count for name, total in sums.items()}


# Per-tensor quantize/dequantize: element-wise, so computing them a few images at a time gives the same
# values bit for bit, while their float temporaries (x / scale, round, + zero point, clamp) shrink to a chunk.
_ELEMENTWISE_QDQ = (torch.ops.quantized_decomposed.quantize_per_tensor.default,
                    torch.ops.quantized_decomposed.dequantize_per_tensor.default)


class _CorrectingRun(Interpreter):
    """One run of the quantized graph over the whole calibration set that corrects each layer as it is
    reached: its output gets the missing mean (exactly what the corrected bias adds), so every later
    layer is measured after the ones before it, in a single forward pass. Layers run on the whole set
    (their means, hence the corrected biases, stay exactly as computed on it); the element-wise
    quantize/dequantize steps between them run ``chunk`` images at a time (memory: their temporaries were
    the compile's peak, +0.9 GB on EfficientFormer-L1 with 32 images)."""

    def __init__(self, gm: GraphModule, layers: dict[Node, tuple[str, bool]], means: dict[str, torch.Tensor],
                 chunk: int | None = None):
        super().__init__(gm)
        self.layers, self.means, self.corrected, self.chunk = layers, means, [], chunk

    def call_function(self, target, args, kwargs):
        x = args[0] if args else None
        if self.chunk is None or target not in _ELEMENTWISE_QDQ or not isinstance(x, torch.Tensor) \
                or x.dim() == 0 or x.shape[0] <= self.chunk or not x.is_contiguous():
            return super().call_function(target, args, kwargs)
        first = target(x[:self.chunk], *args[1:], **kwargs)
        out = first.new_empty((x.shape[0], *first.shape[1:]))  # contiguous, as the whole-batch op returns
        out[:self.chunk] = first
        del first
        for start in range(self.chunk, x.shape[0], self.chunk):
            out[start:start + self.chunk] = target(x[start:start + self.chunk], *args[1:], **kwargs)
        return out

    def run_node(self, n: Node):
        out = super().run_node(n)
        if n in self.layers:
            name, linear = self.layers[n]
            delta = self.means[name] - _channel_mean(out, linear)
            _add_to_attr(self.module, n.args[2].target, delta)
            shift = delta if linear else delta.view(1, -1, *([1] * (out.dim() - 2)))
            # in place (the layer's fresh output, no one else holds it): one whole-set activation less at peak
            out = out + shift if self.chunk is None else out.add_(shift)
            self.corrected.append(name)
        return out


@torch.no_grad()
def correct_bias(quantized: GraphModule, reference: nn.Module, calibration: torch.Tensor,
                 batch: int = 16, heads: bool = False) -> list[str]:
    """Correct ``quantized``'s conv/linear biases in place against ``reference`` (the float model it was
    quantized from); returns the layers corrected. Costs one float and one quantized forward pass.

    ``heads``: also the layers whose output is the model's output. Off by default: the correction exists so
    that a layer's shifted mean does not propagate into the layers after it, and a head has none; what it
    would do there is move every class logit by its mean error on the calibration images, which fits
    the logits to those images (EfficientNet-Lite0, 1000 classes, 32 CIFAR photos: logit cosine on
    ImageNet photos 0.9933 -> 0.9917 with the head corrected)."""
    modules = dict(reference.named_modules())
    layers: dict[Node, tuple[str, bool]] = {}
    skip = set() if heads else output_layers(quantized.graph)
    for name, node in weight_layers(quantized.graph).items():
        if node in skip:
            continue
        bias = node.args[2] if len(node.args) > 2 else None
        # '#k' names (several ops in one module) have no module to compare with
        if name in modules and isinstance(bias, Node) and bias.op == "get_attr" and _is_quantized_weight(node) \
                and _same_output(modules[name], quantized, bias.target):
            layers[node] = (name, node.target == torch.ops.aten.linear.default)
    if not layers:
        return []
    means = _reference_means(reference, dict(layers.values()), [calibration[i:i + batch]
                                                                for i in range(0, len(calibration), batch)])
    run = _CorrectingRun(quantized, layers, means, chunk=None if plain_compile() else 4)
    run.run(calibration)
    return run.corrected
