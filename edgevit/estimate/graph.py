"""The work a model gives XNNPACK: one item per operator the delegate will run, with MACs and bytes.

:func:`model_work` captures the graph the compile pipeline lowers (deploy form -> static
``torch.export``; int8 through the same PT2E quantizer, calibrated on one random image because only the
graph's structure matters here) and hands it to :mod:`.lowering`, which replays the XNNPACK lowering.

Kinds are XNNPACK's operator kinds: ``gemm`` (Fully Connected, also 1x1 convolutions), ``igemm`` (other
convolutions), ``dwconv``, ``bmm``, ``binary``, ``unary``, ``math`` (float transcendental: GELU,
sigmoid, ...), ``softmax``, ``reduce``, ``pool``, ``transpose``, ``copy`` (slice, concat, pad, resize),
``reshape`` and ``convert`` (quantize/dequantize); :func:`category_of_event` maps an ETDump event name
onto the same keys.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch

__all__ = ["CATEGORIES", "ModelWork", "WorkItem", "category_of_event", "model_work"]

CATEGORIES = ("gemm", "igemm", "dwconv", "bmm", "binary", "unary", "math", "softmax", "reduce", "pool",
              "transpose", "copy", "reshape", "convert")

@dataclass(frozen=True)
class WorkItem:
    category: str               # XNNPACK operator kind (see CATEGORIES)
    precision: str              # what the kernel computes in: int8, fp16 or fp32
    macs: int                   # multiply-accumulates (elements for data movement / elementwise ops)
    bytes: int                  # activations in + weights + activations out, at the kernel's precision
    stage: str                  # the model stage it belongs to ("stem", "stages.2", "head", ...)
    op: str                     # the aten op(s) it comes from, e.g. "conv2d+relu"
    gemm: tuple[int, int, int, int] | None = None   # (batch, M, N, K) of gemm/igemm/bmm: what tiles act on
    weight_bytes: int = 0       # the GEMM's streamed operand (weights; bmm's B)
    rows: int = 0               # softmax / reductions: the rows they loop over (their cost is per row)


@dataclass
class ModelWork:
    model: str
    input_shape: tuple[int, ...]
    precision: str
    items: list[WorkItem] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(i.category for i in self.items)

    def as_dict(self) -> dict:
        return {"model": self.model, "input_shape": list(self.input_shape), "precision": self.precision,
                "items": [asdict(i) for i in self.items]}


def category_of_event(name: str) -> str | None:
    """The category of an XNNPACK ETDump event ("Fully Connected (NC, QS8, QC8W) GEMM #3" -> gemm); None
    for runtime events and for portable kernels outside the delegate ("native_call_gelu.out")."""
    if name.startswith("native_call_"):
        return None
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

def _capture(model: torch.nn.Module, example: torch.Tensor, precision: str) -> torch.fx.GraphModule:
    """The graph the compile pipeline lowers, as a GraphModule with static shapes on every node."""
    model = model.eval()
    if precision == "fp16":
        return torch.export.export(model.half(), (example.half(),)).module()
    graph = torch.export.export(model, (example,)).module()
    if precision != "int8":
        return graph
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from ..backends.executorch.quantizer import xnnpack_int8_quantizer
    prepared = prepare_pt2e(graph, xnnpack_int8_quantizer())
    with torch.no_grad():
        prepared(torch.randn(example.shape, generator=torch.Generator().manual_seed(0)))
    return convert_pt2e(prepared)


def model_work(model: str, precision: str, input_shape: tuple[int, ...] | None = None,
               num_classes: int | None = None) -> ModelWork:
    """Work items of a zoo model (or ``pkg.module:builder``) at ``precision`` (fp32, fp16, int8)."""
    from ..models import deploy
    from ..models._resolve import resolve_model

    resolved = resolve_model(model, input_shape, num_classes)
    example = torch.zeros(resolved.input_shape)
    with torch.no_grad():
        graph = _capture(deploy(resolved.module), example, precision)
    from .lowering import graph_work
    return graph_work(graph, precision, resolved.name, resolved.input_shape)


