"""Replay what ExecuTorch's XNNPACK lowering does to a captured graph, one work item per XNNPACK operator.

Checked against the operators XNNPACK really runs (ETDump counts per kind) for the four families in fp32
and int8 (tests/test_estimate.py, tools/bench_estimate.py). What is replayed, and from where:

- activation fusion (``FuseActivationPass``): relu/hardtanh folded into a preceding conv, linear, add,
  sub or mul whose only user it is; clone/dropout/alias vanish;
- layouts (``ChannelsLastTaggedReshapePass``): convs, pools, spatial means and resizes run NHWC, reshapes
  and linears need NCHW, anything else follows its inputs (a Python scalar operand forces NCHW); each
  switch is one Transpose, made once per float tensor and once per consumer of a quantized one;
- precision: in int8 an op runs in int8 when it sits in a dequantize -> op -> quantize pattern; a
  quantize or dequantize no int8 op absorbs is a Convert;
- XNNPACK's own rewrites at runtime: a 1x1 stride-1 convolution runs as Fully Connected, back-to-back
  static reshapes merge, a transpose of the last two dims feeding a float batch matmul's B operand is
  absorbed by it, and ``x * x`` runs as part of a "Mean Squared" reduction (fp32) or as Square (int8);
- what stays outside the delegate (``XnnpackPartitioner``): an op with no XNNPACK partitioner config that
  ``to_edge`` does not decompose (``native_layer_norm``, ``native_group_norm``, ``cumsum``, ``select``,
  ...) or one its config refuses (``mean.dim`` other than a keepdim mean over the last two dims of a 4-D
  tensor, ``softmax`` over another dim than the last) runs as an ExecuTorch portable kernel in fp32 on
  contiguous (NCHW) tensors: a ``portable`` work item. One on the path between delegated ops splits the
  delegated graph (``ModelWork.partitions``). Other configs' constraints are not replayed.
"""
from __future__ import annotations

import functools
import math

import torch

from ..cost import ModelWork, WorkItem

__all__ = ["graph_work"]

# aten op (as torch.export writes it) -> the edge op XNNPACK's partitioner configs are keyed by.
_EDGE_NAME = {
    "conv2d": "convolution.default", "convolution": "convolution.default", "linear": "linear.default",
    "addmm": "linear.default", "mm": "mm.default", "bmm": "bmm.default", "matmul": "bmm.default",
    "add": "add.Tensor", "sub": "sub.Tensor", "mul": "mul.Tensor", "div": "div.Tensor",
    "relu": "relu.default", "hardtanh": "hardtanh.default", "clamp": "clamp.default",
    "gelu": "gelu.default", "hardswish": "hardswish.default", "sigmoid": "sigmoid.default",
    "tanh": "tanh.default", "rsqrt": "rsqrt.default", "sqrt": "sqrt.default", "exp": "exp.default",
    "neg": "neg.default", "abs": "abs.default", "pow": "pow.Tensor_Scalar", "leaky_relu": "leaky_relu.default",
    "softmax": "_softmax.default", "_softmax": "_softmax.default",
    "mean": "mean.dim", "adaptive_avg_pool2d": "mean.dim", "avg_pool2d": "avg_pool2d.default",
    "max_pool2d": "max_pool2d.default", "upsample_bilinear2d": "upsample_bilinear2d.vec",
    "reshape": "view_copy.default", "view": "view_copy.default", "flatten": "view_copy.default",
    "_unsafe_view": "view_copy.default", "unflatten": "view_copy.default",
    "unsqueeze": "unsqueeze_copy.default", "squeeze": "view_copy.default",
    "transpose": "permute_copy.default", "permute": "permute_copy.default", "t": "permute_copy.default",
    "slice": "slice_copy.Tensor", "narrow": "slice_copy.Tensor",  # select: no XNNPACK config (portable)
    "cat": "cat.default", "concat": "cat.default", "pad": "constant_pad_nd.default",
    "constant_pad_nd": "constant_pad_nd.default",
}
# Edge ops ExecuTorch 1.5's XnnpackPartitioner has a config for (ALL_PARTITIONER_CONFIGS' target_name;
# tests/test_estimate.py checks this list against the installed ExecuTorch).
XNNPACK_EDGE_OPS = frozenset({
    "_clone_dim_order.default", "_native_batch_norm_legit_no_training.default", "_softmax.default",
    "_to_dim_order_copy.default", "abs.default", "add.Tensor", "addmm.default", "avg_pool2d.default",
    "bmm.default", "cat.default", "ceil.default", "choose_qparams_affine.default", "clamp.default",
    "clone.default", "constant_pad_nd.default", "convolution.default", "cos.default",
    "dequantize_affine.default", "dequantize_per_tensor.default", "div.Tensor", "exp.default",
    "floor.default", "gelu.default", "hardswish.default", "hardtanh.default", "leaky_relu.default",
    "linear.default", "log.default", "max.dim", "max_pool2d.default", "maximum.default", "mean.dim",
    "minimum.default", "mm.default", "mul.Tensor", "neg.default", "permute_copy.default",
    "pow.Tensor_Scalar", "prelu.default", "quantize_affine.default", "quantize_per_tensor.default",
    "relu.default", "rsqrt.default", "sigmoid.default", "sin.default", "slice_copy.Tensor", "sqrt.default",
    "sub.Tensor", "tanh.default", "unsqueeze_copy.default", "upsample_bilinear2d.vec", "view_copy.default",
})
_VANISH = {"clone", "contiguous", "dropout", "alias", "detach", "lift_fresh_copy", "identity",
           "_assert_tensor_metadata"}
