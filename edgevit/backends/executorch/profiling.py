"""Profiling a .pte: run it with ETDump on (here, or ExecuTorch's ``executor_runner`` on a phone) and read
the ETDump back into per-operator rows.

Here, the runner is ``python -m edgevit.backends.executorch.runner`` in a fresh process (so peak memory is
this model's), with the flags of ExecuTorch's ``executor_runner``: a phone, a board and this machine are
driven the same way and return the same ETDump, parsed by :mod:`.etdump`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ...errors import EdgevitError
from ...timing import summarize
from .._process import parse_result_line, run_python_module
from ..base import DeviceRun, NativeRunner, ParsedProfile
from .etdump import parse_etdump

__all__ = ["profile_here", "parse_profile", "EXECUTOR_RUNNER"]

_BUILD_DOC = "docs/profiling-on-android.md"


def profile_here(artifact: Path, *, runs: int, warmup: int, threads: int, timeout: float) -> DeviceRun:
    with tempfile.TemporaryDirectory() as tmp:
        etdump_path = Path(tmp) / "model.etdump"
        log = run_python_module(["edgevit.backends.executorch.runner", f"--model_path={artifact}",
                                 f"--etdump_path={etdump_path}", f"--num_executions={warmup + runs}",
                                 f"--cpu_threads={threads}"], str(artifact), timeout)
        etdump = etdump_path.read_bytes() if etdump_path.exists() else None
    result = parse_result_line(log) or {}
    return DeviceRun(etdump=etdump, times_ms=result.get("times_ms", [])[warmup:],
                     peak_memory_bytes=result.get("peak_memory_bytes"), log=log[-4000:])


def parse_profile(run: DeviceRun, artifact: Path, warmup: int) -> ParsedProfile:
    if not run.etdump:
        raise EdgevitError("The device brought back no ETDump. The runner must be ExecuTorch's executor_runner "
                           "built with -DEXECUTORCH_ENABLE_EVENT_TRACER=ON (or edgevit's runner); see the "
                           "README's Profiling section.")
    etrecord = artifact.parent / "etrecord.bin"
    parsed = parse_etdump(run.etdump, warmup=warmup, etrecord=etrecord if etrecord.exists() else None,
                          pte=artifact.read_bytes(), source=f"The ETDump of {artifact}")
    n = len(parsed.times_ms)
    rows = [{"name": r.name, "op_type": r.op_type, "delegate": r.delegate, "module": r.module,
             "module_type": r.module_type, "ms": r.median_ms, "mean_ms": r.total_ms / n} for r in parsed.ops]
    extra = {"timing_source": "ETDump Method::execute events",
             "op_timing": "ETDump per-op events: XNNPACK's profiler inside the delegate (whole microseconds), "
                          "kernel events outside it; ms = median over the timed runs (robust to a busy machine)",
             "module_mapping": parsed.module_mapping, "init_ms": parsed.init_ms,
             "delegate_calls": [{**d, "mean_ms": d["total_ms"] / d["calls"] if d["calls"] else None}
                                for d in parsed.delegate_calls],
             "warmup_times_ms": [round(t, 4) for t in parsed.warmup_times_ms]}
    if run.times_ms:
        extra["runner_wall_ms"] = summarize(run.times_ms)
    return ParsedProfile(times_ms=parsed.times_ms, load_ms=parsed.load_ms if run.load_ms is None else run.load_ms,
                         rows=rows, extra=extra, notes=list(parsed.notes))


# ------------------------------------------------------------------------------ executor_runner (adb)

def _command(runner: str, artifact: str, result: str, executions: int, threads: int) -> list[str]:
    return [runner, f"--model_path={artifact}", f"--etdump_path={result}", f"--num_executions={executions}",
            f"--cpu_threads={threads}"]


def _explain_failure(code: int, output: str, runner: str, info: dict) -> str | None:
    tail = " ".join(line.strip() for line in output.strip().splitlines()[-3:]) or "no output"
    if code in (126, 127):
        return (f"The device could not execute the runner {runner} (exit {code}: {tail}). Is it built for this "
                f"device's ABI ({info.get('abi') or 'unknown'}) and for Android (NDK)? See {_BUILD_DOC}.")
    if "etdump_path" in output and "unknown command line flag" in output:  # gflags' words
        return (f"The runner {runner} has no --etdump_path: it was built without the event tracer. Rebuild it with "
                f"-DEXECUTORCH_BUILD_DEVTOOLS=ON -DEXECUTORCH_ENABLE_EVENT_TRACER=ON ({_BUILD_DOC}).")
    if code != 0:
        return (f"The runner failed on the device (exit {code}): {tail}. If the program does not load, the runner "
                f"may be older than the ExecuTorch that compiled it, or lack XNNPACK; rebuild it ({_BUILD_DOC}).")
    return None


def _missing_result(remote: str) -> str:
    return (f"The runner finished but wrote no ETDump at {remote}. It must be executor_runner built with "
            f"-DEXECUTORCH_ENABLE_EVENT_TRACER=ON and -DEXECUTORCH_BUILD_DEVTOOLS=ON ({_BUILD_DOC}).")


EXECUTOR_RUNNER = NativeRunner(
    name="executor_runner",
    default_path="/data/local/tmp/executor_runner",  # where ExecuTorch's own Android instructions put it
    result_suffix=".etdump",
    build_doc=_BUILD_DOC,
    command=_command,
    explain_failure=_explain_failure,
    missing_result=_missing_result,
)
