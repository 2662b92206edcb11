"""The non-linear functions of the fixed-point kernels (exp, 1/x, 1/sqrt(x), GELU), on int64 raw values.

Each function here has a C++ twin in ``hls/include/edgevit/fixed_math.h`` (``ev_exp_neg``, ``ev_reciprocal``,
``ev_rsqrt``, ``ev_gelu``) doing the same integer operations in the same order, so the two agree bit for bit
(tests/test_hls_math.py runs both on >= 100k inputs each). The lookup tables are computed here, once, and
:func:`emit_tables_header` writes them as ``edgevit_tables.h`` into every project and test build: the C++ never
carries a copy that could drift.

Why this shape: HLS wants fixed loop bounds, no recursion and no libm at run time, so every function is a
normalisation (leading-one position, a fixed 6-step binary search), a small table and a few multiply-adds.
Every int64 product has a comment saying why it fits in 63 bits.

Measured error bounds (tests/test_hls_math.py asserts them, against float64):
- exp_neg: <= 2.06 LSB of Q16 (3.1e-5 absolute; exhaustive over (-12, 0] at in_frac 16, sampled at 0..40), from
  the N = 64 linear interpolation (<= 1.9 LSB before the final shift) plus the Q16 roundings; exp(0) = 1.0 exactly.
- reciprocal, rsqrt: <= 0.5 LSB + 2**-28 relative of the exact result wherever it does not saturate, for any
  positive int64 input (1 LSB .. 2**63 - 1) and in_frac/out_frac in [0, 40]: the Q30 Newton result has ~29
  correct bits (measured 2**-28.9 relative at worst), so outputs below 2**27 raw are within 0.51 LSB.
- gelu: <= 2.14e-4 (0.87 * 2**-12) absolute at frac = 12 (exhaustive on [-10, 10)), <= 1.05e-4 for frac >= 16
  (table step 1/32 on [0, 8], 257 entries: interpolation error <= 0.1 * step**2 = 9.7e-5 near 0, plus half an LSB
  of output rounding).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..._io import atomic_write_text
from .fixed import FixedFormat, FixedPointError, round_shift, shift_saturate

__all__ = ["EXP_FRAC", "LOG2E_RAW", "EXP_XMIN", "P2_BITS", "NEWTON_FRAC", "RECIP_SEED_BITS", "RSQRT_SEED_BITS",
           "GELU_STEP_BITS", "GELU_RANGE", "GELU_TABLE_FRAC", "MAX_FRAC", "P2_TABLE", "RECIP_SEED", "RSQRT_SEED",
           "GELU_DELTA", "exp_neg", "reciprocal", "rsqrt", "gelu", "msb", "emit_tables_header",
           "write_tables_header", "TABLES_HEADER"]

TABLES_HEADER = "edgevit_tables.h"
MAX_FRAC = 40            # the largest in_frac/out_frac/frac these accept: the 63-bit product bounds assume it

# exp: 2**y with y = x*log2(e) in Q16; 2**frac(y) from a 65-entry table over [0, 1], linear interpolation.
EXP_FRAC = 16
LOG2E_RAW = round(math.log2(math.e) * (1 << 16))   # 94548, Q16
EXP_XMIN = 32            # x is clamped to >= -32: exp(-32) = 1.3e-14 is 0 at Q16 anyway
P2_BITS = 6              # N = 64 intervals

# 1/x and 1/sqrt(x): seed from a table indexed by the leading mantissa bits, two Newton steps in Q30.
NEWTON_FRAC = 30
RECIP_SEED_BITS = 7      # 128 seeds over m in [1, 2): seed error <= 2**-8, after two steps <= 2**-32
RSQRT_SEED_BITS = 7      # 128 seeds over [1, 2) + 128 over [2, 4): seed error <= 2**-9, after two <= 2**-33

# GELU: delta(a) = a * Phi(-a) tabulated on [0, 8) with step 2**-5 (257 entries, the last is delta(8) = 0).
GELU_STEP_BITS = 5
GELU_RANGE = 8
GELU_TABLE_FRAC = 30


def _tables() -> dict[str, list[int]]:
    one = 1 << NEWTON_FRAC
    p2 = [round(2.0 ** (i / (1 << P2_BITS)) * (1 << EXP_FRAC)) for i in range((1 << P2_BITS) + 1)]
    # A seed for an interval [a, b) minimises the worst relative error at both ends: 2/(a+b) for 1/m,
    # 2/(sqrt(a)+sqrt(b)) for 1/sqrt(m). Both are <= 1, so every seed (and every Newton iterate) is <= 2**30.
    n = 1 << RECIP_SEED_BITS
    recip = [round(one * 2 / ((1 + i / n) + (1 + (i + 1) / n))) for i in range(n)]
    n = 1 << RSQRT_SEED_BITS
    bounds = [(1 + i / n, 1 + (i + 1) / n) for i in range(n)] + [(2 + i / (n / 2), 2 + (i + 1) / (n / 2))
                                                                  for i in range(n)]
    rsq = [round(one * 2 / (math.sqrt(a) + math.sqrt(b))) for a, b in bounds]
    step = 2.0 ** -GELU_STEP_BITS
    delta = [round(a * 0.5 * math.erfc(a / math.sqrt(2)) * (1 << GELU_TABLE_FRAC))
             for a in (i * step for i in range(GELU_RANGE * (1 << GELU_STEP_BITS) + 1))]
    return {"P2_TABLE": p2, "RECIP_SEED": recip, "RSQRT_SEED": rsq, "GELU_DELTA": delta}


_TABLES = _tables()
P2_TABLE = np.array(_TABLES["P2_TABLE"], dtype=np.int64)
RECIP_SEED = np.array(_TABLES["RECIP_SEED"], dtype=np.int64)
RSQRT_SEED = np.array(_TABLES["RSQRT_SEED"], dtype=np.int64)
GELU_DELTA = np.array(_TABLES["GELU_DELTA"], dtype=np.int64)
assert GELU_DELTA[-1] == 0 and P2_TABLE[0] == 1 << EXP_FRAC and P2_TABLE[-1] == 2 << EXP_FRAC


def _check_frac(name: str, frac: int) -> int:
    if not 0 <= int(frac) <= MAX_FRAC:
        raise FixedPointError(f"{name}={frac} is outside [0, {MAX_FRAC}]: the fixed-point functions prove their int64 "
                              f"products fit only up to {MAX_FRAC} fraction bits; requantize first.")
    return int(frac)


def _raw(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"raw fixed-point values must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def msb(x) -> np.ndarray:
    """floor(log2(x)) for x > 0 (0 for x <= 0): a 6-step binary search, exact on all of int64 (no float64)."""
    v = np.maximum(_raw(x), 1)
    e = np.zeros(v.shape, dtype=np.int64)
    for sh in (32, 16, 8, 4, 2, 1):
        hit = (v >> sh) != 0
        e += np.where(hit, sh, 0)
        v = np.where(hit, v >> sh, v)
    return e


def exp_neg(x_raw, in_frac: int) -> np.ndarray:
    """exp(x) for x <= 0 (softmax after subtracting the max), raw at EXP_FRAC = 16 bits. Positive x is taken as 0.

    y = x * log2(e) in Q16; 2**y = 2**k * 2**f with k = floor(y), f in [0, 1) from P2_TABLE with linear
    interpolation; then round-shift right by -k. exp(0) = P2_TABLE[0] = 1.0 exactly.
    """
    in_frac = _check_frac("in_frac", in_frac)
    x = np.clip(_raw(x_raw), -(EXP_XMIN << in_frac), 0)
    # |x| <= 32 * 2**in_frac and LOG2E_RAW < 2**17: |product| < 2**(22 + in_frac) <= 2**62.
    y = round_shift(x * LOG2E_RAW, in_frac)                  # Q16, in [-47 * 2**16, 0]
    k = y >> EXP_FRAC                                       # floor: in [-47, 0]
    f = y & ((1 << EXP_FRAC) - 1)
    rb = EXP_FRAC - P2_BITS
    i, r = f >> rb, f & ((1 << rb) - 1)
    lo, hi = P2_TABLE[i], P2_TABLE[i + 1]
    # (hi - lo) < 2**11 and r < 2**10: the product is < 2**21.
    v = lo + round_shift((hi - lo) * r, rb)                 # Q16 in [2**16, 2**17]
    return round_shift(v, -k)                               # -k in [0, 47]: v >> 47 rounds to 0


def _newton_reciprocal(m30: np.ndarray) -> np.ndarray:
    """1/m in Q30 for m30 = m * 2**30, m in [1, 2)."""
    half = 1 << (NEWTON_FRAC - 1)
    r = RECIP_SEED[(m30 >> (NEWTON_FRAC - RECIP_SEED_BITS)) - (1 << RECIP_SEED_BITS)]
    for _ in range(2):
        # m30 < 2**31, r <= 2**30 + 1 (the seeds are <= 1/m and Newton for 1/m never overshoots): < 2**62.
        mr = (m30 * r + half) >> NEWTON_FRAC
        t = (2 << NEWTON_FRAC) - mr                          # in (0, 2**31]
        r = (r * t + half) >> NEWTON_FRAC                    # r * t <= (2**30 + 1) * 2**31 < 2**62
    return r


def _newton_rsqrt(m30: np.ndarray) -> np.ndarray:
    """1/sqrt(m) in Q30 for m30 = m * 2**30, m in [1, 4)."""
    half = 1 << (NEWTON_FRAC - 1)
    lower = m30 < (2 << NEWTON_FRAC)
    idx = np.where(lower, (m30 >> (NEWTON_FRAC - RSQRT_SEED_BITS)) - (1 << RSQRT_SEED_BITS),
                   m30 >> (NEWTON_FRAC + 1 - RSQRT_SEED_BITS))
    r = RSQRT_SEED[idx]
    for _ in range(2):
        # r <= 2**30 + 1 (seeds <= 1/sqrt(m); Newton r(3 - m r^2)/2 never overshoots): r*r < 2**61,
        # r2 <= 2**30 + 3 and m30 < 2**32: m30 * r2 < 2**62.01; r * t <= (2**30 + 1) * 3 * 2**30 < 2**62.
        r2 = (r * r + half) >> NEWTON_FRAC
        mr2 = (m30 * r2 + half) >> NEWTON_FRAC
        t = (3 << NEWTON_FRAC) - mr2                         # in (0, 3 * 2**30]
        r = (r * t + (1 << NEWTON_FRAC)) >> (NEWTON_FRAC + 1)
    return r


def _normalise(x: np.ndarray, e: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """x * 2**shift, truncating for negative shift (per element; |shift| <= 62 here)."""
    return np.where(shift >= 0, x << np.clip(shift, 0, 62), x >> np.clip(-shift, 0, 62))


def _positive_operand(x_raw, in_frac: int, out_frac: int, out_width: int):
    """Checked fracs, the output format, x with non-positive values replaced by 1, the mask of the positive ones,
    and x's leading-one position: what reciprocal and rsqrt both start from."""
    in_frac, out_frac = _check_frac("in_frac", in_frac), _check_frac("out_frac", out_frac)
    out_fmt = FixedFormat(out_width, out_width - out_frac)
    x = _raw(x_raw)
    pos = x > 0
    x = np.where(pos, x, 1)
    return in_frac, out_frac, out_fmt, x, pos, msb(x)


