"""The backend contract: lower a model to an artifact, run an artifact, say what it contains.

A backend is one small class registered by name; ExecuTorch and LiteRT implement it, and a third
runtime (ONNX Runtime, Core ML) is one more module, not edits across the code base.
"""
from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..errors import UnknownNameError

__all__ = ["Backend", "LoweredArtifact", "OpSummary", "Runner", "register_backend", "get_backend",
           "list_backends"]

Runner = Callable[[torch.Tensor], torch.Tensor]


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


class Backend(abc.ABC):
    """One runtime target. Subclasses set the class attributes and implement three methods."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    takes_recipe: ClassVar[bool] = False   # int8 follows a QuantRecipe (observer, ViT steps, fp32 layers)

    @abc.abstractmethod
    def lower(self, model: nn.Module, example: torch.Tensor, precision: str,
              calibration: torch.Tensor | None, progress: "StageProgress", recipe=None) -> LoweredArtifact:
        """Quantize (if asked) and lower ``model`` (deploy form, eval) at the static shape of ``example``.

        ``recipe`` (:class:`edgevit.quantization.QuantRecipe`) is the static int8 recipe; only backends
        with ``takes_recipe`` use it (the pipeline refuses a non-default one for the others)."""

    @abc.abstractmethod
    def load(self, artifact: bytes | Path, threads: int = 1) -> Runner:
        """A callable that runs the artifact on this machine's runtime."""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Tool versions recorded in manifests."""


class StageProgress(abc.ABC):
    """How a backend reports long steps; the CLI shows them with rich, tests pass a silent one."""

    @abc.abstractmethod
    def stage(self, description: str, total: int | None = None):
        """Context manager yielding ``advance(n)``; ``total`` gives a bar, None a spinner."""


_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    _BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise UnknownNameError("backend", name, _BACKENDS)
    return _BACKENDS[name]()


def list_backends() -> list[str]:
    return sorted(_BACKENDS)
