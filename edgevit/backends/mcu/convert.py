"""edgevit's calibrated PT2E int8 graph -> :class:`McuGraph` (integer layers for ``firmware/kernels``).

The converted PT2E graph is int8 tensors (``quantize_per_tensor`` nodes) joined by float regions: each region
reads dequantized int8 tensors (and int8 per-channel weights) and ends in one quantize. Every region becomes one
integer layer, chosen by the ops inside it:

- conv / linear (+ ReLU): int8 weights (per-channel symmetric, as the recipe observed them), an int32 bias
  ``round(b / (s_x * s_w[c]))`` and per-channel requantisation ``(M[c], shift[c])`` for ``s_x * s_w[c] / s_y``;
  a fused ReLU is the lower clamp at the output zero point. 1x1 convs and linears fold the input zero point into
  the bias (``- z_x * sum(w[c])``) so their inner loop is a plain int8 dot product.
- add (TFLite's form): ``a' = (a - z_a) << 20``, each side requantised by ``s / (2 max(s_a, s_b))``, the sum by
  ``2 max(s_a, s_b) / (2^20 s_y)``; mul and bmm: ``(a - z_a)(b - z_b)`` accumulated in int32, requantised by
  ``s_a s_b / s_y``; mean: ``sum(x) - n z_x`` requantised by ``s_x / (n s_y)``.
- any region of elementwise ops on one int8 input (ReLU, sigmoid, GELU, hard-swish, ...): a 256-entry int8
  lookup table, made by running the region itself on the 256 dequantized codes and quantizing like the graph does.
- softmax (output fixed at scale 1/256, zero point -128): ``E[k] = round(2^16 exp(-s_x k))`` for k = 0..255,
  ``y_i = clamp(floor((256 E[m - x_i] + S/2) / S), 0, 255) - 128`` with ``m = max_j x_j``, ``S = sum_j E[m - x_j]``.
- the standardisation (LayerNorm / one-group GroupNorm without affine: ``d = x - mean``, ``d / sqrt(mean(d^2) +
  eps)``, its mean already an int8 tensor of x's scale): per row of n values ``d_i = x_i - m`` (exact),
  ``V = 2^8 sum d_i^2 + round(2^8 n eps / s_x^2)``, ``R = isqrt(2^16 V)`` (= floor(4096 sqrt(sum d^2 + n eps/s_x^2))),
  ``y_i = z_y + rdiv(d_i K, R)`` with ``K = round(4096 sqrt(n) / s_y)``; rdiv rounds half away from zero; R = 0
  gives z_y.
- reshape / flatten / dropout: an alias (no code) when the quantization does not change; slice, transpose,
  concat: copies; an int8 constant operand (an attention-bias table): copied from flash before its first use.

Requantisation is CMSIS-NN's single-rounding ``arm_nn_requantize``: a real multiplier r is ``M * 2^(shift - 31)``
with M in [2^30, 2^31) (``frexp``, M rounded half away from zero); ``y = ((x * M) >> (30 - shift)) + 1) >> 1``
on int64 with arithmetic shifts, i.e. x * r rounded half up (towards +inf).

Anything else is refused with the op's name and the module it came from.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torchao.quantization.pt2e  # noqa: F401  (registers the quantized_decomposed ops this module names)
from torch.fx import GraphModule, Node

from ...errors import EdgevitError
from .ir import Layer, McuGraph, Tensor

__all__ = ["UnsupportedOpError", "convert_pt2e", "quantize_multiplier", "LUT_OPS"]

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed
_Q = (qd.quantize_per_tensor.default, qd.quantize_per_tensor.tensor)
_DQ = (qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor)
_DQ_CHANNEL = (qd.dequantize_per_channel.default,)
_ALIAS = {aten.reshape.default, aten.view.default, aten.flatten.using_ints, aten.dropout.default,
          aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default, aten.clone.default, aten.contiguous.default,
          aten._unsafe_view.default, aten.alias.default}
# Elementwise ops a lookup table can hold (one int8 input, scalar constants only).
LUT_OPS = {aten.relu.default: "relu", aten.relu_.default: "relu", aten.sigmoid.default: "sigmoid",
           aten.gelu.default: "gelu", aten.hardswish.default: "hardswish", aten.hardsigmoid.default: "hardsigmoid",
           aten.tanh.default: "tanh", aten.silu.default: "silu", aten.hardtanh.default: "hardtanh",
           aten.clamp.default: "clamp", aten.leaky_relu.default: "leaky_relu", aten.elu.default: "elu",
           aten.exp.default: "exp", aten.rsqrt.default: "rsqrt", aten.sqrt.default: "sqrt",
           aten.mul.Tensor: "mul", aten.add.Tensor: "add", aten.sub.Tensor: "sub", aten.div.Tensor: "div",
           aten.neg.default: "neg", aten.abs.default: "abs", aten.erf.default: "erf", aten.pow.Tensor_Scalar: "pow"}
_RELU = (aten.relu.default, aten.relu_.default)
_ADD_SHIFT = 20


class UnsupportedOpError(EdgevitError):
    """An operator (or a combination inside one quantized region) the MCU kernel library lacks."""


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``real`` as (M, shift): real = M * 2^(shift - 31), M in [2^30, 2^31); (0, 0) for a zero or negligible real."""
    if real < 0:
        raise EdgevitError(f"negative requantisation multiplier {real}: scales must be positive")
    if real == 0 or real < 2.0**-32:
        return 0, 0
    mantissa, exponent = math.frexp(real)
    m = int(math.floor(mantissa * 2**31 + 0.5))
    if m == 2**31:
        m //= 2
        exponent += 1
    if exponent > 30:
        raise EdgevitError(f"requantisation multiplier {real:g} is too large for the int32 kernels (scales of "
                           "neighbouring tensors differ by more than 2^30)")
    return m, exponent


