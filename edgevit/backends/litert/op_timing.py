"""Per-operator times of a .tflite on this machine, derived from prefixes of the model in LiteRT.

LiteRT's op profiler is not reachable from Python: ``ai_edge_litert`` 2.3's ``Interpreter`` and
``CompiledModel`` take no profiler, and the C profiler in ``libLiteRt.so`` (``LiteRtCompiledModelGetProfiler``)
needs runtime options that enable profiling, which the Python package cannot create. So the model is cut
after each operator k (same inputs; every tensor still needed later becomes an output) and each prefix is
timed in the same interpreter, XNNPACK delegate and thread count: operator k's time is
``median(prefix k) - median(prefix k-1)``. Operators keep their context, the times add up to the whole
model by construction, and a small op can come out slightly negative from timing noise (an op whose output
a prefix must materialise costs a little more there than inside the model). XNNPACK folds a PAD into the
convolution that reads it, so no prefix ends at such a PAD: its cost is reported on the convolution.
Operator 0 also carries the per-invoke overhead.

Module names come from the tensor names litert-torch writes ("…SHViTStage_0/…Sequential_blocks/…").
"""
from __future__ import annotations

import copy
import statistics
import time

import numpy as np

from ...errors import EdgevitError
from .._process import reset_peak_rss, result_line, status_kib

__all__ = ["time_tflite_ops", "module_from_tensor_name"]


def module_from_tensor_name(name: str) -> str | None:
    """'A.SHViT/B.Sequential_stages/C.SHViTStage_0;1' -> 'stages.0' (the op's own entry, after fusions)."""
    parts = [p for p in name.split(";") if p and not p.isdigit()]
    if not parts or "/" not in parts[-1]:
        return None
    path = []
    for segment in parts[-1].split("/")[1:]:  # the first segment is the model class
        cls = segment.rsplit(".", 1)[-1]
        if "_" in cls:
            path.append(cls.split("_", 1)[1])
    return ".".join(path) or None


def _prefix_model(model, last: int):
    """The model cut after operator ``last``: the same inputs, every tensor still needed later as output."""
    from ai_edge_litert import schema_py_generated as schema

    graph = model.subgraphs[0]
    ops = graph.operators[:last + 1]
    produced = {t for op in ops for t in op.outputs}
    needed = {t for op in graph.operators[last + 1:] for t in op.inputs} | set(graph.outputs)
    outputs = [t for t in dict.fromkeys([*ops[-1].outputs, *(t for t in produced if t in needed)])]
    used = {t for op in ops for t in (*op.inputs, *op.outputs) if t >= 0} | set(graph.inputs)
    prefix = copy.copy(model)
    prefix.buffers, prefix.signatureDefs = [schema.BufferT()], None
    tensors = []
    for index, tensor in enumerate(graph.tensors):
        tensor = copy.copy(tensor)
        if index in used and tensor.buffer:
            prefix.buffers.append(model.buffers[tensor.buffer])  # only the weights this prefix reads
            tensor.buffer = len(prefix.buffers) - 1
        else:
            tensor.buffer = 0
        tensors.append(tensor)
    sub = copy.copy(graph)
    sub.tensors, sub.operators, sub.outputs = tensors, list(ops), outputs
    prefix.subgraphs = [sub]
    return prefix


def _fill(detail: dict, rng: np.random.Generator) -> np.ndarray:
    dtype, shape = detail["dtype"], detail["shape"]
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -100), min(info.max, 100), size=shape, endpoint=True).astype(dtype)


_FUSED_FORWARD = {"PAD", "PADV2"}


def _only_reader(graph, op, reader: int) -> bool:
    """True if operator ``reader`` is the only one consuming ``op``'s outputs (and they are not outputs)."""
    outs = set(op.outputs)
    readers = {i for i, other in enumerate(graph.operators) if outs & set(other.inputs)}
    return readers == {reader} and not outs & set(graph.outputs)


