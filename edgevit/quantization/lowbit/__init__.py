"""Low-bit integer quantization with Brevitas (W8A8, W6A6, W4A8; power-of-two scales on request),
exported as QONNX (FINN, hls4ml) and QCDQ ONNX (any ONNX runtime).

    spec = LowBitSpec.parse("w4a8")
    qmodel = quantize_lowbit(deploy(model), spec, po2=False)   # Brevitas layers, float elsewhere
    calibrate(qmodel, images)                                  # PTQ; then QAT with train_classifier
    export_qonnx_bytes(qmodel, example), export_qcdq_bytes(qmodel, example)

``lowbit_pipeline`` runs all of it on tensors; ``edgevit.compile.qat`` on folders (``edgevit qat``).
"""
import warnings as _warnings

from .onnx_export import QcdqRunner, QonnxRunner, export_qcdq_bytes, export_qonnx_bytes
from .pipeline import LowBitResult, QatSettings, lowbit_pipeline, roundtrip_tolerance
from .quantize import calibrate, layer_settings, quantize_lowbit, quantized_layers
from .spec import ACT_BITS, WEIGHT_BITS, LowBitSpec, UnsupportedBitsError

__all__ = ["ACT_BITS", "WEIGHT_BITS", "LowBitResult", "LowBitSpec", "QatSettings", "QcdqRunner", "QonnxRunner",
           "UnsupportedBitsError", "calibrate", "export_qcdq_bytes", "export_qonnx_bytes", "layer_settings",
           "lowbit_pipeline", "quantize_lowbit", "quantized_layers", "roundtrip_tolerance"]

# Brevitas announces at import that an optional CUDA kernel package is missing; nothing we use needs it.
_warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")
