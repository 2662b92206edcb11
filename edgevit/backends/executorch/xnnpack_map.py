"""Which model module each XNNPACK operator in an ETDump came from.

XNNPACK's profiler names its events by operator ("Fully Connected (NC, QS8, QC8W) GEMM #12") and
ExecuTorch records no debug handle for them (the ETRecord's delegate map is empty for XNNPACK). The
.pte does keep, per XNNPACK node, the debug handle of the graph node it was made from, and the ETRecord
maps debug handles to ``nn_module_stack``. What is left is to pair runtime operators with serialized
nodes: XNNPACK creates one operator per node in node order, except that it fuses some (a squared
difference into "Mean Squared", a 1x1 convolution becomes "Fully Connected"). So the two sequences are
aligned on a coarse operator kind (an LCS, as ``difflib`` does); the gaps between matched runs are paired
by position when their lengths agree, with or without the convert/transpose/reshape nodes XNNPACK fuses
(int8 GELU runs as one "Invalid Unary Op" made of convert -> GELU -> convert); an operator left unpaired,
and the layout transposes ExecuTorch inserts (handle 65535), take the handle of the operator before them.
"""
from __future__ import annotations

import importlib.resources
import json
import re
import tempfile
from difflib import SequenceMatcher
from pathlib import Path

__all__ = ["xnnpack_delegate_nodes", "align_operators", "operator_kind", "node_kind", "NO_HANDLE"]

NO_HANDLE = 65535  # what ExecuTorch's XNNPACK preprocess writes for nodes its own passes inserted

# Coarse kinds shared by serialized node types and runtime operator names.
_SYNONYMS = {
    "conv": "gemm", "depthwiseconv": "gemm", "convtranspose": "gemm", "fullyconnected": "gemm",
    "convolution": "gemm", "deconvolution": "gemm",
    "avgpooling": "avgpool", "averagepooling": "avgpool",
    "globalavgpooling": "mean", "meansquared": "mean", "div": "divide",
    "concatenate": "copy",
}


def _kind(text: str) -> str:
    text = re.sub(r"[^a-z]", "", text.lower().replace("static", ""))
    return _SYNONYMS.get(text, text)


def operator_kind(event_name: str) -> str:
    """'Fully Connected (NC, F32) GEMM #3' -> 'gemm'."""
    return _kind(event_name.split(" (")[0].split(" #")[0])


def node_kind(xnode_type: str) -> str:
    """'XNNDepthwiseConv2d' -> 'gemm', 'XNNConcatenate3' -> 'copy'."""
    return _kind(re.sub(r"(\d+[dD]?|\d)$", "", xnode_type.removeprefix("XNN")))


def _decompile(flatbuffer: bytes) -> dict:
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    from .._native_log import capture_native_stderr

    schema = importlib.resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs")
    with tempfile.TemporaryDirectory() as tmp, capture_native_stderr():
        (Path(tmp) / "graph.bin").write_bytes(flatbuffer)
        _flatc_decompile(tmp, str(schema), str(Path(tmp) / "graph.bin"))
        text = (Path(tmp) / "graph.json").read_bytes()
    # Clamp bounds are +-inf, which flatc writes as bare words JSON does not have.
    return json.loads(re.sub(rb":\s*[-+]?(inf|nan)\b", b": null", text))


def xnnpack_delegate_nodes(pte: bytes) -> list[list[tuple[str, int]]]:
    """Per XNNPACK delegate of the first method, in plan order: [(node kind, debug handle), ...]."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(pte).program
    result = []
    for delegate in program.execution_plan[0].delegates:
        if delegate.id != "XnnpackBackend":
            continue
        blob = program.backend_delegate_data[delegate.processed.index].data
        header = XNNHeader.from_bytes(blob[:XNNHeader.EXPECTED_LENGTH])
        start = header.flatbuffer_offset
        graph = _decompile(bytes(blob[start:start + header.flatbuffer_size]))
        result.append([(node_kind(n["xnode_union_type"]), int(n.get("debug_handle", NO_HANDLE)))
                       for n in graph.get("xnodes", [])])
    return result


_GLUE = {"convert", "transpose", "reshape", "copy"}  # kinds XNNPACK folds into a neighbour


def _pair_gap(ops: list[str], kinds: list[str], a: range, b: range) -> list[tuple[int, int]]:
    """Pair the unmatched operators between two matched runs with the unmatched nodes there, by position,
    when the counts agree (XNNPACK names int8 GELU "Invalid Unary Op"), also after dropping the glue
    nodes it fuses away (convert -> GELU -> convert becomes that one operator)."""
    if len(a) == len(b):
        return list(zip(a, b))
    a_core = [i for i in a if ops[i] not in _GLUE]
    b_core = [j for j in b if kinds[j] not in _GLUE]
    return list(zip(a_core, b_core)) if len(a_core) == len(b_core) else []


def align_operators(operator_names: list[str], nodes: list[tuple[str, int]]) -> list[int | None]:
    """A debug handle per runtime operator (in execution order); None before any handle is known."""
    ops = [operator_kind(n) for n in operator_names]
    kinds = [k for k, _ in nodes]
    pairs: list[tuple[int, int]] = []
    a_end = b_end = 0
    for block in SequenceMatcher(None, ops, kinds, autojunk=False).get_matching_blocks():
        pairs += _pair_gap(ops, kinds, range(a_end, block.a), range(b_end, block.b))
        pairs += [(block.a + k, block.b + k) for k in range(block.size)]
        a_end, b_end = block.a + block.size, block.b + block.size
    paired = {a: nodes[b][1] for a, b in pairs if nodes[b][1] != NO_HANDLE}
    handles, last = [], None
    for i in range(len(ops)):
        last = paired.get(i, last)
        handles.append(last)
    return handles
