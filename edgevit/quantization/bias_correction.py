"""Empirical bias correction (Nagel et al., arXiv:1906.04721, sec. 4.2) on a converted PT2E graph.

Rounding weights (and the activations before them) to int8 shifts each layer's mean output. For every
quantized conv/linear, in execution order, the mean per-channel difference between the float model's
output and the quantized graph's output on the calibration set is added to the layer's bias; each
layer is measured after the ones before it are corrected, so errors do not compound.

The quantized graph's conv/linear nodes compute on dequantized int8 inputs and weights in float, which
is what the XNNPACK kernel computes in integers; their bias stays float in the graph (XNNPACK quantizes
it at lowering), so correcting it here reaches the artifact.

A conv that PT2E folded a BatchNorm into (a user's module keeps its BatchNorms) is measured against the
BatchNorm's output, which is what the folded node computes (``folded=True``). These are the layers where
bias correction matters most: folding scales each channel's weights by gamma / sigma, and a depthwise
filter's few weights round to int8 with a mean error per channel that nothing else removes (Nagel et al.,
sec. 4.2, on MobileNetV2's depthwise convs). EfficientNet-Lite0 (49 folded convs, 32 CIFAR photos; its .pte's
logit cosine on 20 ImageNet photos, mean / worst): 0.9935 / 0.9794 -> 0.9966 / 0.9916.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection

import torch
from torch import nn
from torch.fx import GraphModule, Interpreter, Node

from .._memory import large_blocks_mapped, release_freed_memory
from .layers import weight_layers
from .pt2e import plain_compile

__all__ = ["correct_bias", "folded_norms", "output_layers"]

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
    """Mean per output channel (last axis for linear, axis 1 for conv), reduced in place: a transposed
    copy of a whole-set activation was one of the compile's peaks."""
    return y.mean(dim=tuple(range(y.dim() - 1))) if linear else y.mean(dim=(0, *range(2, y.dim())))


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


def folded_norms(reference: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """Conv module name -> name of the BatchNorm that takes the conv's output as is (what PT2E folds into
    the conv node), found by running ``example`` (one image is enough) with hooks: a BatchNorm whose input
    is the very tensor a conv returned."""
    modules = dict(reference.named_modules())
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values()):  # noqa: SLF001
        return {}  # nothing to find: no forward pass (every zoo deploy form)
    produced: dict[int, str] = {}
    found: dict[str, str] = {}

    def conv_hook(name):
        def record(module, args, y):
            produced[id(y)] = name
        return record

    def norm_hook(name):
        def record(module, args):
            if args and id(args[0]) in produced:
                found.setdefault(produced[id(args[0])], name)
        return record

    handles = []
    for name, module in modules.items():
        if isinstance(module, nn.modules.conv._ConvNd):  # noqa: SLF001
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):  # noqa: SLF001
            handles.append(module.register_forward_pre_hook(norm_hook(name)))
    try:
        with torch.no_grad():
            reference(example)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _folded_into(node: Node) -> bool:
    """Whether no batch_norm is left after ``node`` (PT2E folded it in)."""
    return not any("batch_norm" in str(user.target) for user in node.users)


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


# Ops whose every output row depends only on the same row of their first argument (the others are weights
# or scalars): computed a few rows at a time they give the same values bit for bit, while their temporaries
# shrink to a chunk. Per-tensor quantize/dequantize (x / scale, round, + zero point, clamp) and GELU are
# element-wise; a convolution's or linear layer's workspace (oneDNN's reorders, im2col) was the compile's
# peak, +110 MB on one EfficientFormer-L1 convolution over 32 calibration images.
_PER_ROW_OPS = (torch.ops.quantized_decomposed.quantize_per_tensor.default,
                torch.ops.quantized_decomposed.dequantize_per_tensor.default,
                torch.ops.aten.conv2d.default, torch.ops.aten.linear.default, torch.ops.aten.gelu.default)


_DEQUANTIZE = torch.ops.quantized_decomposed.dequantize_per_tensor.default
_DEQUANTIZE_PER_CHANNEL = torch.ops.quantized_decomposed.dequantize_per_channel.default
# Element-wise ops with scalar arguments: applied to a lazy tensor (below) they only extend its recipe.
_ELEMENTWISE = (_DEQUANTIZE, torch.ops.aten.gelu.default, torch.ops.aten.relu.default,
                torch.ops.aten.hardtanh.default, torch.ops.aten.hardswish.default, torch.ops.aten.silu.default,
                torch.ops.aten.sigmoid.default)


