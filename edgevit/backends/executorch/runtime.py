"""Running .pte programs with the ExecuTorch runtime on this machine."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ...errors import EdgevitError

__all__ = ["load_program", "quiet_native_stderr"]


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence C++ log lines (cpuinfo probing) that the runtime prints to fd 2 while it starts."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def load_program(artifact: bytes | Path, threads: int = 1):
    """Load a .pte (bytes or path) and return a ``Tensor -> Tensor`` callable for its forward method."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime, Verification

    data = Path(artifact).read_bytes() if isinstance(artifact, (str, Path)) else artifact
    with quiet_native_stderr():
        runtime = Runtime.get()
        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool; the default is all cores
        try:
            program = runtime.load_program(data, verification=Verification.Minimal)
            method = program.load_method("forward")
        except Exception as e:  # noqa: BLE001 - the runtime raises plain RuntimeError for bad programs
            name = artifact if isinstance(artifact, (str, Path)) else "program"
            raise EdgevitError(f"ExecuTorch cannot load {name}: {e}. Is the .pte file corrupt or from "
                               "an incompatible ExecuTorch version?") from None

    def run(x: torch.Tensor) -> torch.Tensor:
        return method.execute([x.contiguous()])[0]

    run.method = method  # for profilers that want the raw method
    return run