def reciprocal(x_raw, in_frac: int, out_frac: int, out_width: int = 63) -> np.ndarray:
    """1/x for x > 0, raw at ``out_frac`` saturated to a signed ``out_width``-bit format; x <= 0 gives the max.

    x_raw = m * 2**e with m in [1, 2) (e from :func:`msb`, valid for any positive int64); r = 1/m by a seed table and
    two Newton steps in Q30; 1/x = r * 2**(in_frac - e), de-normalised with AP_RND rounding and saturation.
    """
    in_frac, out_frac, out_fmt, x, pos, e = _positive_operand(x_raw, in_frac, out_frac, out_width)
    m30 = _normalise(x, e, NEWTON_FRAC - e)                  # in [2**30, 2**31)
    r = _newton_reciprocal(m30)                             # 1/x = r * 2**(in_frac - e - 30): raw at 30 + e - in_frac
    out = shift_saturate(r, NEWTON_FRAC + e - in_frac - out_frac, out_fmt)
    return np.where(pos, out, out_fmt.raw_max)


def rsqrt(x_raw, in_frac: int, out_frac: int, out_width: int = 63) -> np.ndarray:
    """1/sqrt(x) for x > 0, raw at ``out_frac`` saturated to a signed ``out_width``-bit format; x <= 0 gives the max.

    x = m * 2**(2j) with m in [1, 4) (the even exponent folds an odd in_frac in too); r = 1/sqrt(m) by a seed
    table and two Newton steps r(3 - m r^2)/2 in Q30; 1/sqrt(x) = r * 2**-j. Valid from 1 LSB to 2**62 raw, so
    LayerNorm's variance + eps is safe at both ends.
    """
    in_frac, out_frac, out_fmt, x, pos, e = _positive_operand(x_raw, in_frac, out_frac, out_width)
    j = (e - in_frac) >> 1                                  # floor((e - in_frac) / 2)
    m30 = _normalise(x, e, NEWTON_FRAC - in_frac - 2 * j)    # x * 2**(30 - in_frac - 2j) in [2**30, 2**32)
    r = _newton_rsqrt(m30)                                  # 1/sqrt(x) = r * 2**(-30 - j): raw at 30 + j
    out = shift_saturate(r, NEWTON_FRAC + j - out_frac, out_fmt)
    return np.where(pos, out, out_fmt.raw_max)


