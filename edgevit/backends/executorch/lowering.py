"""ExecuTorch + XNNPACK lowering: torch.export -> (PT2E int8) -> to_edge_transform_and_lower -> .pte.

Imported only when something is lowered: the backend class (``backend.py``) stays cheap to import.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from ..._memory import release_freed_memory
from ...progress import StageProgress
from ...quantization import QuantRecipe, quantize_static
from ...quantization.pt2e import plain_compile
from ..base import LoweredArtifact, OpSummary
from ..provenance import shared_node_provenance
from .layout_pass import cancel_layout_transposes
from .pass_shortcuts import skip_absent_bilinear_patterns
from .quantizer import xnnpack_int8_quantizer

__all__ = ["lower_to_pte", "summarize_ops"]


class _CastIO(nn.Module):
    """Keep float32 inputs/outputs for an fp16 body, so callers never see half tensors."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.half()).float()


def _op_name(target) -> str:
    name = getattr(target, "__name__", str(target))
    return name.replace(".default", "")


def summarize_ops(edge_program) -> OpSummary:
    """Count ops inside XNNPACK blobs and ops left to portable kernels in a lowered edge program."""
    summary = OpSummary()
    graph_module = edge_program.graph_module
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or _op_name(node.target) == "getitem":
            continue
        if node.target is torch.ops.higher_order.executorch_call_delegate:
            summary.delegate_calls += 1
            lowered = getattr(graph_module, node.args[0].target)
            summary.delegated.update(_op_name(n.target) for n in lowered.original_module.graph.nodes
                                     if n.op == "call_function" and _op_name(n.target) != "getitem")
        else:
            summary.non_delegated[_op_name(node.target)] += 1
    return summary


def _etrecord_bytes(program) -> bytes:
    """The ETRecord without the pre-lowering exported program: profiles need only the edge program's debug
    handles and module stacks, and its fp32 weights made the file 5x the .pte (76 vs 12 MB for L1 int8)."""
    etrecord = program.get_etrecord()
    etrecord.exported_program = etrecord.export_graph_id = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "etrecord.bin"
        etrecord.save(str(path))
        return path.read_bytes()


def lower_to_pte(model: nn.Module, example: torch.Tensor, precision: str, calibration: torch.Tensor | None,
                 progress: StageProgress, recipe: QuantRecipe | None, suffix: str) -> LoweredArtifact:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    model.eval()  # (not `model = model.eval()`: a quantized GraphModule's eval() returns None)
    if precision == "int8":
        assert calibration is not None and len(calibration) > 0, "int8 needs calibration inputs"
        recipe = recipe or QuantRecipe()
        with progress.stage(f"calibrating (PT2E, {recipe.observer} observers)", total=len(calibration)) as advance:
            model, steps = quantize_static(model, example, recipe, xnnpack_int8_quantizer(recipe), calibration,
                                           on_batch=advance)
        quantization = {**recipe.describe(), "steps_ran": steps}
        if not plain_compile():
            release_freed_memory()  # calibration's whole-set activations: lowering's peak would stack on them
    elif precision == "fp16":
        model = _CastIO(model)
    with progress.stage("torch.export"):
        exported = torch.export.export(model, (example,))
    shortcuts = not plain_compile()
    with progress.stage("lowering to XNNPACK"), shared_node_provenance(shortcuts), \
            skip_absent_bilinear_patterns(shortcuts), cancel_layout_transposes(shortcuts):
        # The ETRecord ties profile events (debug handles) back to model modules: `edgevit profile`.
        # No EXIR IR-validity verifier: it re-checks every op after each of XNNPACK's ~17 passes, and the
        # lowered bytes are the same without it; XNNPACK's own config turns it off too
        # (executorch/backends/xnnpack/utils/configs.py: get_xnnpack_edge_compile_config).
        config = None if plain_compile() else EdgeCompileConfig(_check_ir_validity=False)
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()], compile_config=config,
                                           generate_etrecord=True)
        ops = summarize_ops(edge.exported_program())
    with progress.stage("serializing .pte"), shared_node_provenance(shortcuts):
        program = edge.to_executorch()
        data = program.buffer
        etrecord = _etrecord_bytes(program)
        plan = program.executorch_program.execution_plan[0]
        # Memory the runtime plans for activations outside the delegate (bytes per arena).
        planned = [int(b) for b in plan.non_const_buffer_sizes]
    details = {"delegate": "XnnpackBackend", "planned_memory_bytes": planned,
               "quantization": quantization if precision == "int8" else
               {"fp16": "half-precision graph, float32 I/O"}.get(precision)}
    return LoweredArtifact(data=data, suffix=suffix, ops=ops, details=details,
                           sidecars={"etrecord.bin": etrecord})

