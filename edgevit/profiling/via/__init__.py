"""Where a profile runs: this machine, a phone over adb, or a board over a serial line.

A target puts the artifact on the device, runs it there with the runtime's own profiler on, and brings
back the raw results (:class:`DeviceRun`). Parsing, tables, charts and storage are the same for every
target (``edgevit.profiling.profile``), so a .pte profiled over adb reads exactly like one profiled here.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ...errors import UnknownNameError

__all__ = ["DeviceRun", "Target", "register_target", "get_target_class", "list_targets"]


@dataclass
class DeviceRun:
    """What one profiling session brings back from the device, before any parsing."""

    etdump: bytes | None = None                     # .pte: the runner's ETDump (per-op + per-execution events)
    op_profile: list[dict] | None = None            # .tflite: per-op rows from LiteRT's profiler
    times_ms: list[float] = field(default_factory=list)  # wall-clock per timed execution, if the runner says
    load_ms: float | None = None                    # program load + method init
    peak_memory_bytes: int | None = None            # where the runtime / OS reports it
    device_info: dict = field(default_factory=dict)  # what the device says about itself
    log: str = ""                                   # the runner's output, kept for the report


class Target(abc.ABC):
    """One way to reach a device. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def run(self, artifact: Path, *, runs: int, warmup: int, threads: int, progress) -> DeviceRun:
        """Run ``artifact`` (.pte or .tflite) ``warmup + runs`` times on the device with profiling on."""

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


def get_target_class(name: str) -> type[Target]:
    if name not in _TARGETS:
        raise UnknownNameError("--via target", name, _TARGETS)
    return _TARGETS[name]


def list_targets() -> list[str]:
    return sorted(_TARGETS)
