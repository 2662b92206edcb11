"""The two exports of a Brevitas model and the runtimes that re-execute them.

- **QONNX** (``brevitas.export.export_qonnx``): float graph with ``Quant`` nodes carrying scale, zero
  point and bit width (opset 20 + the ``qonnx.custom_op.general`` domain) — what FINN and hls4ml read.
  Re-executed with qonnx's own executor after its shape inference and cleanup transforms.
- **QCDQ** (``brevitas.export.export_onnx_qcdq``): standard ONNX (opset 13) QuantizeLinear -> Clip ->
  DequantizeLinear around the quantized layers; runs in any ONNX runtime (here onnxruntime).

Both go through the TorchScript exporter (Brevitas's dynamo QCDQ path cannot export quantized biases).
Exports are returned as bytes, so callers write them atomically. The artifacts have a static batch of 1
(what FINN/hls4ml take); ``dynamic_batch=True`` exports the same graph with a symbolic batch axis, which
is how the round-trip check runs qonnx's node-by-node executor on many images in one pass (its cost is
per node, ~25 ms each, not per image).
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

__all__ = ["QcdqRunner", "QonnxRunner", "export_qcdq_bytes", "export_qonnx_bytes", "quant_parameters"]


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _export(exporter, qmodel: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    # Through a private scratch file: the QCDQ exporter returns nothing without an export_path.
    kwargs = ({"input_names": ["pixel_values"], "output_names": ["logits"],
               "dynamic_axes": {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}} if dynamic_batch else {})
    with tempfile.TemporaryDirectory(prefix="edgevit-onnx-") as tmp, _quiet():
        path = os.path.join(tmp, "model.onnx")
        exporter(qmodel, example, export_path=path, dynamo=False, keep_initializers_as_inputs=False, **kwargs)
        with open(path, "rb") as f:
            return f.read()


def export_qonnx_bytes(qmodel: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    from brevitas.export import export_qonnx
    return _export(export_qonnx, qmodel, example, dynamic_batch)


def export_qcdq_bytes(qmodel: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    from brevitas.export import export_onnx_qcdq
    return _export(export_onnx_qcdq, qmodel, example, dynamic_batch)


def quant_parameters(data: bytes) -> list[tuple]:
    """Every QONNX ``Quant`` node's (scale, zero point, bit width, attributes), in graph order: two exports
    with equal lists quantize identically (used to vouch for the static artifact by its dynamic-batch twin)."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load_from_string(data)
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant"})
    rows = []
    for n in model.graph.node:
        if n.op_type == "Quant":
            params = tuple(np.asarray(values.get(i, np.nan)).tobytes() for i in n.input[1:4])
            rows.append((*params, tuple(sorted((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute))))
    return rows


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
    """qonnx's reference executor (``Quant`` nodes in numpy, standard nodes one by one in onnxruntime).

    A static batch-1 model runs one image per call; a dynamic-batch export (``dynamic_batch=True``) runs all
    of ``x`` in one call, its batch axis fixed to ``len(x)`` first (qonnx's executor needs concrete shapes)."""

    def __init__(self, data: bytes):
        self.data = data
        self._batched: dict[int, object] = {}
        import onnx

        # Only what execute_onnx needs (shapes, unique node names). qonnx's cleanup_model also folds
        # constants, and its FoldConstants re-infers the whole graph's shapes per folded node: 746 s for
        # TinyViT micro's 694 nodes, against 6 s without, with the same outputs to 3e-8.
        proto = onnx.load_from_string(data)
        self.dynamic = not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")
        self.model = None if self.dynamic else self._wrap(proto)
        self.input_name = proto.graph.input[0].name
        self.output_name = proto.graph.output[0].name

    @staticmethod
    def _wrap(proto):
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.general import GiveUniqueNodeNames
        from qonnx.transformation.infer_shapes import InferShapes
        model = ModelWrapper(proto)
        for transform in (InferShapes(), GiveUniqueNodeNames()):
            model = model.transform(transform)
        return model

    def _model_for(self, batch: int):
        if batch not in self._batched:
            import onnx
            proto = onnx.load_from_string(self.data)
            for v in (*proto.graph.input, *proto.graph.output):
                dim = v.type.tensor_type.shape.dim[0]
                dim.Clear()
                dim.dim_value = batch
            del proto.graph.value_info[:]
            self._batched = {batch: self._wrap(proto)}  # one at a time: a wrapped model holds all shapes
        return self._batched[batch]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import warnings

        from qonnx.core.onnx_exec import execute_onnx
        with warnings.catch_warnings():  # shapes of the export's dynamic batch axis, inferred as 0
            warnings.filterwarnings("ignore", message="Output shapes disagree")
            if self.dynamic:
                return torch.from_numpy(np.asarray(execute_onnx(self._model_for(len(x)), {
                    self.input_name: x.numpy()})[self.output_name]))
            outs = [execute_onnx(self.model, {self.input_name: x[i:i + 1].numpy()})[self.output_name]
                    for i in range(len(x))]
        return torch.from_numpy(np.concatenate(outs))
