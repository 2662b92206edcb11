"""Reading an ETDump (ExecuTorch's profile) into numbers: per-execution times, load time, per-op rows.

Parsing is ExecuTorch's ``Inspector``; the ETRecord written at compile time (``etrecord.bin``) maps
kernel events to model modules, and :mod:`.xnnpack_map` maps XNNPACK's per-operator
events (which carry no debug handle) through the .pte. The same code reads an ETDump from our runner,
from ExecuTorch's ``executor_runner`` on a phone, or from a board: warm-up executions are the first
``warmup`` ``Method::execute`` events, dropped here, because ``executor_runner`` has no warm-up flag.
"""
from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...errors import EdgevitError

__all__ = ["OpRow", "EtdumpProfile", "parse_etdump", "load_etrecord"]

_EXECUTE, _LOAD, _INIT, _DELEGATE_CALL = "Method::execute", "Program::load_method", "Method::init", "DELEGATE_CALL"


@dataclass
class OpRow:
    """One operator instance: a kernel call, or one operator inside a delegate."""

    name: str                   # event name: "Fully Connected (NC, QS8, QC8W) GEMM #12", "native_call_add.out"
    op_type: str                # the name without XNNPACK's "#n"
    delegate: str | None        # "XnnpackBackend" for ops inside a delegate, None for kernels
    module: str | None          # model module path ("stages.2.blocks.0.mlp.fc1"), when the ETRecord says
    module_type: str | None     # its class ("torch.nn.modules.linear.Linear")
    calls: int                  # timed executions it ran in
    median_ms: float            # per call
    total_ms: float             # over the timed executions


@dataclass
class EtdumpProfile:
    times_ms: list[float]                   # Method::execute, timed executions only
    warmup_times_ms: list[float]
    load_ms: float | None                   # Program::load_method (includes Method::init)
    init_ms: float | None                   # Method::init
    ops: list[OpRow]
    delegate_calls: list[dict]              # one per delegate instance: backend, calls, median_ms, total_ms
    module_mapping: str                     # how ops were tied to modules (or why they were not)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def load_etrecord(path: Path):
    """The ETRecord object, or None if absent; a damaged one is an error naming the file."""
    if path is None or not Path(path).exists():
        return None
    from executorch.devtools.etrecord import parse_etrecord

    try:
        return parse_etrecord(str(path))
    except Exception as e:  # noqa: BLE001 - parse errors come as zip/pickle/flatbuffer exceptions
        raise EdgevitError(f"The ETRecord {path} cannot be read ({type(e).__name__}: {e}). Recompile the "
                           "artifact with `edgevit compile` to write a new one, or delete it to profile "
                           "without the mapping to model modules.") from None


def _inspector(data: bytes, etrecord, source: str):
    from executorch.devtools import Inspector

    from .._native_log import capture_native_stderr

    # ETDump is a size-prefixed flatbuffer whose file identifier is "ED00" (bytes 8..12).
    if len(data) < 12 or data[8:12] != b"ED00":
        what = "empty" if not data else "not an ETDump (no ED00 identifier)"
        raise EdgevitError(f"{source} is {what}. The runner must be built with the event tracer "
                           "(-DEXECUTORCH_ENABLE_EVENT_TRACER=ON) and given --etdump_path; run the profile again.")
    with tempfile.TemporaryDirectory() as tmp, capture_native_stderr():
        path = Path(tmp) / "model.etdump"
        path.write_bytes(data)
        try:
            return Inspector(etdump_path=str(path), etrecord=etrecord)
        except Exception as e:  # noqa: BLE001 - a truncated flatbuffer fails anywhere in the reader
            raise EdgevitError(f"{source} is corrupt ({type(e).__name__}: {str(e)[:200]}). It was probably "
                               "cut short while copying from the device; run the profile again.") from None


def _handle_modules(etrecord) -> dict[int, tuple[str, str]]:
    """debug handle -> (module path, module class), from the ETRecord's edge program."""
    program = getattr(etrecord, "edge_dialect_program", None)
    if program is None:
        return {}
    mapping = {}
    for node in program.graph_module.graph.nodes:
        handle, stack = node.meta.get("debug_handle"), node.meta.get("nn_module_stack")
        path, cls = list(stack.values())[-1] if stack else ("", "")
        if isinstance(handle, int) and path:  # quantize/dequantize nodes name only the root: no module
            mapping[handle] = (path, cls)
    return mapping


def _kernel_module(event) -> tuple[str, str] | tuple[None, None]:
    hierarchy = event.module_hierarchy or {}
    for stack in hierarchy.values():  # one entry per fused graph node; the first names the op
        if stack:
            return tuple(list(stack.values())[-1])
    return None, None


def _times(event, warmup: int) -> list[float]:
    return list(event.perf_data.raw[warmup:]) if event.perf_data is not None else []