_CATEGORY = {
    "linear.default": "gemm", "mm.default": "gemm", "bmm.default": "bmm",
    "add.Tensor": "binary", "sub.Tensor": "binary", "mul.Tensor": "binary", "div.Tensor": "binary",
    "_softmax.default": "softmax", "mean.dim": "reduce", "avg_pool2d.default": "pool",
    "max_pool2d.default": "pool", "permute_copy.default": "transpose", "slice_copy.Tensor": "copy",
    "cat.default": "copy", "constant_pad_nd.default": "copy", "upsample_bilinear2d.vec": "copy",
    "view_copy.default": "reshape", "unsqueeze_copy.default": "reshape",
}
_NEEDS_NHWC = {"convolution.default", "upsample_bilinear2d.vec", "mean.dim", "max_pool2d.default",
               "avg_pool2d.default"}
_NEEDS_NCHW = {"view_copy.default", "unsqueeze_copy.default", "linear.default"}
_RESHAPE = {"view_copy.default", "unsqueeze_copy.default"}
# Data movement XNNPACK runs in int8 only with the same scale and zero point in and out; a quantizer that
# observes its output separately makes it a float op between two Converts.
_PURE_COPY = _RESHAPE | {"permute_copy.default", "slice_copy.Tensor"}
_BINARY = {"add.Tensor", "sub.Tensor", "mul.Tensor", "div.Tensor"}
_FUSES_ACTIVATION = {"convolution.default", "add.Tensor", "sub.Tensor", "mul.Tensor", "linear.default"}
_FUSABLE_ACTIVATION = {"relu.default", "hardtanh.default"}
_MATH = {"gelu", "sigmoid", "tanh", "exp", "log", "elu", "sin", "cos", "erf"}
_Q = {"quantize_per_tensor"}
_DQ = {"dequantize_per_tensor", "dequantize_per_channel"}



@functools.cache
def _decomposed_by_to_edge() -> frozenset:
    """The aten ops ``to_edge_transform_and_lower`` decomposes before partitioning (its default table)."""
    from executorch.exir.program._program import _default_decomposition_table

    return frozenset(_default_decomposition_table())


def _kind(node) -> str:
    target = node.target
    name = getattr(target, "_opname", None) or getattr(target, "__name__", str(target))
    return name.split(".")[0]


def _shape(node) -> tuple[int, ...]:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(int(s) for s in val.shape)
    if node.op == "get_attr":
        obj = node.graph.owning_module
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return tuple(obj.shape) if isinstance(obj, torch.Tensor) else ()
    if node.op == "call_function" and node.args and isinstance(node.args[0], torch.fx.Node):
        return _shape(node.args[0])  # quantize / dequantize keep the shape
    return ()


def _module_path(node) -> str:
    paths = [v[0] for v in node.meta.get("nn_module_stack", {}).values() if v[0]]
    return max(paths, key=len) if paths else ""


