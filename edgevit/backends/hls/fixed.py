"""Fixed-point formats and the integer operations that move values between them, bit-exact with ap_types.

Python (numpy) and the HLS C++ kernels (``hls/include/edgevit/fixed_math.h``) both work on *raw integers*:
an int64 holding ``value * 2**frac``. Every conversion here is written so that the C++ side gets the same
bits: :func:`quantize` is what assigning a double to ``ap_fixed<W,I,AP_RND,AP_SAT>`` does, :func:`requantize`
is what assigning one ``ap_fixed`` to another with ``AP_RND, AP_SAT`` does (the tests check both against the
real ap_types headers). Rounding is AP_RND: half a step up, towards +inf (``-2.5 -> -2``), which in integers is
one add and an arithmetic shift, the cheapest rounding in hardware.

Saturation hides bugs that wrapping would make loud, so the ``*_checked`` variants also count how many values
saturated and the float range they saw; callers turn a :class:`OverflowReport` into "tensor X overflows
format F" (:meth:`OverflowReport.raise_if_overflow`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import EdgevitError

__all__ = ["FixedFormat", "FixedPointError", "FixedOverflowError", "OverflowReport", "MAX_WIDTH", "quantize",
           "quantize_checked", "requantize", "requantize_checked", "round_shift", "shift_saturate", "saturate",
           "to_float"]

# Raw values live in int64. A width of at most 63 keeps both bounds *and their negation* inside int64, so
# saturation bounds never overflow (in numpy and in the C++ ev_saturate alike).
MAX_WIDTH = 63


class FixedPointError(EdgevitError):
    """A fixed-point format or value that the HLS backend cannot represent."""


class FixedOverflowError(FixedPointError):
    """A tensor whose values do not fit the fixed-point format chosen for it."""


@dataclass(frozen=True)
class FixedFormat:
    """``ap_fixed<width, int_bits>`` (``signed``) or ``ap_ufixed``: ``frac = width - int_bits`` bits after the point.

    ``int_bits`` counts the sign bit for signed formats, as ap_types does; it may be negative or exceed
    ``width`` (then ``frac`` is negative or larger than ``width``), which ap_types allows too.
    """

    width: int
    int_bits: int
    signed: bool = True

    def __post_init__(self):
        if not isinstance(self.width, int | np.integer) or not 1 <= self.width <= MAX_WIDTH:
            raise FixedPointError(f"Fixed-point width {self.width!r} is not supported: raw values are int64, so the "
                                  f"width must be an integer from 1 to {MAX_WIDTH}.")
        if self.signed and self.width < 2:
            raise FixedPointError("A signed fixed-point format needs width >= 2 (one bit is the sign); use "
                                  "signed=False for a 1-bit format.")

    @property
    def frac(self) -> int:
        return self.width - self.int_bits

    @property
    def raw_min(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def lsb(self) -> float:
        """The value of one raw step, ``2**-frac``."""
        return 2.0 ** -self.frac

    @property
    def min(self) -> float:
        return self.raw_min * self.lsb

    @property
    def max(self) -> float:
        return self.raw_max * self.lsb

    def __str__(self) -> str:
        kind = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{kind}<{self.width},{self.int_bits},AP_RND,AP_SAT>"


@dataclass(frozen=True)
class OverflowReport:
    """What a checked conversion saw: how many of ``total`` values saturated and the float range of the input."""

    fmt: FixedFormat
    saturated: int
    total: int
    lo: float
    hi: float

    @property
    def ok(self) -> bool:
        return self.saturated == 0

    def message(self, name: str) -> str:
        return (f"tensor {name} overflows format {self.fmt}: saw [{self.lo:.6g}, {self.hi:.6g}], representable "
                f"[{self.fmt.min:.6g}, {self.fmt.max:.6g}]; {self.saturated} of {self.total} values saturated. "
                f"Give it more integer bits (or recalibrate the ranges).")

    def raise_if_overflow(self, name: str) -> None:
        if not self.ok:
            raise FixedOverflowError(self.message(name))


def _as_int64(raw) -> np.ndarray:
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"raw fixed-point values must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise FixedPointError("Raw fixed-point values above 2**63 - 1 do not fit int64.")
    return arr.astype(np.int64, copy=False)


def saturate(raw, fmt: FixedFormat) -> np.ndarray:
    """Clip raw values to ``fmt``'s range (AP_SAT)."""
    return np.clip(_as_int64(raw), fmt.raw_min, fmt.raw_max)


def round_shift(raw, s) -> np.ndarray:
    """``raw * 2**-s`` rounded half up (AP_RND); ``s <= 0`` shifts left *without* saturation (the caller makes sure
    it fits; use :func:`shift_saturate` otherwise). ``s`` may be an array (one shift per element).

    Written as ``(raw >> s) + bit(s-1)``, which equals ``(raw + 2**(s-1)) >> s`` but cannot overflow int64 for raw
    near the int64 limits; ``s >= 64`` gives 0 for every int64 (|raw| < 2**63 <= 2**(s-1)), as in ev_round_shift.
    """
    raw = _as_int64(raw)
    s = np.asarray(s, dtype=np.int64)
    right = np.clip(s, 1, 63)
    down = (raw >> right) + ((raw >> (right - 1)) & 1)
    down = np.where(s >= 64, 0, down)
    up = raw << np.clip(-s, 0, 63)
    out = np.where(s > 0, down, np.where(s < -63, 0, up))
    return out.astype(np.int64, copy=False)


