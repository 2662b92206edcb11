"""Drop layout transposes that cancel in XNNPACK's memory (same .pte semantics, fewer delegate operators).

XNNPACK's ``ChannelsLastTaggedReshapePass`` (executorch ``backends/xnnpack/_passes``) tags each 4-D value
NCHW or NHWC and inserts ``_to_copy(memory_format=...)`` transposes where an operator needs the other
layout; the XNNPACK serializer then gives an NHWC-tagged value the dims (N, H, W, C) and turns every
``permute_copy`` and memory-format ``_to_copy`` into a static transpose. A model that keeps its tokens as
(B, H, W, C) and permutes them to (B, C, H, W) for a depthwise conv (TinyViT's local conv) therefore gets
``permute(0, 3, 1, 2)`` + ``to_channels_last`` before the conv and ``permute(0, 2, 3, 1)`` (+
``to_contiguous``) after it: transposes whose product is the identity on the buffer.

``CancelLayoutTransposesPass`` runs after XNNPACK's own passes and works on the serialized layout:
- a chain of transposes (through the int8 graph's q/dq pairs, all with one set of quantization
  parameters) whose composed buffer permutation is the identity becomes one ``view_copy`` of the chain's
  input to the chain's logical shape, carrying the chain end's NCHW/NHWC tag (a static reshape of the same
  dims: the buffer is already in place);
- a ``view_copy`` of a ``view_copy`` (same quantization parameters) reshapes the first one's input
  directly, which is how such a reshape disappears into the view a model already has.
``cancel_layout_transposes()`` appends it to XNNPACK's pass list for the lowering; ``EDGEVIT_PLAIN_COMPILE=1``
turns it off (``lowering.py``).
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["cancel_layout_transposes", "cancel_transposes"]

_NHWC = "XNN_NHWC_NODE"  # ChannelsLastTaggedReshapePass.XNN_NHWC_NODE
_TO_NHWC = (0, 2, 3, 1)  # executorch backends/xnnpack/utils/utils.py: PERM_NCHW_TO_NHWC
_TO_NCHW = (0, 3, 1, 2)  # PERM_NHWC_TO_NCHW
_MAX_CHAIN = 6


def _name(node: torch.fx.Node) -> str:
    return getattr(node.target, "__name__", "") if node.op == "call_function" else ""


def _is_q(node) -> bool:
    return isinstance(node, torch.fx.Node) and _name(node).startswith("quantized_decomposed.quantize_per_tensor")


def _is_dq(node) -> bool:
    return isinstance(node, torch.fx.Node) and _name(node).startswith("quantized_decomposed.dequantize_per_tensor")


def _is_nhwc(node: torch.fx.Node) -> bool:
    return bool(node.meta.get(_NHWC, False))


def _buffer_perm(node: torch.fx.Node) -> tuple[int, ...] | None:
    """The permutation the serialized XNNPACK transpose applies to the buffer's dims (out[i] = in[p[i]]),
    as executorch's op_permute.py / op_to_copy.py serialize it; None if ``node`` is not a transpose."""
    name = _name(node)
    if name == "aten.permute_copy.default":
        rank = len(node.args[1])
        perm = tuple(d % rank for d in node.args[1])
        if _is_nhwc(node):
            if rank != 4:
                return None
            contiguous = [_TO_NCHW[i] for i in perm]
            perm = tuple(contiguous[i] for i in _TO_NHWC)
        return perm
    if name == "aten._to_copy.default" and set(node.kwargs) == {"memory_format"}:
        if node.kwargs["memory_format"] == torch.channels_last:
            return _TO_NHWC
        if node.kwargs["memory_format"] == torch.contiguous_format:
            return _TO_NCHW
    return None


def _out_qparams(node: torch.fx.Node):
    """Quantization parameters of ``node``'s output (its single quantize user), None for a float value,
    False when the users are mixed (not a chain link)."""
    users = list(node.users)
    if users and all(_is_q(u) for u in users):
        params = {tuple(u.args[1:]) for u in users}
        return params.pop() if len(params) == 1 else False
    return None if not any(_is_q(u) for u in users) else False


def _producer(arg) -> tuple[torch.fx.Node | None, object]:
    """The op whose value ``arg`` carries (through a dq <- q pair) and the pair's parameters."""
    if _is_dq(arg):
        q = arg.args[0]
        if _is_q(q) and tuple(q.args[1:]) == tuple(arg.args[1:]):
            return q.args[0], tuple(arg.args[1:])
        return None, False
    return (arg, None) if isinstance(arg, torch.fx.Node) else (None, False)


