"""The backend contract: everything edgevit does that depends on the runtime, behind one class.

A backend is one folder under ``edgevit/backends/`` whose ``backend.py`` defines a :class:`Backend`
subclass decorated with :func:`register_backend`; ``edgevit.backends`` imports every such folder, so a new
runtime is that folder plus its name in a device profile's ``compile.backends``. Backends that live
elsewhere (a plugin, a test) are imported from the modules named in ``$EDGEVIT_BACKENDS``
(comma-separated), which child processes inherit.

What a backend answers, in data-flow order:

- ``lower``: quantize (if asked) and lower a deploy-form model to artifact bytes (+ sidecar files);
- ``load``: a callable that runs an artifact here (verification, bench, eval);
- ``profile_here`` / ``parse_profile``: run an artifact with the runtime's profiler on, in a fresh
  process, and turn what comes back (from here, a phone or a board) into per-operator rows;
- ``native_runner``: the program a phone runs for ``--via adb`` (None: not supported);
- ``wire_format``: the artifact format code of docs/serial-protocol.md (None: not sent over serial);
- ``cost_replay``: the operator-level replay of its lowering that ``edgevit estimate`` prices (None: no
  cost model);
- ``quantizer``: the PT2E quantizer that the int8 recipe annotates with (``takes_recipe`` backends).
"""
from __future__ import annotations

import abc
import importlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import EdgevitError, UnknownNameError
from ..progress import StageProgress

if TYPE_CHECKING:  # the contract imports no runtime: `edgevit devices` lists backends without loading torch
    import torch
    from torch import nn

    from .cost import CostReplay

__all__ = ["Backend", "DeviceRun", "LoweredArtifact", "NativeRunner", "OpSummary", "ParsedProfile", "Runner",
           "StageProgress", "get_backend", "list_backends", "register_backend",
           "PLUGIN_ENV"]

Runner = Callable[[Any], Any]  # torch.Tensor -> torch.Tensor
PLUGIN_ENV = "EDGEVIT_BACKENDS"


@dataclass
class OpSummary:
    """What the delegate took and what falls back to the runtime's portable kernels."""

    delegated: Counter = field(default_factory=Counter)      # op name -> count inside delegate blobs
    non_delegated: Counter = field(default_factory=Counter)  # op name -> count run outside
    delegate_calls: int = 0

    def as_dict(self) -> dict:
        return {"delegate_calls": self.delegate_calls,
                "delegated_ops": sum(self.delegated.values()),
                "non_delegated_ops": sum(self.non_delegated.values()),
                "delegated": dict(sorted(self.delegated.items())),
                "non_delegated": dict(sorted(self.non_delegated.items()))}


@dataclass
class LoweredArtifact:
    """A serialized program plus what the backend learned while lowering it."""

    data: bytes
    suffix: str
    ops: OpSummary
    details: dict = field(default_factory=dict)  # backend-specific manifest fields
    sidecars: dict[str, bytes] = field(default_factory=dict)  # files written next to it (etrecord.bin)


@dataclass
class DeviceRun:
    """What one profiling session brings back from a device, before any parsing (the backend parses it)."""

    etdump: bytes | None = None                     # ExecuTorch: the runner's ETDump
    op_profile: list[dict] | None = None            # runtimes that time operators themselves: per-op rows
    times_ms: list[float] = field(default_factory=list)  # wall-clock per timed execution, if the runner says
    load_ms: float | None = None                    # program load + method init
    peak_memory_bytes: int | None = None            # where the runtime / OS reports it
    device_info: dict = field(default_factory=dict)  # what the device says about itself
    log: str = ""                                   # the runner's output, kept for the report


@dataclass
class ParsedProfile:
    """A :class:`DeviceRun` read by its backend: the same shape for every runtime and every device."""

    times_ms: list[float]          # per timed execution
    load_ms: float | None
    rows: list[dict]               # per operator: name, op_type, delegate, module, module_type, ms (median)
    extra: dict = field(default_factory=dict)   # backend-specific report fields (timing source, mapping, ...)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NativeRunner:
    """The program a phone runs to profile an artifact (ExecuTorch: ``executor_runner``), as ``--via adb``
    drives it: its command line, the profile file it writes, and what its failures mean."""

    name: str                        # "executor_runner"
    default_path: str                # on the device, when --runner is not given
    result_suffix: str               # the profile it writes next to the artifact (".etdump")
    build_doc: str                   # where to read how to build it
    command: Callable[[str, str, str, int, int], list[str]]  # (runner, artifact, result, executions, threads)
    explain_failure: Callable[[int, str, str, dict], str | None]  # (exit code, output, runner, device info)
    missing_result: Callable[[str], str]                     # the message when no profile file was written