def gelu(x_raw, frac: int) -> np.ndarray:
    """GELU(x) = x * Phi(x) (exact erf, as torch.nn.GELU()), raw at ``frac`` in and out.

    Written as ReLU(x) - delta(|x|), delta(a) = a * Phi(-a) >= 0: delta is smooth, bounded (<= 0.17) and 0 past 8
    (< 1e-14), so one table over [0, 8) covers both signs. Step 1/32 (257 entries, Q30) with rounded linear
    interpolation; measured error <= 2.14e-4 absolute at frac = 12 (required: 2**-12 = 2.44e-4; step 1/16 would
    give ~4.5e-4), <= 1.05e-4 at frac >= 16. GELU(0) = 0 exactly.
    The result never exceeds |x| in magnitude: it fits any signed format that holds x.
    """
    frac = _check_frac("frac", frac)
    x = _raw(x_raw)
    lim = GELU_RANGE << frac
    a = np.where(x < 0, -np.maximum(x, -lim), np.minimum(x, lim))   # |x| clamped to 8: no overflow at -2**63
    if frac >= GELU_STEP_BITS:
        rb = frac - GELU_STEP_BITS
        i, r = a >> rb, a & ((1 << rb) - 1)
    else:
        rb = 0
        i, r = a << (GELU_STEP_BITS - frac), np.zeros_like(a)
    lo, hi = GELU_DELTA[i], GELU_DELTA[np.minimum(i + 1, len(GELU_DELTA) - 1)]
    # |hi - lo| <= step * max|delta'| = 2**-5 * 0.5 * 2**30 = 2**24 and r < 2**(frac - 5) <= 2**35: < 2**59.
    delta = lo + round_shift((hi - lo) * r, rb)                 # Q30
    return np.maximum(x, 0) - round_shift(delta, GELU_TABLE_FRAC - frac)