def _alive(node: torch.fx.Node, graph: torch.fx.Graph) -> bool:
    return node.graph is graph and not getattr(node, "_erased", False)


def _erase_dead(graph: torch.fx.Graph, nodes) -> None:
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if not _alive(node, graph) or node.users or node.op != "call_function":
            continue
        if _buffer_perm(node) is None and not (_is_q(node) or _is_dq(node)) and \
                _name(node) != "aten.view_copy.default":
            continue
        inputs = list(node.all_input_nodes)
        graph.erase_node(node)
        stack.extend(inputs)


def _cancel_chain(graph: torch.fx.Graph, end: torch.fx.Node) -> bool:
    """Turn ``end`` into a view of its chain's input when the chain's transposes compose to the identity."""
    comp = _buffer_perm(end)
    qparams = _out_qparams(end)
    if comp is None or qparams is False:
        return False
    first = end
    for _ in range(_MAX_CHAIN):
        producer, link_q = _producer(first.args[0])
        if producer is None or link_q != qparams:
            return False
        if comp == tuple(range(len(comp))):
            break
        perm = _buffer_perm(producer)
        if perm is None or len(perm) != len(comp) or _out_qparams(producer) != qparams:
            return False
        comp = tuple(perm[i] for i in comp)
        first = producer
    else:
        return False
    if first is end:  # a lone identity transpose: no-op permutes are not emitted by the passes we follow
        return False
    dead = [end.args[0]]
    end.target = _view_copy()
    end.args = (first.args[0], list(end.meta["val"].shape))
    end.kwargs = {}
    if not _is_nhwc(end):
        end.meta.pop(_NHWC, None)  # op_view_copy.py permutes the shape whenever the key is present
    _erase_dead(graph, dead)
    return True


def _fold_view_of_view(graph: torch.fx.Graph, view: torch.fx.Node) -> bool:
    qparams = _out_qparams(view)
    if qparams is False:
        return False
    inner, link_q = _producer(view.args[0])
    if inner is None or _name(inner) != "aten.view_copy.default" or link_q != qparams:
        return False
    inner_in, in_q = _producer(inner.args[0])
    if inner_in is None or in_q != qparams:
        return False
    dead = [view.args[0]]
    view.args = (inner.args[0], view.args[1])
    _erase_dead(graph, dead)
    return True


def _view_copy():
    from executorch.exir.dialects._ops import ops as exir_ops

    return exir_ops.edge.aten.view_copy.default


def cancel_transposes(graph_module: torch.fx.GraphModule) -> int:
    """Rewrite ``graph_module`` (an XNNPACK partition after XNNPACK's passes) in place; returns the number
    of rewrites."""
    graph = graph_module.graph
    changed = 0
    for node in list(graph.nodes):
        if _alive(node, graph) and _buffer_perm(node) is not None:
            changed += _cancel_chain(graph, node)
    for node in list(graph.nodes):
        if _alive(node, graph) and _name(node) == "aten.view_copy.default":
            changed += _fold_view_of_view(graph, node)
    if changed:
        graph.lint()
        graph_module.recompile()
    return changed


@functools.cache
def _pass_class():
    from executorch.backends.xnnpack._passes.xnnpack_pass import XNNPACKPass
    from executorch.exir.pass_base import PassResult

    class CancelLayoutTransposesPass(XNNPACKPass):
        """XNNPACK pass wrapper of ``cancel_transposes`` (no re-trace: shapes and tags are kept by hand)."""

        def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
            return PassResult(graph_module, bool(cancel_transposes(graph_module)))

    return CancelLayoutTransposesPass


@contextmanager
def cancel_layout_transposes(enabled: bool = True) -> Iterator[None]:
    """Within the block, XNNPACK's default pass list ends with ``CancelLayoutTransposesPass``."""
    from executorch.backends.xnnpack import _passes as xnnpack_passes

    if not enabled:
        yield
        return
    manager = xnnpack_passes.XNNPACKPassManager
    full_init = manager.__init__
    extra = _pass_class()

    def __init__(self, exported_program, passes=None) -> None:
        full_init(self, exported_program, passes)
        if not passes:
            self.passes = [*self.passes, extra]

    manager.__init__ = __init__
    try:
        yield
    finally:
        manager.__init__ = full_init
