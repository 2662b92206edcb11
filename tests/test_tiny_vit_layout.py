"""edgevit's XNNPACK layout pass (``backends/executorch/layout_pass.py``) on TinyViT's local-conv pattern:
tokens (B, H, W, C) permuted to NCHW for a depthwise conv and back. XNNPACK's channels-last pass wraps the
conv in a to-NHWC and a to-NCHW transpose that cancel the model's two permutes in memory; the pass must drop
all four and leave the program's output bit-identical."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.integration


class _LocalConvBlock(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        x = x + self.fc1(x)
        x = self.dw(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(B, H * W, C)
        return x + self.fc2(x)


def _lower(exported, cancel: bool, monkeypatch) -> tuple[bytes, list[str]]:
    """The .pte bytes and the op names XNNPACK serialized (its pass manager's output graph, q/dq dropped)."""
    from executorch.backends.xnnpack import _passes as xnnpack_passes
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from edgevit.backends.executorch.layout_pass import cancel_layout_transposes
    from edgevit.backends.executorch.pass_shortcuts import skip_absent_bilinear_patterns
    from edgevit.backends.provenance import shared_node_provenance

    graphs = []
    transform = xnnpack_passes.XNNPACKPassManager.transform

    def recording(self):
        ep = transform(self)
        graphs.append(ep.graph_module)
        return ep

    monkeypatch.setattr(xnnpack_passes.XNNPACKPassManager, "transform", recording)
    # (lowering.py's compile-time shortcuts, which keep the bytes: tests/test_compile_speed.py)
    with cancel_layout_transposes(cancel), shared_node_provenance(), skip_absent_bilinear_patterns():
        edge = to_edge_transform_and_lower(copy.deepcopy(exported), partitioner=[XnnpackPartitioner()],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
    assert len(graphs) == 1
    ops = [n.target.__name__ for n in graphs[0].graph.nodes
           if n.op == "call_function" and "quantize_per" not in n.target.__name__]
    return edge.to_executorch().buffer, ops


def _transposes(ops: list[str]) -> int:
    return sum(name in ("aten.permute_copy.default", "aten._to_copy.default") for name in ops)


def test_cancelling_transposes_are_dropped_and_int8_output_is_unchanged(monkeypatch):
    from edgevit.backends.executorch.quantizer import xnnpack_int8_quantizer
    from edgevit.backends.executorch.runtime import load_program
    from edgevit.quantization import QuantRecipe, quantize_static

    torch.manual_seed(0)
    model = _LocalConvBlock().eval()
    x = torch.randn(1, 6, 6, 16)
    # int8: the transposes sit between q/dq pairs (the float graph's chain is the same without them)
    recipe = QuantRecipe(num_calib=2, bias_correction=False)
    model, _ = quantize_static(model, x, recipe, xnnpack_int8_quantizer(recipe), torch.randn(2, 6, 6, 16))
    exported = torch.export.export(model, (x,))
    plain, plain_ops = _lower(exported, False, monkeypatch)
    passed, passed_ops = _lower(exported, True, monkeypatch)

    assert _transposes(plain_ops) == 4, plain_ops  # permute, to-NHWC, permute (NHWC-tagged), to-NCHW
    assert _transposes(passed_ops) == 0, passed_ops
    # Only the transposes went: one reshape stands in for the conv input's pair (the output pair folded
    # into the model's own reshape to tokens); every other op is kept.
    assert len(passed_ops) == len(plain_ops) - 3
    assert passed_ops.count("aten.view_copy.default") == plain_ops.count("aten.view_copy.default") + 1
    inputs = [torch.randn(1, 6, 6, 16) for _ in range(3)]
    run_plain, run_passed = load_program(plain), load_program(passed)
    for inp in inputs:
        assert torch.equal(run_plain(inp), run_passed(inp))
    assert not torch.equal(run_passed(inputs[0]), run_passed(inputs[1]))  # the inputs reach the output