def _multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(reals)]
    return (np.array([p[0] for p in pairs], dtype=np.int32), np.array([p[1] for p in pairs], dtype=np.int32))


def _where(node: Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return f"{path or '(top level)'} (graph node {node.name})"


def _module_path(node: Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else "model"


def _shape(node: Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None:
        val = node.meta.get("val")
        if val is None:
            raise EdgevitError(f"no shape for graph node {node.name}; the graph was not shape-propagated")
        return tuple(int(s) for s in val.shape)
    return tuple(int(s) for s in meta.shape)


class _Converter:
    def __init__(self, gm: GraphModule, name: str):
        self.gm = gm
        self.name = name
        self.tensors: dict[int, Tensor] = {}
        self.layers: list[Layer] = []
        self.by_q: dict[Node, int] = {}           # quantize node -> tensor id
        self.names: dict[str, int] = {}

    # -- helpers ------------------------------------------------------------------------------------------------
    def _attr(self, node: Node) -> torch.Tensor:
        if node.op == "get_attr":
            obj = self.gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            return obj
        raise UnsupportedOpError(f"expected a constant, found {node.op} {node.name} at {_where(node)}")

    def _new_tensor(self, shape, scale: float, zp: int, alias_of: int | None = None) -> int:
        tid = len(self.tensors)
        self.tensors[tid] = Tensor(tid, tuple(int(s) for s in shape), float(scale), int(zp), alias_of)
        return tid

    def _layer_name(self, anchor: Node, op: str) -> str:
        base = f"{_module_path(anchor)}:{op}"
        count = self.names.get(base, 0)
        self.names[base] = count + 1
        return base if count == 0 else f"{base}#{count}"

    def _input_tensor(self, dq: Node) -> int:
        source = dq.args[0]
        if isinstance(source, Node) and source.op == "get_attr":   # an int8 constant (an attention-bias table)
            if source not in self.by_q:
                self.by_q[source] = self._constant(source, dq)
            return self.by_q[source]
        if source not in self.by_q:
            raise UnsupportedOpError(f"dequantize {dq.name} reads {source.name}, which is not an int8 tensor this "
                                     f"converter has seen, at {_where(dq)}")
        return self.by_q[source]

    def _region(self, q: Node) -> tuple[list[Node], list[Node], list[Node]]:
        """(float ops in topological order, dequantize inputs in first-use order, weight dequantizes)."""
        ops: set[Node] = set()
        inputs: list[Node] = []
        weights: list[Node] = []
        stack = [q.args[0]]
        while stack:
            node = stack.pop()
            if not isinstance(node, Node) or node in ops or node in inputs or node in weights:
                continue
            if node.op == "call_function" and node.target in _DQ:
                inputs.append(node)
            elif node.op == "call_function" and node.target in _DQ_CHANNEL:
                weights.append(node)
            elif node.op in ("get_attr", "placeholder"):
                continue
            elif node.op == "call_function":
                if node.target in _Q:
                    raise UnsupportedOpError(f"{q.name} quantizes an int8 tensor again at {_where(q)}")
                ops.add(node)
                for arg in node.all_input_nodes:
                    stack.append(arg)
            else:
                raise UnsupportedOpError(f"graph node {node.name} ({node.op}) at {_where(node)}")
        order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        inputs.sort(key=lambda n: min((order[u] for u in n.users if u in ops), default=order[n]))
        return sorted(ops, key=order.get), inputs, weights

    # -- the walk -----------------------------------------------------------------------------------------------
    def run(self) -> McuGraph:
        graph_input = None
        for node in self.gm.graph.nodes:
            if node.op == "call_function" and node.target in _Q:
                scale, zp = float(node.args[1]), int(node.args[2])
                if (node.args[3], node.args[4]) != (-128, 127) or node.args[5] != torch.int8:
                    raise UnsupportedOpError(f"{node.name} quantizes to {node.args[5]} [{node.args[3]}, "
                                             f"{node.args[4]}]; the MCU kernels are int8 [-128, 127]")
                source = node.args[0]
                if isinstance(source, Node) and source.op == "placeholder":
                    if graph_input is not None:
                        raise UnsupportedOpError("the model has more than one input; the MCU target takes one image")
                    graph_input = self.by_q[node] = self._new_tensor(_shape(node), scale, zp)
                    continue
                self.by_q[node] = self._lower_region(node, scale, zp)
        if graph_input is None:
            raise UnsupportedOpError("the graph's input is not quantized; lower it through edgevit's int8 recipe")
        output_node = next(n for n in self.gm.graph.nodes if n.op == "output")
        outs = [a for a in torch.fx.node.map_arg(output_node.args[0], lambda n: n) if isinstance(a, Node)] \
            if isinstance(output_node.args[0], (list, tuple)) else [output_node.args[0]]
        if len(outs) != 1 or outs[0].op != "call_function" or outs[0].target not in _DQ:
            raise UnsupportedOpError("the model's output is not one dequantized int8 tensor (a float op ends the "
                                     "graph); the MCU target returns one int8 tensor")
        output = self._input_tensor(outs[0])
        if self.tensors[output].alias_of is not None:   # the output buffer is the caller's: give it a real copy
            output = self._copy(output, outs[0])
        return McuGraph(self.name, self.tensors, self.layers, graph_input, output)

    def _constant(self, source: Node, dq: Node) -> int:
        """An int8 constant the graph dequantizes (the recipe quantized it as an add's operand): a layer that
        copies it from flash into the arena right before its first use."""
        value = self._attr(source).detach()
        if value.dtype != torch.int8:
            raise UnsupportedOpError(f"constant {source.target} at {_where(dq)} is {value.dtype}, not int8")
        out = self._new_tensor(value.shape, float(dq.args[1]), int(dq.args[2]))
        anchor = next(iter(dq.users), dq)
        self.layers.append(Layer(self._layer_name(anchor, "constant"), "constant", [], out, {"size": value.numel()},
                                 {"data": value.numpy().astype(np.int8).reshape(-1)}))
        return out

    def _copy(self, tid: int, anchor: Node) -> int:
        t = self.tensors[tid]
        out = self._new_tensor(t.shape, t.scale, t.zero_point)
        self.layers.append(Layer(self._layer_name(anchor, "copy"), "copy", [tid], out, {"size": t.size}))
        return out

    def _lower_region(self, q: Node, scale: float, zp: int) -> int:
        ops, inputs, weights = self._region(q)
        targets = [n.target for n in ops]
        shape = _shape(q)
        if not ops:
            raise UnsupportedOpError(f"{q.name} requantizes a tensor with no op between at {_where(q)}")
        anchor = ops[-1]
        first = ops[0]   # operand order is the first op's argument order (bmm, mul, add are not symmetric)
        inputs.sort(key=lambda dq: first.all_input_nodes.index(dq) if dq in first.all_input_nodes else len(ops))
        in_ids = [self._input_tensor(dq) for dq in inputs]
        core = [t for t in targets if t not in _RELU]
        relu = len(core) < len(targets)
        if core in ([aten.conv2d.default], [aten.convolution.default]) and len(weights) == 1:
            return self._conv(ops, in_ids, weights[0], shape, scale, zp, relu, q)
        if core == [aten.linear.default] and len(weights) == 1:
            return self._linear(ops, in_ids, weights[0], shape, scale, zp, relu, q)
        if weights:
            raise UnsupportedOpError(f"op(s) {', '.join(map(_opname, targets))} with weights at {_where(anchor)}: "
                                     "the MCU kernels take weights in conv2d and linear only")
        if all(t in _ALIAS for t in targets) and len(in_ids) == 1:
            return self._alias(in_ids[0], shape, scale, zp, anchor)
        if core == [aten.add.Tensor] and len(in_ids) == 2:
            return self._add(in_ids, shape, scale, zp, relu, anchor)
        if targets == [aten.mul.Tensor] and len(in_ids) == 2:
            return self._binary("mul", in_ids, shape, scale, zp, anchor)
        if targets in ([aten.bmm.default], [aten.matmul.default]) and len(in_ids) == 2:
            return self._bmm(in_ids, shape, scale, zp, anchor)
        if targets == [aten.mean.dim] and len(in_ids) == 1:
            return self._mean(ops[0], in_ids[0], shape, scale, zp)
        if targets in ([aten.softmax.int], [aten._softmax.default]) and len(in_ids) == 1:
            return self._softmax(ops[0], in_ids[0], shape, scale, zp)
        if targets == [aten.cat.default]:
            return self._concat(ops[0], in_ids, shape, scale, zp)
        if targets == [aten.slice.Tensor] and len(in_ids) == 1:
            return self._slice(ops[0], in_ids[0], shape, scale, zp)
        if targets in ([aten.transpose.int], [aten.permute.default]) and len(in_ids) == 1:
            return self._permute(ops[0], in_ids[0], shape, scale, zp)
        perms = [n for n in ops if n.target in (aten.transpose.int, aten.permute.default)]
        if len(in_ids) == 1 and len(perms) == 1 and all(n in perms or n.target in _ALIAS for n in ops):
            return self._reshaped_permute(perms[0], in_ids[0], shape, scale, zp, anchor)
        if aten.rsqrt.default in targets and aten.sub.Tensor in targets and len(in_ids) == 2:
            return self._norm(ops, in_ids, shape, scale, zp, anchor)
        if len(in_ids) == 1 and all(t in LUT_OPS or t in _ALIAS for t in targets) and _scalar_only(ops, inputs):
            return self._lut(ops, inputs[0], in_ids[0], q, shape, scale, zp)
        unknown = [n for n in ops if n.target not in LUT_OPS and n.target not in _ALIAS] or ops
        raise UnsupportedOpError(
            f"operator {_opname(unknown[0].target)} at {_where(unknown[0])} (in a region of "
            f"{', '.join(map(_opname, targets))} with {len(in_ids)} int8 input(s)) has no kernel in the MCU "
            "library (firmware/kernels): it takes conv2d, linear, add, mul, bmm, mean, softmax, the "
            "standardisation, concat, slice, transpose, reshape and single-input elementwise ops as lookup tables. "
            "Pick a model without it, or add a kernel (firmware/kernels + edgevit/backends/mcu).")

    # -- layers -------------------------------------------------------------------------------------------------
    def _weights(self, wnode: Node) -> tuple[np.ndarray, np.ndarray]:
        w = self._attr(wnode.args[0]).detach()
        scales = self._attr(wnode.args[1]).detach().to(torch.float64).numpy()
        zps = self._attr(wnode.args[2]).detach().numpy()
        if w.dtype != torch.int8 or int(wnode.args[3]) != 0 or np.any(zps != 0):
            raise UnsupportedOpError(f"weights {wnode.name} are not int8 per-output-channel symmetric (the recipe's "
                                     f"scheme) at {_where(wnode)}")
        return w.numpy().astype(np.int8), scales

    def _bias(self, node: Node, count: int) -> np.ndarray:
        bias = node.args[2] if len(node.args) > 2 else None
        if bias is None:
            return np.zeros(count, dtype=np.float64)
        return self._attr(bias).detach().to(torch.float64).numpy()

    def _requant(self, reals) -> dict[str, np.ndarray]:
        mult, shift = _multipliers(reals)
        return {"multiplier": mult, "shift": shift}

    def _conv(self, ops, in_ids, wnode, shape, scale, zp, relu, q) -> int:
        conv = next(n for n in ops if n.target in (aten.conv2d.default, aten.convolution.default))
        if conv.target == aten.convolution.default:
            raise UnsupportedOpError(f"aten.convolution (transposed or raw) at {_where(conv)}; the MCU kernels take "
                                     "conv2d")
        defaults = [None, None, None, [1, 1], [0, 0], [1, 1], 1]
        args = list(conv.args) + defaults[len(conv.args):]
        stride, padding, dilation, groups = (list(args[3]), list(args[4]), list(args[5]), int(args[6]))
        if any(d != 1 for d in dilation):
            raise UnsupportedOpError(f"dilated conv2d at {_where(conv)} has no MCU kernel")
        x = self.tensors[in_ids[0]]
        w, w_scale = self._weights(wnode)
        out_ch, _, kh, kw = w.shape
        real_bias = self._bias(conv, out_ch)
        bias = np.round(real_bias / (x.scale * w_scale)).astype(np.int64)
        requant = self._requant(x.scale * w_scale / scale)
        _, cin, ih, iw = x.shape
        params = {"in_shape": list(x.shape[1:]), "out_shape": list(shape[1:]), "kernel": [kh, kw],
                  "stride": stride, "padding": padding, "groups": groups, "input_zero_point": x.zero_point,
                  "output_zero_point": zp, "act_min": zp if relu else -128, "act_max": 127}
        if groups == 1 and (kh, kw) == (1, 1) and stride == [1, 1] and padding == [0, 0]:
            op = "conv1x1"
            bias = bias - x.zero_point * w.reshape(out_ch, -1).astype(np.int64).sum(axis=1)
            params["scratch_bytes"] = 4 * (cin + 1) * ih * iw    # int32: the widened input + one channel's sums
        elif groups == cin == out_ch:
            op = "depthwise_conv2d"
        elif groups == 1:
            op = "conv2d"
        else:
            raise UnsupportedOpError(f"grouped conv2d (groups={groups}, {cin}->{out_ch}) at {_where(conv)}: the MCU "
                                     "kernels take dense, depthwise and 1x1 convolutions")
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(conv, op), op, in_ids[:1], out, params,
                                 {"weights": w, "bias": _int32(bias, conv), **requant}))
        return out

    def _linear(self, ops, in_ids, wnode, shape, scale, zp, relu, q) -> int:
        lin = next(n for n in ops if n.target == aten.linear.default)
        x = self.tensors[in_ids[0]]
        w, w_scale = self._weights(wnode)
        out_features, in_features = w.shape
        bias = np.round(self._bias(lin, out_features) / (x.scale * w_scale)).astype(np.int64)
        bias -= x.zero_point * w.astype(np.int64).sum(axis=1)
        rows = x.size // in_features
        params = {"rows": rows, "in_features": in_features, "out_features": out_features, "output_zero_point": zp,
                  "act_min": zp if relu else -128, "act_max": 127}
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(lin, "fully_connected"), "fully_connected", in_ids[:1], out, params,
                                 {"weights": w, "bias": _int32(bias, lin),
                                  **self._requant(x.scale * w_scale / scale)}))
        return out

    def _alias(self, tid, shape, scale, zp, anchor) -> int:
        t = self.tensors[tid]
        if math.isclose(t.scale, scale, rel_tol=1e-7) and t.zero_point == zp:
            return self._new_tensor(shape, scale, zp, alias_of=tid)
        return self._identity_lut(tid, shape, scale, zp, anchor)

    def _identity_lut(self, tid, shape, scale, zp, anchor) -> int:
        t = self.tensors[tid]
        codes = torch.arange(-128, 128, dtype=torch.int8)
        real = qd.dequantize_per_tensor.default(codes, t.scale, t.zero_point, -128, 127, torch.int8)
        table = qd.quantize_per_tensor.default(real, scale, zp, -128, 127, torch.int8).numpy().astype(np.int8)
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(anchor, "requantize"), "lut", [tid], out,
                                 {"size": t.size, "function": "requantize"}, {"table": table}))
        return out

    def _broadcast(self, in_ids, shape) -> dict:
        out4 = [1] * (4 - len(shape)) + list(shape)
        strides = []
        for tid in in_ids:
            s = list(self.tensors[tid].shape)
            s4 = [1] * (4 - len(s)) + s
            if len(s) > 4 or any(a != b and a != 1 for a, b in zip(s4, out4, strict=True)):
                raise UnsupportedOpError(f"broadcast of {tuple(s)} to {tuple(shape)} is not a plain broadcast")
            stride, acc = [0] * 4, 1
            for d in range(3, -1, -1):
                stride[d] = acc if s4[d] != 1 else 0
                acc *= s4[d]
            strides.append(stride)
        return {"out_shape4": out4, "a_strides": strides[0], "b_strides": strides[1]}

    def _add(self, in_ids, shape, scale, zp, relu, anchor) -> int:
        a, b = (self.tensors[t] for t in in_ids)
        twice_max = 2 * max(a.scale, b.scale)
        ma, sa = quantize_multiplier(a.scale / twice_max)
        mb, sb = quantize_multiplier(b.scale / twice_max)
        mo, so = quantize_multiplier(twice_max / ((1 << _ADD_SHIFT) * scale))
        params = {**self._broadcast(in_ids, shape), "a_zero_point": a.zero_point, "b_zero_point": b.zero_point,
                  "a_multiplier": ma, "a_shift": sa, "b_multiplier": mb, "b_shift": sb, "out_multiplier": mo,
                  "out_shift": so, "left_shift": _ADD_SHIFT, "output_zero_point": zp,
                  "act_min": zp if relu else -128, "act_max": 127}
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(anchor, "add"), "add", in_ids, out, params))
        return out

    def _binary(self, op, in_ids, shape, scale, zp, anchor) -> int:
        a, b = (self.tensors[t] for t in in_ids)
        m, s = quantize_multiplier(a.scale * b.scale / scale)
        params = {**self._broadcast(in_ids, shape), "a_zero_point": a.zero_point, "b_zero_point": b.zero_point,
                  "multiplier": m, "shift": s, "output_zero_point": zp, "act_min": -128, "act_max": 127}
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(anchor, op), op, in_ids, out, params))
        return out

    def _bmm(self, in_ids, shape, scale, zp, anchor) -> int:
        a, b = (self.tensors[t] for t in in_ids)
        if len(a.shape) != 3 or len(b.shape) != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
            raise UnsupportedOpError(f"matmul of {a.shape} x {b.shape} at {_where(anchor)}: the MCU kernel takes 3-D "
                                     "bmm (B, M, K) x (B, K, N)")
        m, s = quantize_multiplier(a.scale * b.scale / scale)
        params = {"batch": a.shape[0], "m": a.shape[1], "k": a.shape[2], "n": b.shape[2],
                  "a_zero_point": a.zero_point, "b_zero_point": b.zero_point, "multiplier": m, "shift": s,
                  "output_zero_point": zp, "scratch_bytes": 4 * (a.shape[2] + 1) * b.shape[2]}
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(anchor, "bmm"), "bmm", in_ids, out, params))
        return out

    def _reduced(self, node: Node, x: Tensor, dims) -> tuple[int, int]:
        dims = sorted(d % len(x.shape) for d in dims)
        if dims != list(range(len(x.shape) - len(dims), len(x.shape))):
            raise UnsupportedOpError(f"{_opname(node.target)} over dims {dims} of {x.shape} at {_where(node)}: the "
                                     "MCU kernels reduce over trailing dims only")
        inner = int(np.prod([x.shape[d] for d in dims], dtype=np.int64))
        return x.size // inner, inner

    def _mean(self, node, tid, shape, scale, zp) -> int:
        x = self.tensors[tid]
        rows, inner = self._reduced(node, x, node.args[1])
        m, s = quantize_multiplier(x.scale / (inner * scale))
        params = {"rows": rows, "inner": inner, "input_zero_point": x.zero_point, "multiplier": m, "shift": s,
                  "output_zero_point": zp}
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(node, "mean"), "mean", [tid], out, params))
        return out

    def _softmax(self, node, tid, shape, scale, zp) -> int:
        x = self.tensors[tid]
        if not (math.isclose(scale, 1 / 256) and zp == -128):
            raise UnsupportedOpError(f"softmax at {_where(node)} is quantized at scale {scale:g}, zero point {zp}; the "
                                     "MCU kernel writes 1/256, -128 (edgevit.backends.mcu.quantizer fixes it)")
        rows, inner = self._reduced(node, x, [node.args[1]])
        table = np.floor(65536.0 * np.exp(-x.scale * np.arange(256, dtype=np.float64)) + 0.5).astype(np.uint32)
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(node, "softmax"), "softmax", [tid], out,
                                 {"rows": rows, "inner": inner}, {"exp_table": table}))
        return out

    def _norm(self, ops, in_ids, shape, scale, zp, anchor) -> int:
        x, m = (self.tensors[t] for t in in_ids)
        if m.size > x.size:
            x, m, in_ids = m, x, in_ids[::-1]
        if not (math.isclose(x.scale, m.scale, rel_tol=1e-7) and x.zero_point == m.zero_point):
            raise UnsupportedOpError(f"standardisation at {_where(anchor)}: its mean is quantized apart from its input "
                                     "(the MCU kernel needs the mean at the input's scale and zero point)")
        eps_nodes = [n for n in ops if n.target == aten.add.Tensor]
        eps = None
        for n in eps_nodes:
            for a in n.args:
                if isinstance(a, (int, float)):
                    eps = float(a)
                elif isinstance(a, Node) and a.op == "get_attr":
                    value = self._attr(a)
                    if value.numel() == 1:
                        eps = float(value)
        if eps is None:
            raise UnsupportedOpError(f"standardisation at {_where(anchor)} without a constant epsilon")
        rows, n = m.size, x.size // m.size
        e8 = int(round(256.0 * n * eps / (x.scale * x.scale)))
        k = int(round(4096.0 * math.sqrt(n) / scale))
        params = {"rows": rows, "n": n, "eps_term": e8, "k": k, "output_zero_point": zp}
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(anchor, "norm"), "norm", in_ids, out, params))
        return out

    def _outer_inner(self, shape, dim) -> tuple[int, int]:
        dim %= len(shape)
        return int(np.prod(shape[:dim], dtype=np.int64)), int(np.prod(shape[dim + 1:], dtype=np.int64))

    def _moved(self, node, in_q: Tensor, op: str, in_ids, shape, scale, zp, params) -> int:
        """A data-movement layer at its input's quantization, then (when the graph quantizes its output apart)
        a requantizing lookup table."""
        moved = self._new_tensor(shape, in_q.scale, in_q.zero_point)
        self.layers.append(Layer(self._layer_name(node, op), op, in_ids, moved, params))
        if math.isclose(in_q.scale, scale, rel_tol=1e-7) and in_q.zero_point == zp:
            return moved
        return self._identity_lut(moved, shape, scale, zp, node)

    def _concat(self, node, in_ids, shape, scale, zp) -> int:
        first = self.tensors[in_ids[0]]
        for tid in in_ids[1:]:
            t = self.tensors[tid]
            if not (math.isclose(t.scale, first.scale, rel_tol=1e-7) and t.zero_point == first.zero_point):
                raise UnsupportedOpError(f"concat at {_where(node)} joins tensors of different quantization (the "
                                         "recipe's XNNPACK annotator shares it; the MCU's concat copies bytes)")
        dim = int(node.args[1]) if len(node.args) > 1 else 0
        outer, inner = self._outer_inner(shape, dim)
        sizes = [self.tensors[t].shape[dim % len(shape)] * inner for t in in_ids]
        return self._moved(node, first, "concat", in_ids, shape, scale, zp, {"outer": outer, "chunks": sizes})

    def _slice(self, node, tid, shape, scale, zp) -> int:
        x = self.tensors[tid]
        dim = int(node.args[1]) % len(x.shape)
        start = int(node.args[2]) if len(node.args) > 2 and node.args[2] is not None else 0
        step = int(node.args[4]) if len(node.args) > 4 else 1
        start = start + x.shape[dim] if start < 0 else min(start, x.shape[dim])
        if step != 1:
            raise UnsupportedOpError(f"strided slice (step {step}) at {_where(node)} has no MCU kernel")
        outer, inner = self._outer_inner(x.shape, dim)
        params = {"outer": outer, "in_chunk": x.shape[dim] * inner, "offset": start * inner,
                  "out_chunk": shape[dim] * inner}
        return self._moved(node, x, "slice", [tid], shape, scale, zp, params)

    def _permute(self, node, tid, shape, scale, zp) -> int:
        x = self.tensors[tid]
        rank = len(x.shape)
        if node.target == aten.transpose.int:
            perm = list(range(rank))
            a, b = int(node.args[1]) % rank, int(node.args[2]) % rank
            perm[a], perm[b] = perm[b], perm[a]
        else:
            perm = [int(p) % rank for p in node.args[1]]
        in_shape, perm = _collapse(list(x.shape), perm)
        if len(perm) > 4:
            raise UnsupportedOpError(f"a permutation of {len(perm)} non-mergeable dims at {_where(node)}: the MCU "
                                     "transpose kernel moves up to 4")
        pad = 4 - len(perm)
        in4 = [1] * pad + in_shape
        perm4 = list(range(pad)) + [p + pad for p in perm]
        return self._moved(node, x, "transpose", [tid], shape, scale, zp, {"in_shape4": in4, "perm4": perm4})

    def _reshaped_permute(self, node, tid, shape, scale, zp, anchor) -> int:
        """view -> transpose -> reshape in one region (window attention's head split): aliases around one copy."""
        x = self.tensors[tid]
        before = _shape(node.args[0])
        src = tid if before == x.shape else self._new_tensor(before, x.scale, x.zero_point, alias_of=tid)
        moved = self._permute(node, src, _shape(node), x.scale, x.zero_point)
        return self._alias(moved, shape, scale, zp, anchor)

    def _lut(self, ops, dq: Node, tid, q: Node, shape, scale, zp) -> int:
        x = self.tensors[tid]
        codes = torch.arange(-128, 128, dtype=torch.int8)
        env: dict[Node, torch.Tensor] = {dq: qd.dequantize_per_tensor.default(codes, x.scale, x.zero_point, -128, 127,
                                                                             torch.int8)}

        def value(a):
            if isinstance(a, Node):
                return env[a] if a in env else self._attr(a)
            return a

        for node in ops:
            if node.target in _ALIAS:
                env[node] = env[node.args[0]]
                continue
            args = torch.fx.node.map_aggregate(node.args, value)
            kwargs = torch.fx.node.map_aggregate(node.kwargs, value)
            env[node] = node.target(*args, **kwargs)
        table = qd.quantize_per_tensor.default(env[ops[-1]].reshape(256), scale, zp, -128, 127, torch.int8)
        names = "+".join(LUT_OPS[n.target] for n in ops if n.target in LUT_OPS)
        out = self._new_tensor(shape, scale, zp)
        self.layers.append(Layer(self._layer_name(ops[-1], "lut"), "lut", [tid], out,
                                 {"size": x.size, "function": names}, {"table": table.numpy().astype(np.int8)}))
        return out


