"""The accelerator's build-time parameters: PE array, AXI/DDR, clock, pipeline depths.

The depths are the schedule's fixed costs per pass (pipeline fill of the MAC array, the softmax / rsqrt
units, DDR burst latency); they are design assumptions, shared by C-simulation's cycle counters
(hls/include/edgevit/moe_vit.h) and the analytic estimate (:mod:`.schedule`), and written into the
manifest so a synthesis report can be compared with them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ...errors import EdgevitError

__all__ = ["Design", "parse_pe", "PIPELINE"]

# Fixed costs, in cycles (see the module docstring).
PIPELINE = {"linear_depth": 8, "attn_depth": 16, "ln_lanes": 16, "ln_depth": 24, "gate_depth": 4,
            "ddr_latency": 64}


@dataclass(frozen=True)
class Design:
    pe_rows: int                 # tokens per cycle in the linear unit
    pe_cols: int                 # output features per cycle
    clock_mhz: float
    axi_bits: int                # width of one AXI word in the weight image
    ddr_bytes_per_cycle: int     # what the AXI masters can pull from DDR per accelerator cycle

    def __post_init__(self):
        for name in ("pe_rows", "pe_cols", "axi_bits", "ddr_bytes_per_cycle"):
            if getattr(self, name) <= 0:
                raise EdgevitError(f"Design parameter {name} must be positive, got {getattr(self, name)}.")
        if self.axi_bits % 32:
            raise EdgevitError(f"AXI width {self.axi_bits} must be a multiple of 32 bits.")

    @property
    def macs(self) -> int:
        return self.pe_rows * self.pe_cols

    @property
    def pe(self) -> str:
        return f"{self.pe_rows}x{self.pe_cols}"

    def as_dict(self) -> dict:
        return {**asdict(self), "pipeline": dict(PIPELINE)}


def parse_pe(text: str) -> tuple[int, int]:
    """``"8x16"`` -> (8, 16): PE rows (tokens) x columns (outputs)."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EdgevitError(f"--pe {text!r} is not ROWSxCOLS (for example 8x16: 8 tokens x 16 outputs per "
                           "cycle).") from None
    if rows <= 0 or cols <= 0:
        raise EdgevitError(f"--pe {text!r}: rows and columns must be positive.")
    return rows, cols