class _LazyRows:
    """A whole-set tensor kept as the int8 tensor it was dequantized from and the element-wise ops applied
    since (dequantize, then e.g. GELU): a per-row op that takes it computes each chunk of rows from the int8
    rows as it goes, so the float copies (4x the int8 bytes; the widest activations, an MLP's hidden layer,
    were the compile's peak: its dequantized input and its GELU output at once) never exist whole. Any other
    op gets the whole float tensor, computed by the same ops, so every value is the same bit for bit."""

    def __init__(self, base: torch.Tensor, ops: tuple[tuple, ...]):
        self.base, self.ops = base, ops
        self.shape = base.shape

    def then(self, target, rest: tuple, kwargs: dict) -> _LazyRows:
        return _LazyRows(self.base, (*self.ops, (target, rest, kwargs)))

    def dim(self) -> int:
        return self.base.dim()

    def is_contiguous(self) -> bool:
        return self.base.is_contiguous()

    def _apply(self, value: torch.Tensor) -> torch.Tensor:
        for target, rest, kwargs in self.ops:
            value = target(value, *rest, **kwargs)
        return value

    def rows(self, start: int, count: int) -> torch.Tensor:
        return self._apply(self.base[start:start + count])

    def whole(self) -> torch.Tensor:
        return self._apply(self.base)


class _LazyWeight:
    """A layer's int8 weight and its per-channel dequantize, computed when the layer runs: the graph lists
    every weight's dequantize first, so computed eagerly all of them (the model's weights in float, 49 MB for
    EfficientFormer-L1) would be held through the whole run."""

    def __init__(self, args: tuple, kwargs: dict):
        self.args, self.kwargs = args, kwargs

    def whole(self) -> torch.Tensor:
        return _DEQUANTIZE_PER_CHANNEL(*self.args, **self.kwargs)


def _materialize(value):
    return value.whole() if isinstance(value, (_LazyRows, _LazyWeight)) else value


class _CorrectingRun(Interpreter):
    """One run of the quantized graph over the whole calibration set that corrects each layer as it is
    reached: its output gets the missing mean (exactly what the corrected bias adds), so every later
    layer is measured after the ones before it, in a single forward pass. Layers run on the whole set
    (their means, hence the corrected biases, stay exactly as computed on it), but the per-row ops
    (:data:`_PER_ROW_OPS`) compute those whole-set outputs ``chunk`` rows at a time, and a dequantize and the
    element-wise ops after it stay lazy (:class:`_LazyRows`) until a per-row op reads them by rows (memory:
    the temporaries were the compile's peak, +0.9 GB on EfficientFormer-L1 with 32 images)."""

    def __init__(self, gm: GraphModule, layers: dict[Node, tuple[str, bool]], means: dict[str, torch.Tensor],
                 chunk: int | None = None, names: dict[Node, str] | None = None):
        super().__init__(gm)
        self.layers, self.means, self.corrected, self.chunk = layers, means, [], chunk
        self.names = names or {}

    def call_function(self, target, args, kwargs):
        if self.chunk is None:
            return super().call_function(target, args, kwargs)
        x = args[0] if args else None
        if target == _DEQUANTIZE_PER_CHANNEL:
            return _LazyWeight(args, kwargs)
        if isinstance(x, (torch.Tensor, _LazyRows)) and x.dim() > 0 and x.shape[0] > self.chunk \
                and x.is_contiguous():
            lazy = isinstance(x, _LazyRows)
            if target == _DEQUANTIZE and not lazy or target in _ELEMENTWISE and lazy:
                rest, kwargs = torch.fx.node.map_aggregate((args[1:], kwargs), _materialize)
                return (x if lazy else _LazyRows(x, ())).then(target, rest, kwargs)
            if target in _PER_ROW_OPS:
                return self._by_rows(target, x, args[1:], kwargs)
        args, kwargs = torch.fx.node.map_aggregate((args, kwargs), _materialize)
        return super().call_function(target, args, kwargs)

    def _by_rows(self, target, x, rest, kwargs) -> torch.Tensor:
        """``target(x, *rest)`` computed ``chunk`` rows at a time into one contiguous whole-set tensor."""
        rest, kwargs = torch.fx.node.map_aggregate((rest, kwargs), _materialize)
        out = None
        for start in range(0, x.shape[0], self.chunk):
            part = target(x.rows(start, self.chunk) if isinstance(x, _LazyRows)
                          else x[start:start + self.chunk], *rest, **kwargs)
            if out is None:
                out = part.new_empty((x.shape[0], *part.shape[1:]))  # contiguous, as the whole-set op returns
            out[start:start + self.chunk] = part
        return out

    def output(self, target, args, kwargs):
        return super().output(target, *torch.fx.node.map_aggregate((args, kwargs), _materialize))

    def run_node(self, n: Node):
        out = super().run_node(n)
        if n in self.layers:
            name, linear = self.layers[n]
            delta = self.means[name] - _channel_mean(out, linear)
            _add_to_attr(self.module, n.args[2].target, delta)
            shift = delta if linear else delta.view(1, -1, *([1] * (out.dim() - 2)))
            # in place (the layer's fresh output, no one else holds it): one whole-set activation less at peak
            out = out + shift if self.chunk is None else out.add_(shift)
            self.corrected.append(self.names.get(n, name))
        return out