def _stage_containers(graph: torch.fx.GraphModule) -> set[str]:
    """Top-level modules that hold stages: indexed children with blocks inside (``stages.2.blocks.0``),
    as opposed to a plain sequence of layers (``patch_embed.0`` is a conv, not a stage)."""
    containers = set()
    for node in graph.graph.nodes:
        parts = _module_path(node).split(".")
        if len(parts) >= 4 and parts[1].isdigit():
            containers.add(parts[0])
    return containers


def _stage(node, containers: set[str]) -> str:
    """The model stage a node belongs to: 'stages.2' inside a stage container, else the top-level module."""
    parts = _module_path(node).split(".")
    if not parts[0]:
        return "(graph input/output)"
    if parts[0] in containers and len(parts) > 1 and parts[1].isdigit():
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


class _Walker:
    """Replays fusion, layout and precision decisions over a captured graph (see module docstring)."""

    def __init__(self, graph: torch.fx.GraphModule, precision: str):
        self.graph = graph
        self.float_precision = "fp16" if precision == "fp16" else "fp32"
        self.quantized = precision == "int8"
        self.items: list[WorkItem] = []
        self.nhwc: dict = {}                  # logical tensor (node) -> is NHWC
        self.converted: set = set()           # (node, to_nhwc) transposes already made (float tensors)
        self.converted_to_float: set = set()  # dequantize nodes already turned into a Convert
        self.fused: set = set()               # activation nodes folded into their producer
        self.int8_ops: set = set()
        self.outside: set = set()             # nodes left to portable kernels
        self.level: dict = {}                 # node -> delegated -> outside steps before it (its partition)
        self.containers = _stage_containers(graph)

    # ---- graph helpers
    def source(self, node):
        """Look through quantize/dequantize to the node that computes the value."""
        while node.op == "call_function" and _kind(node) in _Q | _DQ:
            node = node.args[0]
        return node

    def is_constant(self, node) -> bool:
        return self.source(node).op == "get_attr"

    def activation_inputs(self, node) -> list:
        ins = []
        for a in node.all_input_nodes:
            if not self.is_constant(a):
                ins.append(a)
        return ins

    def edge(self, node) -> str | None:
        return _EDGE_NAME.get(_kind(node))

    def consumers(self, node) -> list:
        """The users of ``node``, looking through the ops that vanish (dropout, clone, ...)."""
        found = []
        for user in node.users:
            found += self.consumers(user) if _kind(user) in _VANISH else [user]
        return found

    def producer(self, node):
        """The node that computes ``node``'s value, looking back through the ops that vanish."""
        while node.op == "call_function" and _kind(node) in _VANISH and node.all_input_nodes:
            node = node.all_input_nodes[0]
        return node

    def runs_int8(self, node, out_node) -> bool:
        """dequantize -> op (-> fused activation ``out_node``) -> quantize, for an op XNNPACK takes in int8."""
        if not self.quantized:
            return False
        ins = self.activation_inputs(node)
        outs = self.consumers(out_node)
        if not (ins and all(_kind(a) in _DQ for a in ins)
                and outs and all(u.op == "call_function" and _kind(u) in _Q for u in outs)):
            return False
        if self.edge(node) in _PURE_COPY:  # int8 copies only where nothing is requantized
            params = {tuple(q.args[1:3]) for q in [*ins, *outs]}
            return len(params) == 1
        return True

    def bytes_per(self, int8: bool) -> int:
        return 1 if int8 else (2 if self.float_precision == "fp16" else 4)

    def numel(self, node) -> int:
        return math.prod(_shape(node)) if _shape(node) else 0

    # ---- emitters
    def emit(self, category, node, macs, nbytes, op, int8=False, gemm=None, weight_bytes=0, stage=None, rows=0):
        if category == "unary" and not int8 and op.split("+")[0] in _MATH:
            category = "math"  # float transcendental (in int8 XNNPACK uses a lookup table: plain unary)
        self.items.append(WorkItem(category, "int8" if int8 else self.float_precision, int(macs), int(nbytes),
                                   stage or _stage(node, self.containers), op, gemm, int(weight_bytes), int(rows),
                                   self.level.get(node, 0)))

    def to_layout(self, tensor, consumer, want_nhwc: bool) -> None:
        """Insert (count) a Transpose if ``tensor`` is not in the layout ``consumer`` needs."""
        src = self.source(tensor)
        if self.is_constant(tensor) or src.op == "placeholder" and not want_nhwc:
            return
        if self.nhwc.get(src, False) == want_nhwc:
            return
        quantized_edge = _kind(tensor) in _Q | _DQ
        key = (src, want_nhwc)
        if not quantized_edge:
            if key in self.converted:
                return
            self.converted.add(key)
        int8 = quantized_edge and _kind(tensor) in _DQ and self.quantized
        n = self.numel(src)
        self.emit("transpose", consumer, n, 2 * n * self.bytes_per(int8), "layout", int8=int8)

    # ---- main loop
    def run(self) -> list[WorkItem]:
        nodes = list(self.graph.graph.nodes)
        for node in nodes:
            if node.op == "placeholder":
                self.nhwc[node] = False
            elif node.op == "output":
                outs = node.args[0] if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
                for o in outs:
                    if isinstance(o, torch.fx.Node):
                        self.to_layout(o, o, want_nhwc=False)
                        if _kind(o) in _DQ:  # int8 body, float output
                            self.emit("convert", self.source(o), self.numel(o), 5 * self.numel(o), "dequantize")
            elif node.op == "call_function":
                self.visit(node)
        return self.items

    def place(self, node, kind: str) -> bool:
        """Record whether ``node`` stays outside the delegate and which partition it falls in."""
        ins = node.all_input_nodes
        if kind in _VANISH or kind == "getitem":  # the value of its input, wherever that ran
            outside = bool(ins) and ins[0] in self.outside
        else:
            outside = kind not in _Q | _DQ and self.outside_delegate(node, kind, self.edge(node))
        steps = [self.level.get(a, 0) + (outside and a.op == "call_function" and a not in self.outside)
                 for a in ins]
        self.level[node] = max(steps, default=0)
        if outside:
            self.outside.add(node)
        return outside

    def visit(self, node) -> None:
        kind = _kind(node)
        if self.place(node, kind) and kind not in _VANISH and kind != "getitem":
            self.emit_portable(node, kind)
            return
        if kind in _Q:
            src = self.producer(node.args[0])
            if src.op == "placeholder" or (src.op == "call_function" and src not in self.int8_ops
                                           and _kind(src) not in _Q | _DQ):
                n = self.numel(node)
                where = src if src.op == "call_function" else next(iter(node.users))  # for its stage
                self.emit("convert", where, n, 5 * n, "quantize")
            self.nhwc[node] = self.nhwc.get(self.source(node), False)
            return
        if kind in _DQ:
            return  # counted where a float op consumes it (see convert_inputs)
        if self.reshape_into_reshape(node):
            self.layouts(node, self.edge(node))
            self.int8_ops.add(node)  # its quantize (if any) is the next reshape's, not a Convert
            return  # XNNPACK merges back-to-back static reshapes
        if self.transposes_bmm_operand(node):
            self.nhwc[node] = False
            return  # XNNPACK runs it as the batch matmul's transposed B operand
        if kind in _VANISH or kind == "getitem" or node in self.fused:  # gone, or inside its producer
            if node.all_input_nodes:
                self.nhwc[node] = self.nhwc.get(self.source(node.all_input_nodes[0]), False)
            return
        edge = self.edge(node)
        activation = self.fuse_activation(node, edge)
        int8 = self.runs_int8(node, activation or node)
        if int8:
            self.int8_ops.update({node, activation or node})
        self.layouts(node, edge)
        if not int8:
            self.convert_inputs(node)
        self.emit_op(node, kind, edge, int8, "+" + _kind(activation) if activation else "")

    def layouts(self, node, edge) -> None:
        acts = self.activation_inputs(node)
        if edge in _NEEDS_NHWC:
            if acts:
                self.to_layout(acts[0], node, want_nhwc=True)
            self.nhwc[node] = True
        elif edge in _NEEDS_NCHW:
            for a in acts:
                self.to_layout(a, node, want_nhwc=False)
            self.nhwc[node] = False
        else:
            tensors = [a for a in node.all_input_nodes]
            flags = [self.nhwc.get(self.source(a), False) for a in tensors]
            # A Python scalar operand becomes a 0-d constant in the edge graph: not convertible to NHWC.
            scalar = edge in _BINARY and any(isinstance(a, (int, float)) for a in node.args[:2])
            if flags and all(flags) and not scalar:
                self.nhwc[node] = True
            elif any(flags):
                if not scalar and all(len(_shape(a)) == 4 for a in tensors):
                    for a in tensors:
                        self.to_layout(a, node, want_nhwc=True)
                    self.nhwc[node] = True
                else:
                    for a in tensors:
                        self.to_layout(a, node, want_nhwc=False)
                    self.nhwc[node] = False
            else:
                self.nhwc[node] = False

    def convert_inputs(self, node) -> None:
        """A float op fed by a dequantize: that dequantize is a Convert (once per dequantize node)."""
        for a in self.activation_inputs(node):
            if _kind(a) in _DQ and a not in self.converted_to_float:
                self.converted_to_float.add(a)
                n = self.numel(a)
                self.emit("convert", node, n, 5 * n, "dequantize")

    def fuse_activation(self, node, edge):
        """The relu/hardtanh folded into ``node`` (FuseActivationPass: its only user), or None."""
        if edge not in _FUSES_ACTIVATION or len(node.users) != 1:
            return None
        user = next(iter(node.users))
        if self.edge(user) not in _FUSABLE_ACTIVATION:
            return None
        self.fused.add(user)
        return user

    def emit_op(self, node, kind, edge, int8, fused: str) -> None:
        out = _shape(node)
        n_out = math.prod(out) if out else 0
        b = self.bytes_per(int8)
        acts = self.activation_inputs(node)
        n_in = sum(self.numel(a) for a in acts)
        io = (n_in + n_out) * b
        if edge == "convolution.default":
            weight = _shape(node.args[1])
            at = 8 if kind == "convolution" else 6  # aten.convolution(..., transposed, output_padding, groups)
            groups = node.args[at] if len(node.args) > at else 1
            stride = node.args[3] if len(node.args) > 3 else (1, 1)
            padding = node.args[4] if len(node.args) > 4 else (0, 0)
            cout, cin_g, kh, kw = weight
            macs = n_out * cin_g * kh * kw
            wbytes = math.prod(weight) * b + cout * 4
            if groups > 1 and cin_g == 1:
                self.emit("dwconv", node, macs, io + wbytes, kind + fused, int8, weight_bytes=wbytes)
                return
            pointwise = (kh, kw) == (1, 1) and tuple(stride) in ((1, 1), (1,)) and not any(padding or (0,))
            m = n_out // cout
            self.emit("gemm" if pointwise and groups == 1 else "igemm", node, macs, io + wbytes, kind + fused,
                      int8, gemm=(1, m, cout, cin_g * kh * kw), weight_bytes=wbytes)
        elif edge in ("linear.default", "mm.default"):
            weight = _shape(node.args[1])
            n_features, k = (weight[0], weight[1]) if kind != "mm" else (weight[1], weight[0])
            m = n_out // n_features
            wbytes = math.prod(weight) * b + n_features * 4
            self.emit("gemm", node, n_out * k, io + wbytes, kind + fused, int8, gemm=(1, m, n_features, k),
                      weight_bytes=wbytes)
        elif edge == "bmm.default":
            a_shape = _shape(node.args[0])
            k = a_shape[-1]
            batch = math.prod(out[:-2])
            b_bytes = self.numel(node.args[1]) * b
            self.emit("bmm", node, n_out * k, io, kind, int8, gemm=(batch, out[-2], out[-1], k),
                      weight_bytes=b_bytes // max(batch, 1))
        elif edge == "mean.dim":
            square = self.mean_of_square(node)
            self.emit("reduce", node, n_in, io, ("square+" if square else "") + kind, int8, rows=n_out)
        elif edge in ("avg_pool2d.default", "max_pool2d.default"):
            k = node.args[1] if len(node.args) > 1 else (1, 1)
            self.emit("pool", node, n_out * math.prod(k), io, kind, int8)
        elif edge in _FUSABLE_ACTIVATION or kind in _FUSABLE_ACTIVATION:
            self.emit("unary", node, n_out, io, kind, int8)
        elif edge == "mul.Tensor" and self.is_square(node):
            if self.squares_into_mean(node):
                return  # priced with the mean that follows it (see mean_of_square)
            self.emit("unary", node, n_out, io, "square", int8)  # XNNPACK rewrites x * x as Square
        else:
            category = _CATEGORY.get(edge, "unary")
            if edge is None:
                kind = f"{kind}?"  # an op this walker does not know: counted as elementwise
            rows = n_out // out[-1] if category == "softmax" and out else 0
            self.emit(category, node, max(n_out, n_in), io, kind + fused, int8, rows=rows)

    def outside_delegate(self, node, kind: str, edge: str | None) -> bool:
        """Whether the partitioner leaves ``node`` to a portable kernel (see the module docstring)."""
        if edge is None:
            if node.target in _decomposed_by_to_edge():
                return False  # to_edge rewrites it into primitive ops first (SiLU -> sigmoid * x, ...)
            return not any(f"{kind}.{overload}" in XNNPACK_EDGE_OPS for overload in ("default", "Tensor"))
        if edge == "mean.dim" and kind == "mean":
            rank = len(_shape(node.args[0]))
            dims = sorted(d % rank for d in node.args[1]) if rank and len(node.args) > 1 else []
            return not (rank == 4 and dims == [2, 3] and len(node.args) > 2 and bool(node.args[2]))
        if edge == "_softmax.default":
            rank = len(_shape(node.args[0]))
            return rank > 0 and node.args[1] % rank != rank - 1
        return False

    def emit_portable(self, node, kind: str) -> None:
        """A portable kernel: float, on contiguous NCHW tensors, its (de)quantized inputs converted."""
        for a in self.activation_inputs(node):
            self.to_layout(a, node, want_nhwc=False)
        self.nhwc[node] = False
        if self.quantized:
            self.convert_inputs(node)
        n_in = sum(self.numel(a) for a in self.activation_inputs(node))
        n_out = self.numel(node)
        b = self.bytes_per(False)
        self.emit("portable", node, max(n_in, n_out), (n_in + n_out) * b, kind)

    def reshape_into_reshape(self, node) -> bool:
        """A reshape feeding only another reshape of the same precision (XNNPACK merges the two)."""
        if self.edge(node) not in _RESHAPE:
            return False
        int8 = self.runs_int8(node, node)
        through_quantize, user = False, node
        while len(user.users) == 1:  # through the quantize -> dequantize pair between two int8 reshapes
            user = next(iter(user.users))
            if _kind(user) not in _Q | _DQ:
                return (self.edge(user) in _RESHAPE and through_quantize == int8
                        and self.runs_int8(user, user) == int8)
            through_quantize = True
        return False

    def transposes_bmm_operand(self, node) -> bool:
        """A swap of the last two dims whose only user is a float bmm's B operand (XNNPACK fuses it)."""
        if self.edge(node) != "permute_copy.default" or len(node.users) != 1:
            return False
        user = next(iter(node.users))
        rank = len(_shape(node))
        dims = [d % rank for d in node.args[1:3]] if _kind(node) == "transpose" else None
        if _kind(node) == "permute":
            perm = list(node.args[1])
            dims = [i for i, p in enumerate(perm) if p != i]
        return (self.edge(user) == "bmm.default" and len(user.args) > 1 and user.args[1] is node
                and sorted(dims or []) == [rank - 2, rank - 1])

    def is_square(self, node) -> bool:
        """x * x (in int8 through two dequantizes of one quantize)."""
        if len(node.args) < 2 or not all(isinstance(a, torch.fx.Node) for a in node.args[:2]):
            return False
        a, b = node.args[:2]
        return a is b or (_kind(a) in _DQ and _kind(b) in _DQ and a.args[0] is b.args[0])

    def squares_into_mean(self, node) -> bool:
        """A float x * x whose only user is a mean: XNNPACK runs the two as one "Mean Squared"."""
        users = list(node.users)
        return (_kind(node) == "mul" and self.is_square(node) and node not in self.int8_ops
                and len(users) == 1 and _kind(users[0]) == "mean")

    def mean_of_square(self, node) -> bool:
        src = node.args[0]
        return isinstance(src, torch.fx.Node) and self.squares_into_mean(src)


def graph_work(graph: torch.fx.GraphModule, precision: str, name: str = "model",
               input_shape: tuple[int, ...] = ()) -> ModelWork:
    """Work items for a captured graph (``torch.export(...).module()``, int8 after ``convert_pt2e``)."""
    items = _Walker(graph, precision).run()
    if precision == "fp16":  # the fp32 I/O casts around the half body
        n_in = math.prod(input_shape) if input_shape else 0
        items = [WorkItem("convert", "fp16", n_in, 6 * n_in, "(graph input/output)", "to_half"),
                 *items]
    return ModelWork(name, tuple(input_shape), precision, items)
