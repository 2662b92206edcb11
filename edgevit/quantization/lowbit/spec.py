"""What a low-bit setting means: ``LowBitSpec.parse("w4a8")`` and the Brevitas quantizers it selects.

Supported: weights and activations 2..8 bits, integer, symmetric (zero point 0) — what both Brevitas's
integer quantizers and both exports represent:
- Above 8 bits the QCDQ export cannot carry the integers: it stores them as int8/uint8
  (QuantizeLinear, opset 13); a sub-8-bit value is int8 plus a Clip to the narrower range.
- 1 bit is not an integer quantizer: a signed 1-bit integer holds only {-1, 0}; binary networks use a
  different Brevitas quantizer and QONNX op (BipolarQuant).
Low activation widths are allowed but cost accuracy; measured on efficientformer_micro (digits, fp32
96.4 %), PTQ then 2 QAT epochs: w8a3 70.9 -> 96.2 %, w8a2 11.8 -> 78.0 %, w4a4 94.7 -> 96.0 %.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import EdgevitError

__all__ = ["ACT_BITS", "WEIGHT_BITS", "LowBitSpec", "UnsupportedBitsError", "act_quantizer", "weight_quantizer"]

WEIGHT_BITS = range(2, 9)
ACT_BITS = range(2, 9)
_PATTERN = re.compile(r"^w(\d+)a(\d+)$", re.IGNORECASE)


class UnsupportedBitsError(EdgevitError):
    """A bit-width setting Brevitas or the QONNX/QCDQ exports cannot do."""


def _supported() -> str:
    return (f"weights {WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1} bits and activations "
            f"{ACT_BITS.start}..{ACT_BITS.stop - 1} bits, written wNaM (for example w8a8, w6a6, w4a8)")


@dataclass(frozen=True)
class LowBitSpec:
    weight_bits: int
    act_bits: int

    @classmethod
    def parse(cls, text: str) -> LowBitSpec:
        match = _PATTERN.match(text.strip())
        if not match:
            raise UnsupportedBitsError(f"'{text}' is not a bit-width setting; edgevit's low-bit path takes "
                                       f"{_supported()}.")
        spec = cls(int(match.group(1)), int(match.group(2)))
        if spec.weight_bits not in WEIGHT_BITS or spec.act_bits not in ACT_BITS:
            raise UnsupportedBitsError(
                f"'{text}' asks for {spec.weight_bits}-bit weights and {spec.act_bits}-bit activations; "
                f"supported are {_supported()}. Above 8 bits the QCDQ export cannot carry the integers "
                "(int8 containers); 1 bit is binary, a different quantizer (bipolar), not an integer one.")
        return spec

    @property
    def name(self) -> str:
        return f"w{self.weight_bits}a{self.act_bits}"


def weight_quantizer(bits: int, po2: bool):
    """Per-output-channel, symmetric, narrow range (-(2^(b-1)-1)..2^(b-1)-1), scale from the weights' max |w|."""
    from brevitas.quant import Int8WeightPerChannelFloat
    from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint
    base = Int8WeightPerChannelFixedPoint if po2 else Int8WeightPerChannelFloat
    return base.let(bit_width=bits)


def act_quantizer(bits: int, po2: bool):
    """Per-tensor, signed, symmetric; scale initialised on calibration data at the clipping threshold that
    minimises the mean squared quantization error (Brevitas's ``*MSE`` quantizers), then a learned parameter
    during QAT (a power of two, via a rounded log2, with ``po2``).

    MSE rather than Brevitas's default 99.999th percentile: at 6 bits the percentile's range spends the few
    levels on rare outliers. Measured on Fashion-MNIST (PTQ on 32 images, all 10,000 test images, points vs
    fp32), W6A6 percentile -> MSE: shvit_micro -6.67 -> -3.38, efficientvit_mit_micro -1.89 -> -0.55,
    mobilenetv4_hybrid_micro -0.99 -> -0.67. (The same clipping-vs-rounding trade-off as Banner et al.'s
    ACIQ, arXiv:1810.05723, found by search instead of a closed form.)"""
    from brevitas.quant import Int8ActPerTensorFloatMSE
    from brevitas.quant.fixed_point import Int8ActPerTensorFixedPointMSE
    base = Int8ActPerTensorFixedPointMSE if po2 else Int8ActPerTensorFloatMSE
    return base.let(bit_width=bits)
