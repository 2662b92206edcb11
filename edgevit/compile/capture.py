"""torch.export with errors a user can act on: which op failed, in which submodule, at which line."""
from __future__ import annotations

import contextlib
import io
import traceback

import torch
from torch import nn

from ..errors import ExportError

__all__ = ["export_static"]


def _blame(model: nn.Module, exc: BaseException) -> tuple[str | None, str | None]:
    """The innermost submodule of ``model`` (and user source line) on the failing call stack."""
    paths = {id(m): name or "(root)" for name, m in model.named_modules()}
    module_path = location = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in paths and frame.f_code.co_name == "forward":
            module_path = f"{paths[id(owner)]} ({type(owner).__name__})"
            location = f"{frame.f_code.co_filename}:{lineno}"
    return module_path, location


def export_static(model: nn.Module, example: torch.Tensor, name: str) -> torch.export.ExportedProgram:
    try:
        # On failure torch.export prints the partial graph to sys.stderr; the message below says more.
        with contextlib.redirect_stderr(io.StringIO()):
            return torch.export.export(model, (example,))
    except Exception as e:  # noqa: BLE001 - torch.export raises many types; all mean "cannot capture"
        module_path, location = _blame(model, e)
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        where = f" in module {module_path} at {location}" if module_path else ""
        raise ExportError(f"torch.export cannot capture {name} at a static shape{where}: "
                          f"{type(e).__name__}: {first}. Replace data-dependent Python control flow, "
                          ".item()/.tolist() and non-torch (numpy) calls in forward with tensor ops.") from None
