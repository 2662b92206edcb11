"""Per-layer quantization sensitivity: quantize one layer (conv, linear, add, mul) at a time, the rest fp32.

One PT2E prepare + calibration with the recipe's quantizer gives every observer its range. Each
observer is then swapped for a switchable fake-quantizer with exactly the scale/zero-point the
converted int8 graph would use (torch's ``fake_quantize_per_*`` round and clamp as quantize/dequantize
do). A layer = its input activation(s), its weight (conv/linear) and its output quantizers; turning on one layer's set
and running the calibration images measures what int8 costs at that layer alone, in eager, without a
lowering per layer (a lowering takes 20-50 s; one eager pass takes milliseconds). The full int8 row
turns every quantizer on; it tracks the lowered artifact (README, "Quantization").
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e
from torchao.quantization.pt2e.quantizer import Quantizer

from .layers import quantizable_layers
from .pt2e import CALIBRATION_BATCH, _capture_for_calibration

__all__ = ["FakeQuantGraph", "LayerSensitivity", "SensitivityResult", "sqnr_db", "logit_kl"]


@dataclass
class LayerSensitivity:
    name: str            # the layer name the mixed-precision search and --fp32 exclusions use
    op: str              # conv2d | linear | add | mul
    params: int
    sqnr_db: float       # logits with only this layer int8 vs fp32 (higher is better)
    kl: float            # mean KL(softmax fp32 || softmax this-layer-int8) per image, nats


@dataclass
class SensitivityResult:
    layers: list[LayerSensitivity]   # most sensitive (lowest SQNR) first
    full_int8_sqnr_db: float         # every quantizer on, for scale
    full_int8_kl: float
    samples: int

    def ranking(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def as_dict(self) -> dict:
        return {"samples": self.samples, "full_int8": {"sqnr_db": self.full_int8_sqnr_db, "kl": self.full_int8_kl},
                "layers": [asdict(layer) for layer in self.layers]}


def sqnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    noise = (reference - output).double().pow(2).sum()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.double().pow(2).sum() / noise))


def logit_kl(reference: torch.Tensor, output: torch.Tensor) -> float:
    return float(F.kl_div(F.log_softmax(output.double(), 1), F.log_softmax(reference.double(), 1),
                          log_target=True, reduction="batchmean"))


class _SwitchableFakeQuant(nn.Module):
    """An observer's frozen qparams, applied only while ``enabled``."""

    def __init__(self, observer):
        super().__init__()
        scale, zero_point = observer.calculate_qparams()
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", zero_point.int())
        self.qmin, self.qmax = observer.quant_min, observer.quant_max
        self.axis = getattr(observer, "ch_axis", None) if scale.numel() > 1 else None
        self.enabled = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.axis is None:
            return torch.fake_quantize_per_tensor_affine(x, float(self.scale), int(self.zero_point),
                                                         self.qmin, self.qmax)
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.axis,
                                                      self.qmin, self.qmax)


def _is_quantizer(gm: GraphModule, node) -> bool:
    return isinstance(node, Node) and node.op == "call_module" and isinstance(
        gm.get_submodule(node.target), _SwitchableFakeQuant)


def _layer_quantizers(gm: GraphModule, node: Node) -> list[str]:
    """The quantizers on a conv/linear's inputs (activation, weight) and on its output (after a fused
    ReLU/clamp if there is one)."""
    names = [a.target for a in node.args if _is_quantizer(gm, a)]
    frontier = list(node.users)
    while frontier:
        user = frontier.pop()
        if _is_quantizer(gm, user):
            names.append(user.target)
        elif user.op == "call_function" and user.target in (torch.ops.aten.relu.default,
                                                             torch.ops.aten.hardtanh.default):
            frontier += list(user.users)
    return names


# Ops that move or clamp values without computing new ones: an int8 edge runs through them.
_PASS_THROUGH = {torch.ops.aten.relu.default, torch.ops.aten.hardtanh.default, torch.ops.aten.flatten.using_ints,
                 torch.ops.aten.view.default, torch.ops.aten.reshape.default, torch.ops.aten.slice.Tensor,
                 torch.ops.aten.permute.default, torch.ops.aten.transpose.int, torch.ops.aten.squeeze.dim,
                 torch.ops.aten.unsqueeze.default, torch.ops.aten.clone.default}


def _is_int8_op(node: Node) -> bool:
    annotation = node.meta.get("quantization_annotation")
    return node.op == "call_function" and node.target not in _PASS_THROUGH and bool(
        annotation is not None and getattr(annotation, "_annotated", False))


def _adjacent_int8_ops(gm: GraphModule, observer: Node) -> set[Node]:
    """The int8 ops whose input or output is the edge ``observer`` quantizes (through reshapes, ReLUs)."""
    found, node = set(), observer.args[0]
    while isinstance(node, Node) and node.op == "call_function" and node.target in _PASS_THROUGH:
        node = node.args[0]
    if isinstance(node, Node) and _is_int8_op(node):
        found.add(node)
    frontier = list(observer.users)
    while frontier:
        user = frontier.pop()
        if _is_quantizer(gm, user):
            continue
        if user.op == "call_function" and user.target in _PASS_THROUGH:
            frontier += list(user.users)
        elif _is_int8_op(user):
            found.add(user)
    return found