def shift_saturate(raw, s, fmt: FixedFormat) -> np.ndarray:
    """:func:`round_shift` then :func:`saturate` to ``fmt``, exactly, even where ``raw << -s`` would overflow int64.

    For a left shift by ``k`` the raw value is compared with ``fmt``'s bounds shifted right by ``k`` first, so the
    shift only runs on values whose result fits: infinite-precision semantics with int64 arithmetic.
    """
    raw = _as_int64(raw)
    s = np.asarray(s, dtype=np.int64)
    k = np.clip(-s, 0, 63)
    # raw * 2**k <= raw_max  <=>  raw <= floor(raw_max / 2**k); raw * 2**k >= raw_min <=> raw >= ceil(raw_min / 2**k)
    hi = np.int64(fmt.raw_max) >> k
    lo = -(np.int64(-fmt.raw_min) >> k)
    left = np.where(raw > hi, fmt.raw_max, np.where(raw < lo, fmt.raw_min, np.clip(raw, lo, hi) << k))
    right = saturate(round_shift(raw, np.maximum(s, 0)), fmt)
    return np.where(s > 0, right, left).astype(np.int64, copy=False)


def requantize(raw, from_frac: int, to_fmt: FixedFormat) -> np.ndarray:
    """Raw values at ``from_frac`` fraction bits -> raw in ``to_fmt``: round half up, then saturate.

    Bit-exact with assigning an ``ap_fixed`` of ``from_frac`` fraction bits to ``ap_fixed<W,I,AP_RND,AP_SAT>``
    (and to ``ap_ufixed``: negatives saturate to 0). The C++ twin is ``ev_requantize``.
    """
    return shift_saturate(raw, int(from_frac) - to_fmt.frac, to_fmt)


def requantize_checked(raw, from_frac: int, to_fmt: FixedFormat) -> tuple[np.ndarray, OverflowReport]:
    """:func:`requantize` plus an :class:`OverflowReport` (range in float, from the input at ``from_frac``)."""
    raw = _as_int64(raw)
    out = requantize(raw, from_frac, to_fmt)
    s = int(from_frac) - to_fmt.frac
    # A value saturated iff its exactly rounded result lies outside the range: compare before clipping.
    if s > 0:
        rounded = round_shift(raw, s)
        saturated = int(np.count_nonzero((rounded > to_fmt.raw_max) | (rounded < to_fmt.raw_min)))
    else:
        k = min(-s, 63)
        hi, lo = to_fmt.raw_max >> k, -((-to_fmt.raw_min) >> k)
        saturated = int(np.count_nonzero((raw > hi) | (raw < lo)))
    return out, _report(to_fmt, saturated, to_float(raw, from_frac))


def quantize(x, fmt: FixedFormat) -> np.ndarray:
    """Floats -> raw int64 in ``fmt``: ``floor(x * 2**frac + 0.5)``, saturated (ap_fixed AP_RND + AP_SAT from double).

    ``floor(v) + (v - floor(v) >= 0.5)`` instead of ``floor(v + 0.5)``: for |v| >= 2**52 adding 0.5 rounds in
    float64 and would be one step off; ``v - floor(v)`` is always exact. NaN has no fixed-point value: it raises.
    """
    return _quantize(x, fmt)[0]


def quantize_checked(x, fmt: FixedFormat) -> tuple[np.ndarray, OverflowReport]:
    """:func:`quantize` plus an :class:`OverflowReport` of the values that saturated and the range seen."""
    raw, saturated = _quantize(x, fmt)
    return raw, _report(fmt, saturated, np.asarray(x, dtype=np.float64))


def to_float(raw, frac: int) -> np.ndarray:
    """Raw values at ``frac`` fraction bits as float64 (exact while |raw| < 2**53)."""
    return _as_int64(raw).astype(np.float64) * 2.0 ** -int(frac)


def _quantize(x, fmt: FixedFormat) -> tuple[np.ndarray, int]:
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise FixedPointError(f"Cannot quantize NaN to {fmt}: {int(np.isnan(x).sum())} of {x.size} values are NaN "
                              f"(the float model produced them; fix that first).")
    # ldexp is exact scaling by a power of two; past the float64 range it gives inf, which saturates below (as
    # does inf - inf = nan in the rounding step): neither needs a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.ldexp(x, fmt.frac)
        r = np.floor(v)
        r = r + ((v - r) >= 0.5)
    # raw_max = 2**(W-1) - 1 rounds to 2**(W-1) in float64 for W > 54; r is an integer, so r > raw_max iff
    # r >= raw_max + 1, a power of two and exact in float64 (as is raw_min): exact for every width.
    too_big = r >= float(fmt.raw_max + 1)
    too_small = r < float(fmt.raw_min)
    inside = np.where(too_big | too_small, 0.0, r)
    out = np.where(too_big, fmt.raw_max, np.where(too_small, fmt.raw_min, inside.astype(np.int64)))
    return out.astype(np.int64, copy=False), int(np.count_nonzero(too_big | too_small))


def _report(fmt: FixedFormat, saturated: int, values: np.ndarray) -> OverflowReport:
    if values.size == 0:
        return OverflowReport(fmt, 0, 0, float("nan"), float("nan"))
    return OverflowReport(fmt, saturated, int(values.size), float(values.min()), float(values.max()))
