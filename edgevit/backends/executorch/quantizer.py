"""Which patterns ExecuTorch's XNNPACK kernels accept quantized (backend-specific quantization rules)."""
from __future__ import annotations

from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                     get_symmetric_quantization_config)

__all__ = ["xnnpack_int8_quantizer"]


def xnnpack_int8_quantizer() -> XNNPACKQuantizer:
    """Static int8: per-channel symmetric weights, per-tensor affine activations (XNNPACK's qs8/qu8)."""
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