def _params(gm: GraphModule, node: Node) -> int:
    """Weight + bias elements of a conv/linear node (its weight may sit behind a quantizer)."""
    total = 0
    for arg in node.args[1:3]:
        if _is_quantizer(gm, arg):
            arg = arg.args[0]
        if isinstance(arg, Node) and arg.op == "get_attr":
            obj = gm
            for part in arg.target.split("."):
                obj = getattr(obj, part)
            total += obj.numel()
    return total


class FakeQuantGraph:
    """``model`` captured, calibrated with ``quantizer``, every quantizer switchable per layer.

    ``run(inputs, fp32_layers)`` gives the logits with every quantizer on except those of the named
    layers: the eager estimate of a mixed-precision artifact, and, with one layer on at a time, the
    sensitivity ranking.
    """

    @torch.no_grad()
    def __init__(self, model: nn.Module, example: torch.Tensor, quantizer: Quantizer, calibration: torch.Tensor,
                 batch: int | None = None):
        captured, self.step = _capture_for_calibration(model.eval(), example, batch or CALIBRATION_BATCH)
        self.static = self.step == example.shape[0]
        self.graph = prepare_pt2e(captured, quantizer)
        for x in self._chunks(calibration):
            self.graph(x)
        self.switches: dict[str, _SwitchableFakeQuant] = {}
        by_observer: dict[int, _SwitchableFakeQuant] = {}
        # Every name, not named_children(): a shared observer (one range for tensors that must agree,
        # e.g. around a reshape) is registered under several names and must stay one switch.
        for name, module in list(self.graph._modules.items()):  # noqa: SLF001
            if hasattr(module, "calculate_qparams"):
                if id(module) not in by_observer:
                    by_observer[id(module)] = _SwitchableFakeQuant(module)
                switch = by_observer[id(module)]
                self.switches[name] = switch
                setattr(self.graph, name, switch)
        # Layers the quantizer left float (the recipe's float steps, --fp32-layer) have no quantizers.
        self._nodes = {name: node for name, node in quantizable_layers(self.graph.graph).items()
                       if _layer_quantizers(self.graph, node)}
        self.layers = {name: _layer_quantizers(self.graph, node) for name, node in self._nodes.items()}
        self._users = {}  # quantizer -> the int8 ops on its edge: it stays on while any of them is int8
        for node in self.graph.graph.nodes:
            if _is_quantizer(self.graph, node):
                self._users.setdefault(node.target, set()).update(_adjacent_int8_ops(self.graph, node))

    def _chunks(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        chunks = [inputs[i:i + self.step] for i in range(0, len(inputs), self.step)]
        return [c for c in chunks if not self.static or len(c) == self.step]  # static: no short batch

    def usable(self, inputs: torch.Tensor) -> int:
        """How many of ``inputs`` :meth:`run` evaluates (a static-batch graph drops a short last batch)."""
        return sum(len(c) for c in self._chunks(inputs))

    @torch.no_grad()
    def run(self, inputs: torch.Tensor, quantized: set[str] | None = None, fp32_layers=()) -> torch.Tensor:
        """Logits with only the quantizers of the ``quantized`` layers on, or (None) every quantizer
        except those whose edge touches no int8 op once ``fp32_layers`` are float: an edge a float layer
        shares with an int8 add or concatenation stays int8, as in the lowered graph."""
        if quantized is None:  # everything int8 but fp32_layers: as the lowered graph will be
            off = {self._nodes[name] for name in fp32_layers}
            on = {k for k, users in self._users.items() if not users or users - off}
        else:
            on = {k for name in quantized for k in self.layers[name]}
        on_ids = {id(self.switches[k]) for k in on}
        for switch in self.switches.values():
            switch.enabled = id(switch) in on_ids
        try:
            return torch.cat([self.graph(x) for x in self._chunks(inputs)])
        finally:
            for switch in self.switches.values():
                switch.enabled = False

    def sensitivity(self, inputs: torch.Tensor, on_layer: Callable[[int, int], None] | None = None
                    ) -> SensitivityResult:
        """Each layer alone in int8 vs fp32 on ``inputs``, most sensitive first."""
        reference = self.run(inputs, quantized=set())
        rows = []
        for i, (name, node) in enumerate(self._nodes.items()):
            out = self.run(inputs, quantized={name})
            rows.append(LayerSensitivity(name, str(node.target).split(".")[-2], _params(self.graph, node),
                                         sqnr_db(reference, out), logit_kl(reference, out)))
            if on_layer:
                on_layer(i + 1, len(self._nodes))
        full = self.run(inputs)
        rows.sort(key=lambda r: (r.sqnr_db, -r.kl))
        return SensitivityResult(rows, sqnr_db(reference, full), logit_kl(reference, full), len(reference))
