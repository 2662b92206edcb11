"""``--via local``: run the artifact on this machine, in a fresh process so peak memory is this model's.

A .pte goes through ``python -m edgevit.profiling.runner`` with ``executor_runner``'s flags (the same
command line a phone or board gets), a .tflite through ``python -m edgevit.profiling.tflite_ops``. Both
print an ``EDGEVIT_RESULT`` line; the .pte runner also writes the ETDump this target reads back.
"""
from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from ...errors import EdgevitError
from . import DeviceRun, Target, register_target

__all__ = ["LocalTarget"]


def _run_child(args: list[str], what: str, timeout: float) -> str:
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


@register_target
class LocalTarget(Target):
    """This machine. It reports no device identity: a local profile of a phone's artifact is allowed."""

    name = "local"

    def __init__(self, timeout: float = 900.0):
        self.timeout = timeout

    def run(self, artifact: Path, *, runs: int, warmup: int, threads: int, progress) -> DeviceRun:
        from ..runner import parse_result_line

        artifact = Path(artifact)
        with progress.stage(f"running {artifact.name} here ({warmup} warm-up + {runs} timed, {threads} thread(s))"):
            if artifact.suffix == ".pte":
                with tempfile.TemporaryDirectory() as tmp:
                    etdump_path = Path(tmp) / "model.etdump"
                    log = _run_child(["edgevit.profiling.runner", f"--model_path={artifact}",
                                      f"--etdump_path={etdump_path}", f"--num_executions={warmup + runs}",
                                      f"--cpu_threads={threads}"], str(artifact), self.timeout)
                    etdump = etdump_path.read_bytes() if etdump_path.exists() else None
                result = parse_result_line(log) or {}
                return DeviceRun(etdump=etdump, times_ms=result.get("times_ms", [])[warmup:],
                                 peak_memory_bytes=result.get("peak_memory_bytes"),
                                 device_info=self._info(threads), log=log[-4000:])
            log = _run_child(["edgevit.profiling.tflite_ops", f"--model_path={artifact}",
                              f"--num_executions={warmup + runs}", f"--warmup={warmup}",
                              f"--cpu_threads={threads}"], str(artifact), self.timeout)
            result = parse_result_line(log) or {}
            return DeviceRun(op_profile=result.get("ops"), times_ms=result.get("times_ms", []),
                             load_ms=result.get("load_ms"), peak_memory_bytes=result.get("peak_memory_bytes"),
                             device_info=self._info(threads), log=log[-4000:])

    @staticmethod
    def _info(threads: int) -> dict:
        from ...devices.profile import _host_facts

        return {**_host_facts(), "threads": threads, "os": f"{platform.system()} {platform.release()}"}

    def describe(self) -> dict:
        return {"via": self.name, "host": platform.node(), "machine": platform.machine()}