def _execution_events(events, warmup: int) -> tuple[list, list, list[list]]:
    """Every operator/delegate event in execution order (start times of the first timed run), the
    DELEGATE_CALL events, and the delegate operators split per call."""
    def start(e) -> int:
        st = e.start_time or [0]
        return st[min(warmup, len(st) - 1)]

    ordered = sorted((e for _, e in events if e.name not in (_EXECUTE, _LOAD, _INIT)), key=start)
    calls, per_call_ops = [], []
    for e in ordered:
        if e.name == _DELEGATE_CALL:
            calls.append(e)
            per_call_ops.append([])
        elif e.is_delegated_op and per_call_ops:
            per_call_ops[-1].append(e)
    return ordered, calls, per_call_ops


def _xnnpack_handles(pte: bytes, per_call_ops: list[list], notes: list[str]) -> dict[int, int | None]:
    """id(event) -> debug handle for XNNPACK's operators, aligned with the nodes serialized in the .pte."""
    from .xnnpack_map import align_operators, xnnpack_delegate_nodes

    try:
        delegates = xnnpack_delegate_nodes(pte)
    except Exception as e:  # noqa: BLE001 - an unreadable blob only costs the module names
        notes.append(f"XNNPACK nodes could not be read from the .pte ({e}); delegate ops have no module")
        return {}
    handles = {}
    for ops, nodes in zip(per_call_ops, delegates):
        for e, handle in zip(ops, align_operators([o.name for o in ops], nodes)):
            handles[id(e)] = handle
    return handles


def _op_rows(ordered, warmup: int, handle_modules: dict, op_handles: dict) -> list[OpRow]:
    rows, previous = [], (None, None)
    for e in ordered:
        if e.name == _DELEGATE_CALL:
            previous = (None, None)
            continue
        times = _times(e, warmup)
        if not times:
            continue
        if e.is_delegated_op:  # an op without a module of its own (a requantize) joins the op before it
            module, module_type = previous = handle_modules.get(op_handles.get(id(e)), previous)
        else:
            module, module_type = _kernel_module(e)
        rows.append(OpRow(name=e.name, op_type=e.name.rsplit(" #", 1)[0], delegate=e.delegate_backend_name,
                          module=module, module_type=module_type, calls=len(times),
                          median_ms=statistics.median(times), total_ms=sum(times)))
    return rows


def _delegate_calls(calls, per_call_ops, warmup: int) -> list[dict]:
    result = []
    for i, e in enumerate(calls):
        times = _times(e, warmup)
        backend = per_call_ops[i][0].delegate_backend_name if per_call_ops[i] else None
        result.append({"index": i, "backend": backend, "calls": len(times), "ops": len(per_call_ops[i]),
                       "median_ms": statistics.median(times) if times else None, "total_ms": sum(times)})
    return result


def parse_etdump(data: bytes, *, warmup: int = 0, etrecord=None, pte: bytes | None = None,
                 source: str = "the ETDump") -> EtdumpProfile:
    """Parse ``data``; ``etrecord`` (object or path) and ``pte`` (the program's bytes) add module names."""
    if etrecord is not None and not hasattr(etrecord, "edge_dialect_program"):
        etrecord = load_etrecord(etrecord)
    inspector = _inspector(data, etrecord, source)
    events = [(block.name, e) for block in inspector.event_blocks for e in block.events]
    executes = [e for _, e in events if e.name == _EXECUTE]
    if not executes or not executes[0].perf_data:
        raise EdgevitError(f"{source} has no Method::execute events: the program was loaded but never run. "
                           "Run the profile again with --runs of at least 1.")
    all_times = list(executes[0].perf_data.raw)
    if len(all_times) <= warmup:
        raise EdgevitError(f"{source} holds {len(all_times)} executions, not more than the {warmup} warm-up "
                           "ones; nothing is left to time. Lower --warmup or raise --runs.")
    first = {e.name: e for _, e in events if e.name in (_LOAD, _INIT)}

    notes: list[str] = []
    handle_modules = _handle_modules(etrecord) if etrecord is not None else {}
    mapping = ("none: no etrecord.bin next to the artifact (compile again to get one)" if etrecord is None
               else "ETRecord debug handles (kernels)")
    ordered, calls, per_call_ops = _execution_events(events, warmup)
    op_handles = {}
    if pte is not None and handle_modules and any(per_call_ops):
        op_handles = _xnnpack_handles(pte, per_call_ops, notes)
        if op_handles:
            mapping = "ETRecord debug handles (kernels); XNNPACK ops aligned to the .pte's XNNPACK nodes"
    return EtdumpProfile(
        times_ms=all_times[warmup:], warmup_times_ms=all_times[:warmup],
        load_ms=first[_LOAD].perf_data.raw[0] if _LOAD in first else None,
        init_ms=first[_INIT].perf_data.raw[0] if _INIT in first else None,
        ops=_op_rows(ordered, warmup, handle_modules, op_handles),
        delegate_calls=_delegate_calls(calls, per_call_ops, warmup), module_mapping=mapping, notes=notes)
