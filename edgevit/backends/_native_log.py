"""Native (C/C++) log capture shared by the runtime backends."""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import tempfile

__all__ = ["capture_native_stderr"]


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
