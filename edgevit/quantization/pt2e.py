"""The PT2E flow shared by every backend: export -> prepare_pt2e -> calibrate -> convert_pt2e."""
from __future__ import annotations

import copy
import os
from collections.abc import Callable

import torch
from torch import nn
from torch.export import Dim
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import Quantizer

__all__ = ["quantize_pt2e", "plain_compile", "PLAIN_COMPILE_ENV"]

CALIBRATION_BATCH = 16
# Set to 1 to switch off the compile-speed shortcuts (tools/bench_compile_time.py's "plain" variant, and the
# test that checks the shortcuts leave the artifact's bytes unchanged).
PLAIN_COMPILE_ENV = "EDGEVIT_PLAIN_COMPILE"


def plain_compile() -> bool:
    return os.environ.get(PLAIN_COMPILE_ENV, "0") == "1"


def _skip_absent_bn_patterns(quantizer: Quantizer, captured: torch.fx.GraphModule) -> Quantizer:
    """XNNPACK's quantizer (and its subclasses) annotates conv + *training-mode* BatchNorm patterns (for QAT)
    in PTQ too, tracing 12 pattern graphs with torch.export on every annotate: ~4 s of CPU per compile. A
    graph without a batch_norm node cannot match them, so the annotation is the same without them."""
    patterns = getattr(quantizer, "SUPPORTED_PATTERNS", None)
    if patterns is None or any("batch_norm" in str(node.target) for node in captured.graph.nodes
                               if node.op == "call_function"):
        return quantizer
    lean = copy.copy(quantizer)  # shallow: the caller's quantizer keeps its patterns
    lean.SUPPORTED_PATTERNS = [p for p in patterns if not p.name.endswith(("_bn", "_bn_relu"))]
    return lean


def _capture_for_calibration(model: nn.Module, example: torch.Tensor,
                             batch: int = CALIBRATION_BATCH) -> tuple[torch.fx.GraphModule, int]:
    """Capture with a dynamic batch dimension when the model allows it.

    Observers (torchao's HistogramObserver above all) cost about the same per call whatever the batch,
    so calibrating 32 images as 2 batches of 16 is ~10x faster than 32 calls at the deployment shape.
    Models that specialise on the batch size fall back to the static example shape.
    """
    if example.shape[0] == 1:
        batched = example.expand(2, *example.shape[1:]).contiguous()
        try:
            exported = torch.export.export(model, (batched,),
                                           dynamic_shapes=({0: Dim("batch", min=1, max=1024)},))
            return exported.module(), batch
        except Exception:  # noqa: BLE001 - any capture failure: use the static path below
            pass
    return torch.export.export(model, (example,)).module(), example.shape[0]


@torch.no_grad()
def quantize_pt2e(model: nn.Module, example: torch.Tensor, quantizer: Quantizer, calibration: torch.Tensor,
                  on_batch: Callable[[int], None] | None = None, batch: int | None = None) -> torch.fx.GraphModule:
    """Return ``model`` with quantize/dequantize nodes whose scales come from ``calibration`` (N, ...).

    The result accepts ``example``'s static shape (and, when captured with a dynamic batch, others);
    backends re-export it at the deployment shape. ``batch``: images per calibration call (default 16).
    """
    captured, step = _capture_for_calibration(model.eval(), example, batch or CALIBRATION_BATCH)
    if not plain_compile():
        quantizer = _skip_absent_bn_patterns(quantizer, captured)
    prepared = prepare_pt2e(captured, quantizer)
    dynamic = step != example.shape[0]
    for start in range(0, calibration.shape[0], step):
        chunk = calibration[start:start + step]
        if not dynamic and chunk.shape[0] != step:
            break  # a static graph cannot take a short last batch
        prepared(chunk)
        if on_batch:
            on_batch(chunk.shape[0])
    return convert_pt2e(prepared)