def _c_array(name: str, values: list[int], per_line: int = 8) -> str:
    rows = [", ".join(f"{v}LL" for v in values[i:i + per_line]) for i in range(0, len(values), per_line)]
    body = ",\n    ".join(rows)
    return f"static const int64_t {name}[{len(values)}] = {{\n    {body}\n}};\n"


def emit_tables_header() -> str:
    """``edgevit_tables.h``: the constants and tables of this module as C++ (fixed_math.h includes it)."""
    consts = {"EV_EXP_FRAC": EXP_FRAC, "EV_LOG2E_RAW": LOG2E_RAW, "EV_EXP_XMIN": EXP_XMIN, "EV_P2_BITS": P2_BITS,
              "EV_NEWTON_FRAC": NEWTON_FRAC, "EV_RECIP_SEED_BITS": RECIP_SEED_BITS,
              "EV_RSQRT_SEED_BITS": RSQRT_SEED_BITS, "EV_GELU_STEP_BITS": GELU_STEP_BITS, "EV_GELU_RANGE": GELU_RANGE,
              "EV_GELU_TABLE_FRAC": GELU_TABLE_FRAC, "EV_MAX_FRAC": MAX_FRAC}
    lines = ["// Generated by edgevit.backends.hls.mathfn.emit_tables_header(): do not edit, regenerate.",
             "// The numpy reference uses the same tables, so the C++ kernels and Python agree bit for bit.",
             "#ifndef EDGEVIT_TABLES_H", "#define EDGEVIT_TABLES_H", "", "#include <stdint.h>", ""]
    lines += [f"static const int {name} = {value};" for name, value in consts.items()]
    lines.append("")
    for py_name, c_name in (("P2_TABLE", "EV_P2_TABLE"), ("RECIP_SEED", "EV_RECIP_SEED"),
                            ("RSQRT_SEED", "EV_RSQRT_SEED"), ("GELU_DELTA", "EV_GELU_DELTA")):
        lines.append(_c_array(c_name, _TABLES[py_name]))
    lines += ["#endif  // EDGEVIT_TABLES_H", ""]
    return "\n".join(lines)


def write_tables_header(folder: str | Path) -> Path:
    """Write :func:`emit_tables_header` as ``folder/edgevit_tables.h`` (atomically) and return its path."""
    return atomic_write_text(Path(folder) / TABLES_HEADER, emit_tables_header())
