"""What every device-side runner shares: one result line on stdout, peak-memory readings, a child process.

A runner (``python -m edgevit.backends.executorch.runner``, ``python -m edgevit.backends.litert.op_timing``)
prints what only it knows as one line ``EDGEVIT_RESULT {json}``; hosts find it with
:func:`parse_result_line`. Peak memory is VmHWM after the run minus VmRSS just before loading, with the
high-water mark reset there (Linux), so it is what the model adds, not the interpreter and imports.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..errors import EdgevitError

__all__ = ["RESULT_PREFIX", "parse_result_line", "result_line", "status_kib", "reset_peak_rss",
           "run_python_module"]

RESULT_PREFIX = "EDGEVIT_RESULT "


def result_line(record: dict) -> str:
    return RESULT_PREFIX + json.dumps(record)


def parse_result_line(stdout: str) -> dict | None:
    """The ``EDGEVIT_RESULT`` record from a runner's stdout; None for a runner that prints none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (VmRSS, VmHWM); None where there is none (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """VmHWM := VmRSS (Linux), so the next peak reading is what comes after this point."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run_python_module(args: list[str], what: str, timeout: float) -> str:
    """``python -m ARGS`` in a fresh process (so peak memory is the model's); its stdout + stderr."""
    try:
        done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise EdgevitError(f"Profiling {what} here took longer than {timeout:.0f} s and was stopped; "
                           "lower --runs or check the machine's load.") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line]
        raise EdgevitError(f"The runtime failed on {what} (exit {done.returncode}): "
                           f"{' '.join(lines[-3:]) or 'no message'}. Is the artifact corrupt? Recompile it.")
    return done.stdout + "\n" + done.stderr