def _median_invoke_ms(blob: bytes, threads: int, runs: int, warmup: int, rng, keep_times: bool = False):
    from ai_edge_litert.interpreter import Interpreter

    start = time.perf_counter()
    interpreter = Interpreter(model_content=blob, num_threads=threads)
    interpreter.allocate_tensors()  # applies the XNNPACK delegate
    load_ms = (time.perf_counter() - start) * 1e3
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], _fill(detail, rng))
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    if keep_times:
        return {"times_ms": times, "load_ms": load_ms}
    return statistics.median(times)


def time_tflite_ops(data: bytes, *, threads: int, runs: int, warmup: int, progress=None) -> list[dict]:
    """One row per operator of the first subgraph, in execution order: its prefix-difference time (ms)."""
    from ai_edge_litert.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    except Exception as e:  # noqa: BLE001 - a damaged flatbuffer fails anywhere in the reader
        raise EdgevitError(f"The .tflite cannot be read for per-op timing ({type(e).__name__}: {e}); "
                           "recompile it with `edgevit compile`.") from None
    graph, rng, rows, before = model.subgraphs[0], np.random.default_rng(0), [], 0.0
    for index, op in enumerate(graph.operators):
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "CUSTOM"
        out_name = graph.tensors[op.outputs[0]].name.decode(errors="replace") if op.outputs else ""
        row = {"index": index, "op_type": name, "name": f"{name} #{index}",
               "module": module_from_tensor_name(out_name)}
        if name in _FUSED_FORWARD and index + 1 < len(graph.operators) and _only_reader(graph, op, index + 1):
            # XNNPACK folds this PAD into the convolution that reads it; cut here, the PAD would be made to
            # run alone. Its cost is measured on the next operator.
            row.update(median_ms=0.0, fused_into=f"#{index + 1}")
            rows.append(row)
            continue
        try:
            blob = bytes(flatbuffer_utils.convert_object_to_bytearray(_prefix_model(model, index)))
            upto = _median_invoke_ms(blob, threads, runs, warmup, rng)
            row.update(prefix_ms=upto, median_ms=upto - before)
            before = upto
        except Exception as e:  # noqa: BLE001 - a prefix the runtime refuses is reported, not fatal
            row.update(median_ms=None, error=" ".join(str(e).split())[:160] or type(e).__name__)
        rows.append(row)
        if progress is not None:
            progress()
    return rows


def run_tflite(data: bytes, *, runs: int, warmup: int, threads: int) -> dict:
    """Whole-model invoke() times, load time and peak memory, then the per-operator prefix times.

    Peak memory is reset just before loading, so the imports before it (torch among them) do not count."""
    reset_peak_rss()
    baseline_kib = status_kib("VmRSS")
    start = time.perf_counter()
    try:
        whole = _median_invoke_ms(data, threads, runs, warmup, np.random.default_rng(0), keep_times=True)
    except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError alike
        raise EdgevitError(f"LiteRT cannot run the model: {' '.join(str(e).split()) or type(e).__name__}. "
                           "Is the .tflite corrupt? Recompile it.") from None
    peak_kib = status_kib("VmHWM")  # before the prefix interpreters below add their own
    ops = time_tflite_ops(data, threads=threads, runs=runs, warmup=warmup)
    known = peak_kib is not None and baseline_kib is not None
    return {"times_ms": whole["times_ms"], "load_ms": whole["load_ms"], "ops": ops,
            "wall_including_load_ms": (time.perf_counter() - start) * 1e3,
            "peak_memory_bytes": (peak_kib - baseline_kib) * 1024 if known else None,  # what the model added
            "peak_rss_bytes": peak_kib * 1024 if known else None}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m edgevit.backends.litert.op_timing",
                                description="Time a .tflite here: whole model, then each operator alone.")
    p.add_argument("--model_path", required=True)
    p.add_argument("--num_executions", type=int, default=23)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cpu_threads", type=int, default=1)
    args = p.parse_args(argv)
    try:
        result = run_tflite(Path(args.model_path).read_bytes(), runs=args.num_executions - args.warmup,
                            warmup=args.warmup, threads=max(args.cpu_threads, 1))
    except (OSError, EdgevitError) as e:
        print(f"Failed to run {args.model_path}: {e}", file=sys.stderr)
        return 1
    print(result_line(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