class Backend(abc.ABC):
    """One runtime target. Subclasses set the class attributes and implement ``lower``, ``load``,
    ``versions``; profiling and estimation are optional (the defaults say clearly that they are missing)."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    takes_recipe: ClassVar[bool] = False     # int8 follows a QuantRecipe (observer, ViT steps, fp32 layers)
    runtime_packages: ClassVar[tuple[str, ...]] = ()  # what must be installed to run an artifact here
    wire_format: ClassVar[int | None] = None          # docs/serial-protocol.md artifact format code
    takes_device: ClassVar[bool] = False     # lower(..., device=profile): sizes the artifact against the board
    native_runner: ClassVar[NativeRunner | None] = None

    # -- compile --------------------------------------------------------------------------------------
    @abc.abstractmethod
    def lower(self, model: nn.Module, example: torch.Tensor, precision: str,
              calibration: torch.Tensor | None, progress: StageProgress, recipe=None) -> LoweredArtifact:
        """Quantize (if asked) and lower ``model`` (deploy form, eval) at the static shape of ``example``.

        ``recipe`` (:class:`edgevit.quantization.QuantRecipe`) is the static int8 recipe; only backends
        with ``takes_recipe`` use it (the pipeline refuses a non-default one for the others)."""

    @abc.abstractmethod
    def load(self, artifact: bytes | Path, threads: int = 1) -> Runner:
        """A callable that runs the artifact on this machine's runtime."""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Tool versions recorded in manifests and profiles."""

    def quantizer(self, recipe=None):
        """The PT2E quantizer the int8 recipe annotates (``takes_recipe`` backends only)."""
        raise EdgevitError(f"Backend '{self.name}' does not quantize through a PT2E recipe.")

    # -- profile --------------------------------------------------------------------------------------
    def profile_here(self, artifact: Path, *, runs: int, warmup: int, threads: int,
                     timeout: float = 900.0) -> DeviceRun:
        """Run ``artifact`` ``warmup + runs`` times on this machine with the runtime's profiler on."""
        raise EdgevitError(f"Backend '{self.name}' has no profiler; `edgevit profile` cannot run its artifacts.")

    def parse_profile(self, run: DeviceRun, artifact: Path, warmup: int) -> ParsedProfile:
        """Turn what a device brought back into per-operator rows (the report is the same for every backend)."""
        raise EdgevitError(f"Backend '{self.name}' has no profiler; `edgevit profile` cannot read its runs.")

    # -- estimate -------------------------------------------------------------------------------------
    def cost_replay(self) -> CostReplay | None:
        """The replay of this backend's lowering that ``edgevit estimate`` prices; None: no cost model."""
        return None

    # -- availability ---------------------------------------------------------------------------------
    def available(self) -> bool:
        """Whether this machine can run the backend's artifacts (its runtime packages are installed)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            for package in self.runtime_packages:
                version(package)
        except PackageNotFoundError:
            return False
        return True


_BACKENDS: dict[str, type[Backend]] = {}
_PLUGINS: set[str] = set()  # modules from $EDGEVIT_BACKENDS already imported


def register_backend(cls: type[Backend]) -> type[Backend]:
    _BACKENDS[cls.name] = cls
    return cls


def load_plugins() -> None:
    """Import the backend modules named in ``$EDGEVIT_BACKENDS`` that are not imported yet."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        if module in _PLUGINS:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise EdgevitError(f"${PLUGIN_ENV} names backend module '{module}', which cannot be imported "
                               f"({e}). Fix the name (a module on the Python path) or unset {PLUGIN_ENV}.") from None
        _PLUGINS.add(module)


def get_backend(name: str) -> Backend:
    load_plugins()
    if name not in _BACKENDS:
        raise UnknownNameError("backend", name, _BACKENDS)
    return _BACKENDS[name]()


def list_backends() -> list[str]:
    load_plugins()
    return sorted(_BACKENDS)
