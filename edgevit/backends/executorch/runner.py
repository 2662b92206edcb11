"""The device-side runner for .pte files: run a program N times with ETDump on and write the ETDump.

``python -m edgevit.backends.executorch.runner --model_path model.pte --etdump_path model.etdump --num_executions 23
--cpu_threads 1`` takes the same flags as ExecuTorch's own ``executor_runner``
(examples/portable/executor_runner/executor_runner.cpp, built with ``-DEXECUTORCH_ENABLE_EVENT_TRACER=ON``),
so a host drives either one the same way and reads the same ETDump back. Like ``executor_runner`` it has no
warm-up flag: the host asks for ``warmup + runs`` executions and drops the first ``warmup`` ``Method::execute``
events when it parses the ETDump (:mod:`.etdump`). What only this runner knows (wall-clock per execution,
peak memory as VmHWM growth over the RSS before loading) it prints as one stdout line ``EDGEVIT_RESULT {json}``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .._process import reset_peak_rss, result_line, status_kib
from ..base import DeviceRun

__all__ = ["run_pte"]


def _random_inputs(meta) -> list:
    """One random tensor per method input, at the shape and dtype the program was exported with."""
    import torch

    # ExecuTorch ScalarType codes (runtime/core/portable_type/scalar_type.h) -> torch dtypes.
    dtypes = {0: torch.uint8, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.int64, 5: torch.float16,
              6: torch.float32, 7: torch.float64, 11: torch.bool, 15: torch.bfloat16}
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for i in range(meta.num_inputs()):
        info = meta.input_tensor_meta(i)
        dtype = dtypes.get(info.dtype())
        if dtype is None:
            raise ValueError(f"input {i} has ExecuTorch dtype code {info.dtype()}, which this runner cannot fill")
        shape = tuple(info.sizes())
        if dtype.is_floating_point:
            inputs.append(torch.randn(shape, generator=gen).to(dtype))
        else:
            inputs.append(torch.randint(0, 2 if dtype == torch.bool else 100, shape, generator=gen).to(dtype))
    return inputs


def run_pte(data: bytes, *, runs: int, warmup: int, threads: int, method: str = "forward") -> DeviceRun:
    """Run ``data`` (a .pte) ``warmup + runs`` times with ETDump on, in this process.

    ``times_ms`` holds the wall clock of the timed executions only; the ETDump holds every execution
    (the parser skips the first ``warmup``). ``peak_memory_bytes`` is VmHWM after loading and running
    minus VmRSS just before loading, with the high-water mark reset there (Linux): what this model adds,
    not the interpreter and torch imports.
    """
    from executorch.extension.pybindings import portable_lib

    if threads > 0:
        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool; the default is every core
    reset_peak_rss()
    baseline_kib = status_kib("VmRSS")
    start = time.perf_counter()
    module = portable_lib._load_for_executorch_from_buffer(
        data, enable_etdump=True, program_verification=portable_lib.Verification.Minimal)
    meta = module.method_meta(method)
    inputs = _random_inputs(meta)
    module.run_method(method, inputs)  # the first execution loads and initialises the method (lazily)
    first_ms = (time.perf_counter() - start) * 1e3
    times = []
    for _ in range(warmup + runs - 1):
        t0 = time.perf_counter()
        module.run_method(method, inputs, clone_outputs=False)
        times.append((time.perf_counter() - t0) * 1e3)
    times = ([first_ms] + times)[warmup:]
    peak_kib = status_kib("VmHWM")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.etdump")
        module.write_etdump_result_to_file(path)
        etdump = Path(path).read_bytes()
    del module  # the module points into ``data``; it goes first
    known = peak_kib is not None and baseline_kib is not None
    return DeviceRun(
        etdump=etdump, times_ms=times, load_ms=None,  # load/init come from the ETDump's own events
        peak_memory_bytes=(peak_kib - baseline_kib) * 1024 if known else None,  # what this model added
        device_info={"runner": "edgevit.backends.executorch.runner", "threads": threads,
                     "peak_rss_bytes": peak_kib * 1024 if known else None,
                     "baseline_rss_bytes": baseline_kib * 1024 if known else None,
                     "first_execution_ms": round(first_ms, 3)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgevit.backends.executorch.runner",
                                description="Run a .pte with ETDump on (executor_runner's flags).")
    p.add_argument("--model_path", default="model.pte")
    p.add_argument("--etdump_path", default="model.etdump")
    p.add_argument("--num_executions", type=int, default=1)
    p.add_argument("--cpu_threads", type=int, default=-1, help="-1: leave the runtime's default")
    p.add_argument("--method_name", default="forward")
    args = p.parse_args(argv)
    try:
        data = Path(args.model_path).read_bytes()
    except OSError as e:
        print(f"Failed to read model file {args.model_path}: {e.strerror or e}", file=sys.stderr)
        return 1
    if args.num_executions < 1:
        print("--num_executions must be at least 1", file=sys.stderr)
        return 1
    try:
        run = run_pte(data, runs=args.num_executions, warmup=0, threads=args.cpu_threads,
                      method=args.method_name)
    except Exception as e:  # noqa: BLE001 - the runtime raises plain RuntimeError; the host shows the message
        print(f"Failed to run {args.model_path}: {e}", file=sys.stderr)
        return 1
    Path(args.etdump_path).write_bytes(run.etdump)
    record = {"times_ms": [round(t, 4) for t in run.times_ms], "peak_memory_bytes": run.peak_memory_bytes,
              **{k: v for k, v in run.device_info.items() if k != "runner"}}
    print(result_line(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
