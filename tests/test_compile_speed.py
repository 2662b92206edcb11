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
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d
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

    searched = {"n": 0}
    bilinear_patterns = bilinear_2d.get_graphs_dict

    def counting_bilinear():
        searched["n"] += 1
        return bilinear_patterns()

    built, traces = {}, {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(annotators, "_get_aten_graph_module_for_pattern", counting)
        mp.setattr(bilinear_2d, "get_graphs_dict", counting_bilinear)
        for variant, flag in (("plain", "1"), ("fast", "0")):
            mp.setenv(PLAIN_COMPILE_ENV, flag)
            traced["n"] = searched["n"] = 0
            built[variant] = lower_to_pte(model, example, "int8", calibration, SilentProgress(), None, ".pte")
            traces[variant] = traced["n"], searched["n"]
    return built, traces


@pytest.mark.integration
@pytest.mark.slow
def test_shortcuts_give_the_same_pte_bytes(micro_pte_both_ways):
    built, traces = micro_pte_both_ways
    # the shortcuts were taken (BatchNorm patterns not traced, bilinear patterns not searched), and plain was plain
    assert min(traces["plain"]) > 0 and traces["fast"] == (0, 0)
    assert built["plain"].details["quantization"]["steps_ran"]["bias_corrected_layers"]  # chunked path ran
    assert built["fast"].data == built["plain"].data
    assert built["fast"].ops.as_dict() == built["plain"].ops.as_dict()
    assert built["fast"].details == built["plain"].details


@pytest.mark.unit
def test_shared_provenance_reads_the_same_and_the_constructor_is_put_back():
    """NodeSources built inside ``shared_node_provenance`` equal deep-copied ones link for link, their list is
    their own (a pass appending to the node's list leaves them alone), and nesting restores torch's constructor."""
    from torch.fx import traceback as fx_traceback

    from edgevit.backends.provenance import shared_node_provenance

    NodeSource, Action = fx_traceback.NodeSource, fx_traceback.NodeSourceAction
    original = NodeSource.__init__
    node = next(n for n in _graph_module(torch.ops.aten.relu.default).graph.nodes if n.op == "call_function")
    node.meta["from_node"] = [NodeSource(None, "first", Action.CREATE)]
    node.meta["from_node"][0].from_node = [NodeSource(None, "earlier", Action.REPLACE)]
    copied = NodeSource(node, "p", Action.CREATE)
    with shared_node_provenance(), shared_node_provenance():
        shared = NodeSource(node, "p", Action.CREATE)
    assert NodeSource.__init__ is original
    assert shared.to_dict() == copied.to_dict() and shared.from_node[0] is node.meta["from_node"][0]
    node.meta["from_node"].append(NodeSource(None, "later", Action.CREATE))
    assert len(shared.from_node) == 1 == len(copied.from_node)
    with shared_node_provenance(enabled=False):
        assert NodeSource.__init__ is original


@pytest.mark.integration
def test_a_graph_with_bilinear_upsampling_takes_the_full_pass_and_the_same_bytes(monkeypatch):
    """The bilinear-pattern skip applies only to graphs without the op: with it, the pass searches as before."""
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d

    from edgevit.backends.executorch.lowering import lower_to_pte
    from edgevit.progress import SilentProgress

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Upsample(scale_factor=2, mode="bilinear")).eval()
    example = torch.randn(1, 3, 8, 8)
    searched, bilinear_patterns = {"n": 0}, bilinear_2d.get_graphs_dict

    def counting_bilinear():
        searched["n"] += 1
        return bilinear_patterns()

    monkeypatch.setattr(bilinear_2d, "get_graphs_dict", counting_bilinear)
    built = {}
    for variant, flag in (("plain", "1"), ("fast", "0")):
        monkeypatch.setenv(PLAIN_COMPILE_ENV, flag)
        searched["n"] = 0
        built[variant] = lower_to_pte(model, example, "fp32", None, SilentProgress(), None, ".pte")
        assert searched["n"] == 1, variant
    assert built["fast"].data == built["plain"].data
    assert built["fast"].ops.as_dict() == built["plain"].ops.as_dict()
    assert built["fast"].ops.non_delegated == {} and built["fast"].ops.delegate_calls == 1



_LARGE_BLOCK_PROBE = """
import sys
import torch
from pathlib import Path
from edgevit._memory import _MALLOPT, large_blocks_mapped

def resident_mb():
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

if _MALLOPT is None:
    print("SKIP")
else:
    torch.ones(30 << 18).sum()  # a freed 30 MB mapping raises glibc's own threshold past the block below
    with large_blocks_mapped(threshold_bytes=1 << 20) if sys.argv[1] == "mapped" else torch.no_grad():
        block = torch.ones(24 << 18)  # 24 MB, touched
        held = resident_mb()
        del block
        print(held - resident_mb())
"""


@pytest.mark.unit
def test_large_blocks_are_handed_back_to_the_os_when_freed():
    """In fresh processes (a long-lived one reuses its free heap blocks first, whatever the threshold): a 24 MB
    tensor freed outside the context stays resident as heap; inside, it leaves the process when freed."""
    import subprocess
    import sys
    released = {}
    for way in ("heap", "mapped"):  # each in its own process: the first would leave a free block the other reuses
        out = subprocess.run([sys.executable, "-c", _LARGE_BLOCK_PROBE, way], capture_output=True, text=True,
                             check=True).stdout.strip()
        if out == "SKIP":
            pytest.skip("not glibc: mallopt is absent")
        released[way] = float(out)
    assert released["heap"] < 4  # glibc's default: kept as heap
    assert released["mapped"] > 20  # mapped: handed back the moment it is freed