@torch.no_grad()
def correct_bias(quantized: GraphModule, reference: nn.Module, calibration: torch.Tensor,
                 batch: int = 8, heads: bool = False, folded: bool = False,
                 only: Collection[str] | None = None) -> list[str]:
    """Correct ``quantized``'s conv/linear biases in place against ``reference`` (the float model it was
    quantized from); returns the layers corrected. Costs one float and one quantized forward pass.

    ``heads``: also the layers whose output is the model's output. Off by default: the correction exists so
    that a layer's shifted mean does not propagate into the layers after it, and a head has none; what it
    would do there is move every class logit by its mean error on the calibration images, which fits
    the logits to those images (EfficientNet-Lite0, 1000 classes, 32 CIFAR photos: logit cosine on
    ImageNet photos 0.9933 -> 0.9917 with the head corrected).

    ``folded``: also the convs PT2E folded a BatchNorm into, measured against the BatchNorm's output
    (:func:`folded_norms`); listed as ``conv+norm``. Off: they are left alone, as before. ``only``: correct
    these layers (names as in :func:`~.layers.weight_layers`) and no others."""
    modules = dict(reference.named_modules())
    layers: dict[Node, tuple[str, bool]] = {}
    names: dict[Node, str] = {}  # what the manifest lists, where it is not the reference module's name
    skip = set() if heads else output_layers(quantized.graph)
    norms = folded_norms(reference, calibration[:1]) if folded else {}
    for name, node in weight_layers(quantized.graph).items():
        if node in skip or (only is not None and name not in only):
            continue
        bias = node.args[2] if len(node.args) > 2 else None
        # '#k' names (several ops in one module) have no module to compare with
        if not (name in modules and isinstance(bias, Node) and bias.op == "get_attr" and _is_quantized_weight(node)):
            continue
        if _same_output(modules[name], quantized, bias.target):
            layers[node] = (name, node.target == torch.ops.aten.linear.default)
        elif name in norms and _folded_into(node):
            layers[node] = (norms[name], False)
            names[node] = f"{name}+{norms[name]}"
    if not layers:
        return []
    fast = not plain_compile()
    # Both passes allocate and free whole-set activations (2-77 MB for L1 over 32 images) by the hundred:
    # as mappings they leave when freed; as heap blocks they fragment it and the resident set keeps growing.
    with large_blocks_mapped() if fast else contextlib.nullcontext():
        means = _reference_means(reference, dict(layers.values()),
                                 [calibration[i:i + batch] for i in range(0, len(calibration), batch)])
        if fast:
            release_freed_memory()  # the float pass's leftovers: the corrected run's peak would stack on them
        run = _CorrectingRun(quantized, layers, means, chunk=4 if fast else None, names=names)
        run.run(calibration)
    return run.corrected


@torch.no_grad()
def fold_batchnorms(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` with every conv -> BatchNorm pair (:func:`folded_norms`) folded into the conv
    (weight scaled by gamma / sigma per output channel, bias = beta + (b - mu) gamma / sigma) and the
    BatchNorm made an identity: the same function in float, now with a bias per conv to correct. Returns the
    copy and the folded conv names."""
    import copy

    folded = copy.deepcopy(model).eval()
    norms = folded_norms(folded, example)
    modules = dict(folded.named_modules())
    for conv_name, norm_name in norms.items():
        conv, norm = modules[conv_name], modules[norm_name]
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps) if norm.affine else \
            1 / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias if norm.affine else torch.zeros_like(scale)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        conv.weight = nn.Parameter(conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1))),
                                   requires_grad=False)
        conv.bias = nn.Parameter(shift + (bias - norm.running_mean) * scale, requires_grad=False)
        owner_name, _, attr = norm_name.rpartition(".")
        setattr(folded.get_submodule(owner_name) if owner_name else folded, attr, nn.Identity())
    return folded, list(norms)


@torch.no_grad()
def corrected_float_model(model: nn.Module, example: torch.Tensor,
                          quantized_of: Callable[[nn.Module], GraphModule], calibration: torch.Tensor,
                          heads: bool = False, folded_only: bool = False) -> tuple[nn.Module, list[str]]:
    """For a backend that quantizes a float model its own way (LiteRT): ``model`` with its BatchNorms
    folded (:func:`fold_batchnorms`) and its conv/linear biases corrected as :func:`correct_bias` corrects
    them on edgevit's PT2E int8 simulation of that folded model (``quantized_of(folded)`` returns the
    converted graph: per-channel symmetric int8 weights and per-tensor activations, as the backend's). The
    corrections are measured layer after layer there (each after the ones before it are corrected) and
    written into the float copy, so the backend quantizes a model whose biases already hold them.
    ``folded_only``: only the convs a BatchNorm was folded into; a model without any comes back as it is,
    with no simulation run. Returns the model and the corrected layers."""
    folded, names = fold_batchnorms(model, example)
    if folded_only and not names:
        return model, []
    quantized = quantized_of(folded)
    corrected = correct_bias(quantized, folded, calibration, heads=heads, only=set(names) if folded_only else None)
    modules = dict(folded.named_modules())
    for name, node in weight_layers(quantized.graph).items():
        if name not in corrected:
            continue
        owner_name, _, attr = node.args[2].target.rpartition(".")
        value = getattr(quantized.get_submodule(owner_name) if owner_name else quantized, attr)
        modules[name].bias = nn.Parameter(value.detach().clone(), requires_grad=False)
    return folded, corrected
