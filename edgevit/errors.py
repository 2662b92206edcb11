"""User-facing errors.

Anything a user can cause (a wrong name, a bad file, a model that does not fit) raises a subclass of
:class:`EdgevitError`. The CLI prints its message as one paragraph and exits with code 2; it never shows a
traceback for these. Programming errors stay ordinary exceptions so that they do show one.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["EdgevitError", "UnknownNameError", "CheckpointError", "ExportError", "DoesNotFitError",
           "VerificationError", "close_names"]


class EdgevitError(Exception):
    """A mistake in the user's input or environment; message is shown as is, exit code 2."""

    exit_code = 2


class UnknownNameError(EdgevitError):
    """A model, device, backend or precision name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], plural: str | None = None):
        known = sorted(known)
        close = close_names(name, known)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(f"Unknown {kind} '{name}'.{hint} Known {plural or kind + 's'}: {', '.join(known)}.")
        self.name, self.close = name, close


class CheckpointError(EdgevitError):
    """A weights file that is missing, unreadable, or does not match the architecture."""


class ExportError(EdgevitError):
    """A model that torch.export (or a backend) cannot take."""


class DoesNotFitError(EdgevitError):
    """A model whose memory need exceeds the device budget."""


class VerificationError(EdgevitError):
    """A lowered artifact whose outputs are too far from the fp32 eager model."""


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Names in ``known`` that look like ``name`` (typos, missing suffixes)."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    # "efficientformer" should suggest every efficientformer_* even if the ratio is low.
    prefixed = [k for k in known if k.startswith(name) and k not in close]
    return (close + prefixed)[:max(n, len(close))]
