"""LiteRT (TFLite): litert-torch converts at the static shape; ai-edge-quantizer / PT2E quantize."""
from __future__ import annotations

import re
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

from ...errors import ExportError
from ...quantization import quantize_pt2e
from ..base import Backend, LoweredArtifact, OpSummary, StageProgress, register_backend
from .quantizer import dynamic_int8_recipe, float16_weights_recipe, static_int8_quantizer
from .._native_log import capture_native_stderr
from .runtime import io_quantization, load_model, op_counts

__all__ = ["LiteRTBackend"]

# Ops the LiteRT XNNPACK delegate runs on the CPU (float and int8 kernels); everything else falls back
# to the builtin TFLite kernels. From the delegate's supported-operator list.
_XNNPACK_OPS = {
    "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "DIV", "ELU", "FULLY_CONNECTED", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM",
    "MEAN", "MINIMUM", "MUL", "PAD", "PRELU", "QUANTIZE", "RELU", "RELU6", "RESHAPE", "RESIZE_BILINEAR",
    "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STRIDED_SLICE",
    "SUB", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "SUM",
}


def _convert(model: nn.Module, example: torch.Tensor, quant_config=None) -> bytes:
    import litert_torch

    try:
        converted = litert_torch.convert(model, (example,), quant_config=quant_config)
    except Exception as e:  # noqa: BLE001 - name the op if the converter says which
        text = str(e)
        op = re.search(r"(aten[.:]{1,2}[\w.]+|tfl\.[\w]+|'[\w.]+' op)", text)
        raise ExportError(f"LiteRT cannot convert the model{f' (op {op.group(1)})' if op else ''}: "
                          f"{type(e).__name__}: {text.splitlines()[0] if text else ''}") from None
    return converted.model_content()


def _quantize_tflite(data: bytes, recipe) -> bytes:
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(data, recipe)
    with capture_native_stderr():  # its tqdm bars and absl logs; edgevit shows its own stage
        return bytes(q.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)


@register_backend
class LiteRTBackend(Backend):
    name = "litert"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8-dynamic", "int8")

    def lower(self, model: nn.Module, example: torch.Tensor, precision: str,
              calibration: torch.Tensor | None, progress: StageProgress) -> LoweredArtifact:
        model = model.eval()
        details = {"delegate": "XNNPACK (LiteRT default CPU delegate)"}
        if precision == "int8":
            assert calibration is not None and len(calibration) > 0, "int8 needs calibration inputs"
            from litert_torch.quantize.quant_config import QuantConfig
            quantizer = static_int8_quantizer()
            with progress.stage("calibrating (PT2E observers)", total=len(calibration)) as advance:
                model = quantize_pt2e(model, example, quantizer, calibration, on_batch=advance, fold_quantize=False)
            with progress.stage("converting to .tflite (litert-torch)"):
                data = _convert(model, example, QuantConfig(pt2e_quantizer=quantizer))
            details["quantization"] = "litert-torch PT2EQuantizer, static per-channel int8"
        else:
            with progress.stage("converting to .tflite (litert-torch)"):
                data = _convert(model, example)
            if precision in ("fp16", "int8-dynamic"):
                recipe = float16_weights_recipe() if precision == "fp16" else dynamic_int8_recipe()
                with progress.stage(f"ai-edge-quantizer ({precision})"):
                    data = _quantize_tflite(data, recipe)
                details["quantization"] = ("ai-edge-quantizer float16 weights" if precision == "fp16"
                                           else "ai-edge-quantizer dynamic_wi8_afp32")
        details["io"] = io_quantization(data)
        counts = op_counts(data)
        ops = OpSummary(delegated=Counter({k: v for k, v in counts.items() if k in _XNNPACK_OPS}),
                        non_delegated=Counter({k: v for k, v in counts.items() if k not in _XNNPACK_OPS}),
                        delegate_calls=1)
        return LoweredArtifact(data=data, suffix=self.suffix, ops=ops, details=details)

    def load(self, artifact: bytes | Path, threads: int = 1):
        return load_model(artifact, threads)

    def versions(self) -> dict[str, str]:
        return {name: version(name) for name in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")}
