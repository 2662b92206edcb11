"""How long steps report progress: one protocol for every layer, and the silent implementation.

The CLI draws stages with rich (``cli/_ui.py``); libraries, tests and device-side code pass
:class:`SilentProgress`. This module imports nothing of edgevit, so any layer can use it.
"""
from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator

__all__ = ["StageProgress", "SilentProgress"]


class StageProgress(abc.ABC):
    """How a long step reports itself; the CLI shows it with rich, tests pass a silent one."""

    @abc.abstractmethod
    def stage(self, description: str, total: int | None = None) -> contextlib.AbstractContextManager[
            Callable[[int], None]]:
        """Context manager yielding ``advance(n)``; ``total`` gives a bar, None a spinner."""


class SilentProgress(StageProgress):
    """Stages run, nothing is drawn (library use, tests, the serial agent)."""

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        yield lambda n=1: None
