"""The compile-speed shortcuts change how long a compile takes, never what it builds.

``EDGEVIT_PLAIN_COMPILE=1`` switches them off (tools/bench_compile_time.py measures both); the integration
test lowers one micro model both ways and requires the same .pte bytes.
"""
from __future__ import annotations

import pytest
import torch
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
from torch import nn

from edgevit.quantization import pt2e
from edgevit.quantization.pt2e import PLAIN_COMPILE_ENV

_BN_PATTERNS = {"conv_bn", "conv_bn_relu", "conv_transpose_bn", "conv_transpose_bn_relu"}


def _graph_module(*targets) -> torch.fx.GraphModule:
    graph = torch.fx.Graph()
    value = graph.placeholder("x")
    for target in targets:
        value = graph.call_function(target, (value,))
    graph.output(value)
    return torch.fx.GraphModule(torch.nn.Module(), graph)


@pytest.mark.unit
def test_batch_norm_patterns_are_skipped_only_when_the_graph_has_no_batch_norm():
    quantizer = XNNPACKQuantizer()
    lean = pt2e._skip_absent_bn_patterns(quantizer, _graph_module(torch.ops.aten.relu.default))
    assert {p.name for p in lean.SUPPORTED_PATTERNS} == {p.name for p in quantizer.SUPPORTED_PATTERNS} - _BN_PATTERNS
    assert {p.name for p in quantizer.SUPPORTED_PATTERNS} >= _BN_PATTERNS  # the caller's quantizer is untouched
    with_bn = _graph_module(torch.ops.aten._native_batch_norm_legit_no_training.default)
    assert pt2e._skip_absent_bn_patterns(quantizer, with_bn) is quantizer


class _MicroViT(nn.Module):
    """Patchify conv, one attention block with LayerNorm and GELU MLP, pooled linear head: the op kinds the zoo
    lowers (conv, linear, softmax, norms, residual adds), in few enough nodes to lower in seconds."""

    def __init__(self, dim: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(),
                                                                nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj((q @ k.transpose(1, 2) * q.shape[-1] ** -0.5).softmax(-1) @ v)
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))


@pytest.fixture(scope="module")
def micro_pte_both_ways():
    """A micro ViT at 32x32, int8 (bias correction on 8 images: two chunks), lowered with the shortcuts off and
    on; and how many conv+BatchNorm pattern graphs each way traced."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils as annotators

    from edgevit.backends.executorch.lowering import lower_to_pte
    from edgevit.progress import SilentProgress

    model = _MicroViT().eval()
    example = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calibration = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    traced = {"n": 0}
    trace_pattern = annotators._get_aten_graph_module_for_pattern

    def counting(*args, **kwargs):
        traced["n"] += 1
        return trace_pattern(*args, **kwargs)

    built, traces = {}, {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(annotators, "_get_aten_graph_module_for_pattern", counting)
        for variant, flag in (("plain", "1"), ("fast", "0")):
            mp.setenv(PLAIN_COMPILE_ENV, flag)
            traced["n"] = 0
            built[variant] = lower_to_pte(model, example, "int8", calibration, SilentProgress(), None, ".pte")
            traces[variant] = traced["n"]
    return built, traces


@pytest.mark.integration
@pytest.mark.slow
def test_shortcuts_give_the_same_pte_bytes(micro_pte_both_ways):
    built, traces = micro_pte_both_ways
    assert traces["plain"] > 0 and traces["fast"] == 0  # the shortcut was taken (and the plain path was plain)
    assert built["plain"].details["quantization"]["steps_ran"]["bias_corrected_layers"]  # chunked path ran
    assert built["fast"].data == built["plain"].data
    assert built["fast"].ops.as_dict() == built["plain"].ops.as_dict()
    assert built["fast"].details == built["plain"].details
