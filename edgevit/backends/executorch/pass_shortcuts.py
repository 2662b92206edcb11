"""Skips inside XNNPACK's lowering passes that cannot change a graph edgevit lowers (same .pte bytes, less time).

``ConvertToUpsampleBilinear2d`` builds its match patterns on first use by exporting four bilinear-upsample
modules with ``torch.export(strict=True)`` and ``to_edge`` (~2 s of CPU, paid by every one-shot compile),
then matches them against the graph. With the ExecuTorch this project pins, each pattern is the single
``upsample_bilinear2d.vec`` op, and a match on that op is left as it is ("not decomposed, do nothing"), so a
graph without that op gets nothing from the search. ``skip_absent_bilinear_patterns()`` runs the pass
without the search on such graphs (the pass's own re-trace still runs); a graph that has the op goes the
pass's full way. ``EDGEVIT_PLAIN_COMPILE=1`` turns it off (tests/test_compile_speed.py checks the bytes).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.fx.passes.infra.pass_base import PassResult

__all__ = ["skip_absent_bilinear_patterns"]


def _has_bilinear_upsample(graph_module: torch.fx.GraphModule) -> bool:
    return any(node.op == "call_function" and "upsample_bilinear2d" in str(node.target)
               for node in graph_module.graph.nodes)


@contextmanager
def skip_absent_bilinear_patterns(enabled: bool = True) -> Iterator[None]:
    from executorch.backends.xnnpack._passes.convert_to_upsample_bilinear2d import ConvertToUpsampleBilinear2d

    if not enabled:
        yield
        return
    full_call = ConvertToUpsampleBilinear2d.call

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        if _has_bilinear_upsample(graph_module):
            return full_call(self, graph_module)
        graph_module.recompile()  # what the full pass does before its re-trace
        return PassResult(super(ConvertToUpsampleBilinear2d, self).call(graph_module).graph_module, True)

    ConvertToUpsampleBilinear2d.call = call
    try:
        yield
    finally:
        ConvertToUpsampleBilinear2d.call = full_call
