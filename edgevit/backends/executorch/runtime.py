"""Running .pte programs with the ExecuTorch runtime on this machine."""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import tempfile
from pathlib import Path

import torch

from ...errors import EdgevitError

__all__ = ["load_program", "capture_native_stderr"]


@contextlib.contextmanager
def capture_native_stderr():
    """Collect what C++ code writes to fd 2 (cpuinfo probing, XNNPACK's reasons for refusing a graph).

    Yields a list that receives the captured lines when the block exits; they are shown only when they
    explain a failure.
    """
    lines: list[str] = []
    # The pybindings send the runtime's log to Python's sys.stderr when it is not fd 2 (a test runner's
    # capture, a notebook), and to fd 2 otherwise: catch both.
    python_side = io.StringIO()
    try:
        saved = os.dup(2)
    except OSError:
        saved = None
    with tempfile.TemporaryFile() as sink, contextlib.redirect_stderr(python_side):
        if saved is not None:
            os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            if saved is not None:
                _flush_c_stdio()  # C++ logs may sit in a stdio buffer; flush them into the sink
                os.dup2(saved, 2)
                os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())
            lines.extend(python_side.getvalue().splitlines())


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def _reasons(lines: list[str]) -> str:
    """The log lines that say why a method failed to initialise (not the cpuinfo chatter)."""
    keep = [line for line in lines if "fail" in line.lower() and "cpuinfo" not in line]
    return "; ".join(keep[:3])


def load_program(artifact: bytes | Path, threads: int = 1):
    """Load a .pte (bytes or path) and return a ``Tensor -> Tensor`` callable for its forward method."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime, Verification

    data = Path(artifact).read_bytes() if isinstance(artifact, (str, Path)) else artifact
    name = artifact if isinstance(artifact, (str, Path)) else "the lowered program"
    error = None
    with capture_native_stderr() as native_log:
        runtime = Runtime.get()
        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool; the default is all cores
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
