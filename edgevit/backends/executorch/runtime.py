"""Running .pte programs with the ExecuTorch runtime on this machine."""
from __future__ import annotations

from pathlib import Path

import torch

from ...errors import EdgevitError
from .._native_log import capture_native_stderr

__all__ = ["load_program"]


def _reasons(lines: list[str]) -> str:
    """The log lines that say why a method failed to initialise (not the cpuinfo chatter)."""
    keep = [line for line in lines if "fail" in line.lower() and "cpuinfo" not in line]
    return "; ".join(keep[:3])


_pool_threads: int | None = None  # the size edgevit last gave the runtime's thread pool (None: its default)


def _use_threads(portable_lib, threads: int) -> None:
    """Size XNNPACK's pool. Resetting replaces the pool, and a method loaded earlier keeps a pointer to the
    one it was given (XNNCompiler takes the process-wide pool at load), so reset only when the size changes:
    programs loaded at the same thread count share one live pool."""
    global _pool_threads
    if _pool_threads != threads:
        portable_lib._unsafe_reset_threadpool(threads)  # the default is all cores
        _pool_threads = threads


def load_program(artifact: bytes | Path, threads: int = 1):
    """Load a .pte (bytes or path) and return a ``Tensor -> Tensor`` callable for its forward method."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime, Verification

    data = Path(artifact).read_bytes() if isinstance(artifact, (str, Path)) else artifact
    name = artifact if isinstance(artifact, (str, Path)) else "the lowered program"
    error = None
    with capture_native_stderr() as native_log:
        runtime = Runtime.get()
        _use_threads(portable_lib, threads)
        try:
            program = runtime.load_program(data, verification=Verification.Minimal)
        except Exception as e:  # noqa: BLE001 - the runtime raises plain RuntimeError for bad programs
            error = f"ExecuTorch cannot load {name}: {e}. Is the .pte file corrupt or from another ExecuTorch version?"
        else:
            try:
                method = program.load_method("forward")
            except Exception as e:  # noqa: BLE001
                error = f"ExecuTorch loaded {name} but could not initialise its forward method ({e})"
    if error:
        reasons = _reasons(native_log)
        raise EdgevitError(error + (f": {reasons}." if reasons else ".") +
                           (" The delegate refused a lowered op; try --precision fp32/fp16 or another "
                            "input shape." if "XNN" in reasons else ""))

    def run(x: torch.Tensor) -> torch.Tensor:
        return method.execute([x.contiguous()])[0]

    # The method points into the program, which points into ``data`` without owning it: all three must
    # live as long as the runner, or execute() reads freed memory.
    run.method, run.program, run.data = method, program, data
    return run
