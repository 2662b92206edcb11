"""Share node provenance between FX passes instead of deep-copying it (a compile-time and memory cut).

Every node a torch/ExecuTorch pass creates records where it came from: ``node.meta["from_node"]`` gets a
``torch.fx.traceback.NodeSource`` of the node it replaces, and that NodeSource's constructor deep-copies
the old node's whole provenance chain. XNNPACK's ~17 lowering passes each rebuild every node, so the
chains grow by one link per pass and each pass copies all of them again: on EfficientFormer-L1 int8 the
copies were a third of ``to_edge_transform_and_lower`` (33 -> 23 s CPU, 59 MB less peak, same .pte bytes).

A NodeSource is never changed after it is built (passes append to a *node's* ``from_node`` list, never to
a NodeSource's), so ``shared_node_provenance()`` builds each one with a shallow copy of the list: the new
list is its own, the links in it are shared. The provenance reads the same (``NodeSource.to_dict``), the
debug handles ExecuTorch derives from it are the same, and ``EDGEVIT_PLAIN_COMPILE=1`` turns it off
(tests/test_compile_speed.py checks both ways give the same bytes).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torch.fx import traceback as fx_traceback

__all__ = ["shared_node_provenance"]

_lock = threading.Lock()
_depth = 0
_original_init = fx_traceback.NodeSource.__init__


def _init_sharing_links(self, node, pass_name: str = "", action=None) -> None:
    _original_init(self, None, pass_name, action)  # pass name, actions, empty provenance, caches
    if node:
        self.node_info = fx_traceback.NodeSource.NodeInfo(name=node.name, target=str(node.target),
                                                           graph_id=id(node.graph))
        self.from_node = list(node.meta.get("from_node", ()))


def _supported() -> bool:
    """The constructor this replaces, as torch 2.13 has it (a later torch that changes it keeps its own)."""
    source = fx_traceback.NodeSource
    return hasattr(source, "NodeInfo") and {"node_info", "from_node"} <= set(getattr(source, "__annotations__", {}))


@contextmanager
def shared_node_provenance(enabled: bool = True) -> Iterator[None]:
    """Within the block, new NodeSources share the provenance links they were built from (re-entrant)."""
    global _depth
    if not enabled or not _supported():
        yield
        return
    with _lock:
        _depth += 1
        fx_traceback.NodeSource.__init__ = _init_sharing_links
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                fx_traceback.NodeSource.__init__ = _original_init
