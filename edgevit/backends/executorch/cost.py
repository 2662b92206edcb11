"""ExecuTorch's cost replay for ``edgevit estimate``: the graph the compile pipeline lowers, replayed
through XNNPACK's lowering (:mod:`.xnnpack_replay`) into work items, and XNNPACK's ETDump event names mapped
onto the same operator kinds.

The graph is captured as compile captures it (deploy form -> static ``torch.export``; int8 through the
same PT2E quantizer, calibrated on one random image because only the graph's structure matters here),
then decomposed as ``to_edge`` decomposes it before XNNPACK's partitioner sees it.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..cost import CostReplay, ModelWork
from .quantizer import xnnpack_int8_quantizer

__all__ = ["XnnpackCostReplay", "category_of_event"]


def category_of_event(name: str) -> str | None:
    """The category of an XNNPACK ETDump event ("Fully Connected (NC, QS8, QC8W) GEMM #3" -> gemm), "portable"
    for a portable kernel outside the delegate ("native_call_gelu.out"), None for runtime events."""
    if name.startswith("native_call_"):
        return "portable"
    n = re.sub(r"\s*#\d+$", "", name)
    rules = [("Fully Connected", "gemm"), ("Batch Matrix Multiply", "bmm"), ("DWConv", "dwconv"),
             ("Convolution", "igemm"), ("Deconvolution", "igemm"), ("Transpose", "transpose"),
             ("Softmax", "softmax"), ("Convert", "convert"), ("Pooling", "pool"), ("Mean", "reduce"),
             ("Sum", "reduce"), ("Static Reshape", "reshape"), ("Expand Dims", "reshape"),
             ("Copy", "copy"), ("Slice", "copy"), ("Concatenate", "copy"), ("Constant Pad", "copy"),
             ("Resize", "copy"), ("Add", "binary"), ("Subtract", "binary"), ("Multiply", "binary"),
             ("Divide", "binary"), ("Maximum", "binary"), ("Minimum", "binary"),
             ("Squared Difference", "binary"), ("GELU", "math"), ("Sigmoid", "math"), ("Tanh", "math"),
             ("Exp", "math"), ("ELU", "math"), ("Log", "math"), ("Sine", "math"), ("Cosine", "math")]
    for key, category in rules:
        if key in n:
            return category
    if n in ("DELEGATE_CALL", "Method::execute", "Method::init", "Program::load_method", "OPERATOR_CALL"):
        return None
    return "unary"  # Clamp, Reciprocal Square Root, Square, int8 lookup-table ops ("Invalid Unary Op")



# --------------------------------------------------------------------------------------------- capture

def decompose_like_to_edge(exported: torch.export.ExportedProgram) -> torch.fx.GraphModule:
    """The graph XNNPACK's partitioner sees: ExecuTorch's default decompositions (SiLU, SDPA, layer_norm ->
    native_layer_norm, ...) except the ops XnnpackPartitioner asks to keep whole, as
    ``to_edge_transform_and_lower`` runs them."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.program._program import _default_decomposition_table

    exported = exported.run_decompositions({})
    table = _default_decomposition_table()
    for op in XnnpackPartitioner().ops_to_not_decompose(exported)[0]:
        table.pop(op, None)
    return exported.run_decompositions(table).module()


def _capture(model: torch.nn.Module, example: torch.Tensor, precision: str) -> torch.fx.GraphModule:
    """The graph the compile pipeline lowers, decomposed as ``to_edge`` does, with static shapes."""
    model = model.eval()
    if precision == "fp16":
        model, example = model.half(), example.half()
    exported = torch.export.export(model, (example,))
    if precision != "int8":
        return decompose_like_to_edge(exported)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(exported.module(), xnnpack_int8_quantizer())
    with torch.no_grad():
        prepared(torch.randn(example.shape, generator=torch.Generator().manual_seed(0)))
    return decompose_like_to_edge(torch.export.export(convert_pt2e(prepared), (example,)))


class XnnpackCostReplay(CostReplay):
    """XNNPACK's lowering as ExecuTorch performs it (fusions, layouts, int8 patterns)."""

    def __init__(self, backend):
        self.backend = backend  # lowers the microbenchmarks of measure_peaks

    def model_work(self, deployed: nn.Module, example: torch.Tensor, precision: str, name: str) -> ModelWork:
        from .xnnpack_replay import graph_work

        with torch.no_grad():
            graph = _capture(deployed, example, precision)
        return graph_work(graph, precision, name, tuple(example.shape))

    def event_category(self, event_name: str) -> str | None:
        return category_of_event(event_name)

    def measure_peaks(self, threads: int = 1, repeats: int = 10) -> dict:
        from .peaks import measure_host_peaks

        return measure_host_peaks(self.backend, threads, repeats)