def _collapse(shape: list[int], perm: list[int]) -> tuple[list[int], list[int]]:
    """The same data movement on fewer dims: input dims that stay adjacent and in order under ``perm`` merge
    (a 5-D window transpose is a 4-D one)."""
    groups: list[list[int]] = []
    for p in perm:
        if groups and groups[-1][-1] + 1 == p:
            groups[-1].append(p)
        else:
            groups.append([p])
    order = sorted(range(len(groups)), key=lambda i: groups[i][0])
    merged = [int(np.prod([shape[d] for d in groups[i]], dtype=np.int64)) for i in order]
    return merged, [order.index(i) for i in range(len(groups))]


def _scalar_only(ops: list[Node], inputs: list[Node]) -> bool:
    """True when every tensor an op reads is the region's one input or another op of it (scalars otherwise)."""
    inside = set(ops) | set(inputs)
    return all(a in inside for n in ops for a in n.all_input_nodes)


def _int32(values: np.ndarray, node: Node) -> np.ndarray:
    if np.any(np.abs(values) >= 2**31):
        raise EdgevitError(f"a bias at {_where(node)} does not fit int32 after quantization (its input or weight scale "
                           "is tiny); calibrate on more representative images")
    return values.astype(np.int32)


def _opname(target: Callable | str) -> str:
    """``aten.cumsum`` for an ATen overload, else the callable's name."""
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target._schema.name.split('::')[-1]}"
    return getattr(target, "__name__", None) or str(target)


def convert_pt2e(quantized: GraphModule, example: torch.Tensor, name: str) -> McuGraph:
    """Re-export the converted PT2E module at the deployment shape, propagate shapes, and lower it to the IR."""
    from torch.fx.passes.shape_prop import ShapeProp

    if example.shape[0] != 1:
        raise EdgevitError(f"the MCU target runs one image at a time; the input shape {tuple(example.shape)} has "
                           f"batch {example.shape[0]}. Use --input-shape 1,C,H,W.")
    exported = torch.export.export(quantized, (example,)).module()
    ShapeProp(exported).propagate(example)
    return _Converter(exported, name).run()
