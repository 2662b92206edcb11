"""What a low-bit setting means: ``LowBitSpec.parse("w4a8")`` and the Brevitas quantizers it selects.

Supported: weights 2..8 bits, activations 4..8 bits, integer, symmetric (zero point 0).
- Above 8 bits neither export can carry it: QCDQ ONNX stores integers as int8/uint8
  (QuantizeLinear, opset 13), and sub-8-bit values are int8 plus a Clip to the narrower range.
- 1-bit weights are not an integer quantizer (sign/bipolar is a different Brevitas quantizer and
  QONNX op, BipolarQuant); a 1-bit signed integer holds only {-1, 0}.
- Activations below 4 bits: representable, but per-tensor activations at 2-3 bits leave these
  models guessing (measured in tests/test_qat.py's docstring figures), so we refuse rather than ship it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import EdgevitError

__all__ = ["LowBitSpec", "UnsupportedBitsError", "WEIGHT_BITS", "ACT_BITS", "weight_quantizer", "act_quantizer"]

WEIGHT_BITS = range(2, 9)
ACT_BITS = range(4, 9)
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
                "(int8 containers), 1-bit weights need a bipolar quantizer, and activations below 4 bits "
                "are refused because these models lose most of their accuracy there.")
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
    """Per-tensor, signed, symmetric; scale initialised from a high percentile on calibration data,
    then a learned parameter during QAT (a power of two, via a rounded log2, with ``po2``)."""
    from brevitas.quant import Int8ActPerTensorFloat
    from brevitas.quant.fixed_point import Int8ActPerTensorFixedPoint
    base = Int8ActPerTensorFixedPoint if po2 else Int8ActPerTensorFloat
    return base.let(bit_width=bits)
