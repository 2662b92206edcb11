"""The tensor arena: one static int8 buffer, every intermediate tensor at an offset, reused once it is dead.

Liveness: a tensor (its bytes: reshapes alias their source) lives from the layer that writes it to the last layer
that reads it; a kernel's int32 scratch (1x1 conv, bmm: the operand widened once) lives during its layer. Offsets
are assigned greedily by size (largest first, each at the lowest 16-byte-aligned offset that overlaps no placed
buffer whose lifetime intersects), TFLite Micro's ``GreedyMemoryPlanner`` rule. The lower
bound no plan can beat is the largest sum of live bytes at any one layer; the report gives both. The graph's input
and output live in the caller's buffers (``ev_model_run``'s arguments), not in the arena.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import DoesNotFitError
from .ir import McuGraph

__all__ = ["ArenaPlan", "plan_arena", "check_fits", "scratch_key", "ALIGNMENT"]

ALIGNMENT = 16


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


@dataclass
class ArenaPlan:
    offsets: dict[int, int]             # root tensor id (or scratch_key(layer)) -> byte offset in the arena
    sizes: dict[int, int]
    lifetimes: dict[int, tuple[int, int]]
    arena_bytes: int                    # the plan's peak (aligned)
    lower_bound_bytes: int              # max over layers of the live bytes (no plan can use less)

    @property
    def overhead(self) -> float:
        return self.arena_bytes / self.lower_bound_bytes - 1 if self.lower_bound_bytes else 0.0

    def as_dict(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "liveness_lower_bound_bytes": self.lower_bound_bytes,
                "overhead_vs_lower_bound": round(self.overhead, 4), "alignment": ALIGNMENT,
                "buffers_in_arena": len(self.offsets), "strategy": "greedy by size (largest first, lowest fit)"}


def scratch_key(layer_index: int) -> int:
    """The planner's id for layer ``layer_index``'s scratch buffer (tensor ids are >= 0)."""
    return -1 - layer_index


def plan_arena(graph: McuGraph) -> ArenaPlan:
    external = {graph.root(graph.input), graph.root(graph.output)}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, layer in enumerate(graph.layers):
        out = graph.root(layer.output)
        first.setdefault(out, index)
        last[out] = max(last.get(out, index), index)
        for tid in layer.inputs:
            root = graph.root(tid)
            last[root] = max(last.get(root, index), index)
            first.setdefault(root, -1)    # only the graph's input is read before any write
    roots = [t for t in first if t not in external]
    sizes = {t: graph.tensors[t].size for t in roots}
    lifetimes = {t: (first[t], last[t]) for t in roots}
    for index, layer in enumerate(graph.layers):     # a kernel's int32 scratch lives during its layer only
        if layer.params.get("scratch_bytes"):
            key = scratch_key(index)
            roots.append(key)
            sizes[key], lifetimes[key] = int(layer.params["scratch_bytes"]), (index, index)
    offsets: dict[int, int] = {}
    placed: list[int] = []
    for tid in sorted(roots, key=lambda t: (-sizes[t], lifetimes[t][0], t)):
        start, end = lifetimes[tid]
        busy = sorted((offsets[o], offsets[o] + sizes[o]) for o in placed
                      if lifetimes[o][0] <= end and start <= lifetimes[o][1])
        offset = 0
        for lo, hi in busy:
            if offset + sizes[tid] <= lo:
                break
            offset = max(offset, _align(hi))
        offsets[tid] = offset
        placed.append(tid)
    arena = _align(max((offsets[t] + sizes[t] for t in roots), default=0))
    lower = max((sum(sizes[t] for t in roots if lifetimes[t][0] <= i <= lifetimes[t][1])
                 for i in range(len(graph.layers))), default=0)
    return ArenaPlan(offsets, sizes, lifetimes, arena, lower)


def check_fits(plan: ArenaPlan, flash_needed: int | None, device: str, sram_kb: float, flash_kb: float) -> None:
    """Refuse an arena larger than the device's SRAM (or constants larger than its flash), saying by how much."""
    sram = int(sram_kb * 1024)
    if plan.arena_bytes > sram:
        over = plan.arena_bytes - sram
        raise DoesNotFitError(
            f"The tensor arena needs {plan.arena_bytes:,} bytes ({plan.arena_bytes / 1024:.1f} KB) but device "
            f"'{device}' has {sram:,} bytes ({sram_kb:g} KB) of SRAM for it: {over:,} bytes ({over / 1024:.1f} KB) "
            "too much. Use a smaller --input-shape or a smaller model, or a board with more SRAM.")
    flash = int(flash_kb * 1024)
    if flash_needed is not None and flash_needed > flash:
        over = flash_needed - flash
        raise DoesNotFitError(
            f"The model's weights and code need {flash_needed:,} bytes ({flash_needed / 1024:.1f} KB) of flash but "
            f"device '{device}' has {flash:,} bytes ({flash_kb:g} KB): {over:,} bytes ({over / 1024:.1f} KB) too "
            "much. Use a smaller model or a board with more flash.")
