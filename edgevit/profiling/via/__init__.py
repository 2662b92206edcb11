"""Where a profile runs: this machine, a phone over adb, or a board over a serial line.

A target puts the artifact on the device over a link (``edgevit.links``), runs it there with the runtime's
own profiler on, and brings back the raw results (:class:`~edgevit.backends.DeviceRun`). What to run and how
to read what comes back is the backend's (``Backend.profile_here``, ``native_runner``, ``parse_profile``);
tables, charts and storage are the same for every target (``edgevit.profiling.profile``), so a .pte
profiled over adb reads exactly like one profiled here. Each target is one module of this package.
"""
from __future__ import annotations

import abc
import importlib
import pkgutil
from pathlib import Path
from typing import ClassVar

from ...backends import Backend, DeviceRun
from ...errors import UnknownNameError

__all__ = ["DeviceRun", "Target", "register_target", "get_target_class", "list_targets"]


class Target(abc.ABC):
    """One way to reach a device. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def run(self, artifact: Path, backend: Backend, *, runs: int, warmup: int, threads: int,
            progress) -> DeviceRun:
        """Run ``artifact`` (of ``backend``) ``warmup + runs`` times on the device with profiling on."""

    def identify(self) -> dict:
        """What the device says it is (``profile`` and/or ``model``), asked before anything is uploaded so an
        artifact built for another device is refused without a wasted run. Empty: it does not say."""
        return {}

    def describe(self) -> dict:
        """The device and link as recorded in the profile JSON (serial id, port, model, ...)."""
        return {"via": self.name}


_TARGETS: dict[str, type[Target]] = {}


def register_target(cls: type[Target]) -> type[Target]:
    _TARGETS[cls.name] = cls
    return cls


def _load_targets() -> None:
    """Import every target module of this package (each registers itself)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def get_target_class(name: str) -> type[Target]:
    _load_targets()
    if name not in _TARGETS:
        raise UnknownNameError("--via target", name, _TARGETS)
    return _TARGETS[name]


def list_targets() -> list[str]:
    _load_targets()
    return sorted(_TARGETS)
