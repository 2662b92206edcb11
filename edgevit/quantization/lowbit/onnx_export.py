"""The two exports of a Brevitas model and the runtimes that re-execute them.

- **QONNX** (``brevitas.export.export_qonnx``): float graph with ``Quant`` nodes carrying scale, zero
  point and bit width (opset 20 + the ``qonnx.custom_op.general`` domain) — what FINN and hls4ml read.
  Re-executed with qonnx's own executor after its shape inference and cleanup transforms.
- **QCDQ** (``brevitas.export.export_onnx_qcdq``): standard ONNX (opset 13) QuantizeLinear -> Clip ->
  DequantizeLinear around the quantized layers; runs in any ONNX runtime (here onnxruntime).

Both go through the TorchScript exporter (Brevitas's dynamo QCDQ path cannot export quantized biases).
Exports are returned as bytes, so callers write them atomically.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["QcdqRunner", "QonnxRunner", "export_qcdq_bytes", "export_qonnx_bytes"]


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _export(exporter, qmodel: nn.Module, example: torch.Tensor) -> bytes:
    # Through a private scratch file: the QCDQ exporter returns nothing without an export_path.
    with tempfile.TemporaryDirectory(prefix="edgevit-onnx-") as tmp, _quiet():
        path = os.path.join(tmp, "model.onnx")
        exporter(qmodel, example, export_path=path, dynamo=False, keep_initializers_as_inputs=False)
        with open(path, "rb") as f:
            return f.read()


def export_qonnx_bytes(qmodel: nn.Module, example: torch.Tensor) -> bytes:
    from brevitas.export import export_qonnx
    return _export(export_qonnx, qmodel, example)


def export_qcdq_bytes(qmodel: nn.Module, example: torch.Tensor) -> bytes:
    from brevitas.export import export_onnx_qcdq
    return _export(export_onnx_qcdq, qmodel, example)


class QcdqRunner:
    """onnxruntime on a QCDQ model; ``runner(x)`` -> logits, one static-shape call per sample.

    ``optimize=True`` is how it deploys: onnxruntime fuses QuantizeLinear/DequantizeLinear around
    convs and matmuls into integer kernels, whose requantization rounds differently from the float
    graph (logits move by ~1e-3 of their range). ``optimize=False`` runs the graph exactly as exported,
    which is what checks the export against Brevitas."""

    def __init__(self, data: bytes, threads: int = 1, optimize: bool = True):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.session.run(None, {self.input_name: x[i:i + 1].numpy()})[0] for i in range(len(x))]
        return torch.from_numpy(np.concatenate(outs))


class QonnxRunner:
    """qonnx's reference executor (``Quant`` nodes in numpy, standard nodes one by one in onnxruntime)."""

    def __init__(self, data: bytes):
        import onnx
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.general import GiveUniqueNodeNames
        from qonnx.transformation.infer_shapes import InferShapes

        # Only what execute_onnx needs (shapes, unique node names). qonnx's cleanup_model also folds
        # constants, and its FoldConstants re-infers the whole graph's shapes per folded node: 746 s for
        # TinyViT micro's 694 nodes, against 6 s without, with the same outputs to 3e-8.
        model = ModelWrapper(onnx.load_from_string(data))
        for transform in (InferShapes(), GiveUniqueNodeNames()):
            model = model.transform(transform)
        self.model = model
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import warnings

        from qonnx.core.onnx_exec import execute_onnx
        with warnings.catch_warnings():  # shapes of the export's dynamic batch axis, inferred as 0
            warnings.filterwarnings("ignore", message="Output shapes disagree")
            outs = [execute_onnx(self.model, {self.input_name: x[i:i + 1].numpy()})[self.output_name]
                    for i in range(len(x))]
        return torch.from_numpy(np.concatenate(outs))
