"""DSP / BRAM36 / URAM / LUT of a design, from its parameters, and the PE array picked per board.

A model of what the HLS kernels instantiate, not a synthesis result (no HLS compiler runs here); every
term is written out so a Vitis HLS report can be laid next to it:

- DSP: each PE multiplies act x weight (24 x 16 fits one DSP48E2, 27 x 18) and, for attention, act x act
  (two DSPs when act is wider than 18 bits); LayerNorm's squares (``ln_lanes`` multipliers, two DSPs each);
  the exp / reciprocal / rsqrt / GELU units (a fixed 16).
- Memory: every on-chip buffer split into the banks its loop reads in parallel (activations by the PE rows,
  weight ping/pong by the PE columns; input patches stream from DDR on their own port, unbuffered); a bank
  costs whole BRAM36s (36 Kb), or URAMs (288 Kb) for banks of 64 Kb and more on boards that have URAM;
  banks under 1 Kb go to LUTRAM.
- LUT: per PE (accumulator, saturation), per column (epilogue: GELU interpolation, gate multiply), and the
  fixed units (LayerNorm, softmax, top-k, AXI masters and control).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .convert import MoeVitGraph
from .design import PIPELINE, Design
from .reference import Formats

__all__ = ["Resources", "estimate_resources", "UTILISATION_LIMIT"]

UTILISATION_LIMIT = 0.8       # above this, placement and timing closure at the target clock get unlikely
_LUT_PER_PE, _LUT_PER_COL, _LUT_FIXED, _LUT_PER_LUTRAM_BIT = 40, 180, 22_000, 1 / 32
_DSP_FIXED = 16


@dataclass(frozen=True)
class Resources:
    dsp: int
    bram36: int
    uram: int
    lut: int
    buffers: dict            # name -> {"bits", "banks", "bram36", "uram"}

    def utilisation(self, board) -> dict[str, float | None]:
        have = {"dsp": board.dsp, "bram36": board.bram36, "uram": board.uram, "lut": board.lut}
        return {k: (getattr(self, k) / v if v else (0.0 if getattr(self, k) == 0 else math.inf))
                for k, v in have.items()}

    def over_limit(self, board, limit: float = UTILISATION_LIMIT) -> dict[str, tuple[int, int]]:
        """Resources above ``limit`` of the board: name -> (needed, available)."""
        have = {"dsp": board.dsp, "bram36": board.bram36, "uram": board.uram, "lut": board.lut}
        return {k: (getattr(self, k), v) for k, v in have.items() if getattr(self, k) > limit * v}

    def as_dict(self) -> dict:
        return {"dsp": self.dsp, "bram36": self.bram36, "uram": self.uram, "lut": self.lut, "buffers": self.buffers,
                "basis": "model of the kernels' buffers and units (edgevit.backends.hls.resources), not synthesis"}


def _bank_cost(bits_per_bank: int, banks: int, use_uram: bool) -> tuple[int, int, int]:
    """(bram36, uram, lutram bits) for ``banks`` memories of ``bits_per_bank`` each."""
    if bits_per_bank < 1024:
        return 0, 0, bits_per_bank * banks
    if use_uram and bits_per_bank >= 64 * 1024:
        return 0, banks * math.ceil(bits_per_bank / (288 * 1024)), 0
    return banks * math.ceil(bits_per_bank / (36 * 1024)), 0, 0


def estimate_resources(graph: MoeVitGraph, formats: Formats, design: Design, board) -> Resources:
    R, C = design.pe_rows, design.pe_cols
    a = formats.act.width
    T, D = graph.tokens, graph.dim
    hidden = max(b.hidden for b in graph.blocks)
    max_in = max(graph.patch_dim, D, hidden)
    rows_per_bank = math.ceil(T / R)
    use_uram = board.uram > 0
    buffers = {  # name: (bits per bank, banks)
        "weights ping/pong": (max_in * 16, 2 * C),
        "bias tile": (T * 32, C),                       # per-token embedding bias is the widest
        "x (residual)": (rows_per_bank * D * a, R),
        "h (normalised)": (rows_per_bank * D * a, R),
        "qkv": (rows_per_bank * 3 * D * a, R),
        "attention out": (rows_per_bank * D * a, R),
        "hidden": (rows_per_bank * hidden * a, R),
        "moe accumulator": (rows_per_bank * D * 48, R),
        "gate weights": (T * max(graph.num_experts, 1) * formats.gate.width, 1),
    }
    table, bram, uram, lutram = {}, 0, 0, 0
    for name, (bits, banks) in buffers.items():
        b36, u, lr = _bank_cost(bits, banks, use_uram)
        table[name] = {"bits": bits * banks, "banks": banks, "bram36": b36, "uram": u}
        bram, uram, lutram = bram + b36, uram + u, lutram + lr
    dsp_per_pe = 1 if a <= 18 else 2   # attention multiplies act x act on the same array
    dsp = R * C * dsp_per_pe + PIPELINE["ln_lanes"] * 2 + _DSP_FIXED
    lut = int(R * C * _LUT_PER_PE + C * _LUT_PER_COL + _LUT_FIXED + lutram * _LUT_PER_LUTRAM_BIT)
    return Resources(dsp=dsp, bram36=bram, uram=uram, lut=lut, buffers=table)
