"""Cycles of the accelerator's schedule, computed the way C-simulation counts them.

The program is a sequence of *steps* (one weight tile of a linear layer, one attention head, one
LayerNorm, one top-k pass), each with its compute cycles and the DDR cycles of the weights it needs.
Double buffering overlaps a step's load with the previous step's compute, so a step costs
``max(previous compute, its load)`` and the last compute is added at the end. The kernels call
``ev_sched_tile`` with the same numbers (hls/include/edgevit/moe_vit.h); tests hold the two equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .convert import MoeVitGraph
from .design import PIPELINE, Design

__all__ = ["Step", "Schedule", "schedule", "KINDS"]

KINDS = ("linear", "attention", "layernorm", "gate", "expert")


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Step:
    kind: str
    layer: str
    compute: int
    load: int
    macs: int = 0        # useful MACs (no padding), for the compute floor


@dataclass
class Schedule:
    design: Design
    steps: list[Step] = field(default_factory=list)

    def _load(self, nbytes: int) -> int:
        return PIPELINE["ddr_latency"] + _ceil(nbytes, self.design.ddr_bytes_per_cycle) if nbytes else 0

    def linear(self, kind: str, layer: str, n: int, fan_in: int, out: int, bias_per_token: bool = False,
               useful_rows: int | None = None) -> None:
        """``useful_rows``: rows whose MACs count toward the floor (the class token's all-zero patch does not)."""
        d = self.design
        compute = _ceil(n, d.pe_rows) * fan_in + PIPELINE["linear_depth"]
        load = self._load(fan_in * d.pe_cols * 2 + (n if bias_per_token else 1) * d.pe_cols * 4)
        tiles = _ceil(out, d.pe_cols)
        for t in range(tiles):
            cols = min(d.pe_cols, out - t * d.pe_cols)
            rows = n if useful_rows is None else useful_rows
            self.steps.append(Step(kind, layer, compute, load, rows * fan_in * cols))

    def layernorm(self, layer: str, n: int, dim: int) -> None:
        compute = n * 2 * _ceil(dim, PIPELINE["ln_lanes"]) + PIPELINE["ln_depth"]
        self.steps.append(Step("layernorm", layer, compute, self._load(dim * 2 * 2)))

    def attention(self, layer: str, tokens: int, heads: int, head_dim: int) -> None:
        d = self.design
        passes = _ceil(tokens, d.pe_rows)
        compute = passes * (_ceil(tokens, d.pe_cols) * head_dim + _ceil(head_dim, d.pe_cols) * tokens
                            + PIPELINE["attn_depth"])
        for _ in range(heads):
            self.steps.append(Step("attention", layer, compute, 0, 2 * tokens * tokens * head_dim))

    def gate_topk(self, layer: str, tokens: int, top_k: int) -> None:
        self.steps.append(Step("gate", layer, tokens * (top_k + PIPELINE["gate_depth"]), 0))

    # -- totals ---------------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        total, previous = 0, 0
        for s in self.steps:
            total += max(previous, s.load)
            previous = s.compute
        return total + previous

    def by_kind(self) -> dict[str, dict[str, int]]:
        """compute, DDR stall (load beyond the overlapped compute) and useful MACs per kind."""
        out = {k: {"compute": 0, "stall": 0, "macs": 0, "steps": 0} for k in KINDS}
        previous = 0
        for s in self.steps:
            row = out[s.kind]
            row["compute"] += s.compute
            row["stall"] += max(0, s.load - previous)
            row["macs"] += s.macs
            row["steps"] += 1
            previous = s.compute
        return out

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.steps)


def schedule(graph: MoeVitGraph, design: Design, expert_tokens: list[list[int]], task: int = 0) -> Schedule:
    """The step sequence of one image; ``expert_tokens[moe layer][expert]``: the routing (from C-sim or the
    reference on calibration data)."""
    s = Schedule(design)
    T, D = graph.tokens, graph.dim
    s.linear("linear", "embed", T, graph.patch_dim, D, bias_per_token=True, useful_rows=T - 1)
    moe_index = 0
    for i, block in enumerate(graph.blocks):
        p = f"blocks.{i}"
        s.layernorm(p + ".norm1", T, D)
        s.linear("linear", p + ".qkv", T, D, 3 * D)
        s.attention(p + ".attn", T, graph.heads, graph.head_dim)
        s.linear("linear", p + ".proj", T, D, D)
        s.layernorm(p + ".norm2", T, D)
        if block.moe:
            s.linear("gate", p + ".gate", T, D, graph.num_experts)
            s.gate_topk(p + ".gate", T, graph.top_k)
            for e, n in enumerate(expert_tokens[moe_index]):
                if n:
                    s.linear("expert", p + f".expert.{e}.fc1", n, D, block.hidden)
                    s.linear("expert", p + f".expert.{e}.fc2", n, block.hidden, D)
            moe_index += 1
        else:
            s.linear("linear", p + ".fc1", T, D, block.hidden)
            s.linear("linear", p + ".fc2", T, block.hidden, D)
    s.layernorm("norm", T, D)
    s.linear("linear", "head", T - 1, D, graph.tasks[task][1])
    return s
